package api

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	netmail "net/mail"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-message/mail"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/internal/usertext"
	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/store"
)

type sendRequest struct {
	To        []string `json:"to"`
	Cc        []string `json:"cc"`
	Subject   string   `json:"subject"`
	Text      string   `json:"text"`
	HTML      string   `json:"html"`
	InReplyTo string   `json:"in_reply_to"`
	Encrypt   bool     `json:"encrypt"`
}

type sendResponse struct {
	MessageID string `json:"message_id"` // RFC 5322 Message-ID
	Encrypted bool   `json:"encrypted"`
	// Stored is false when the relay accepted the message but filing the
	// sent copy failed: the message left, do not send it again.
	Stored  bool            `json:"stored"`
	Message *messageSummary `json:"message,omitempty"`
}

const (
	maxRecipients = 100
	maxSubject    = 998
)

// parseRecipients checks and normalises "Name <addr>" or bare addresses.
func parseRecipients(field string, in []string) ([]*mail.Address, error) {
	out := make([]*mail.Address, 0, len(in))
	for i, s := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		a, err := netmail.ParseAddress(s)
		if err != nil {
			return nil, badRequest(f, "not a valid address")
		}
		addr, err := store.NormalizeAddress(a.Address, false)
		if err != nil {
			return nil, badRequest(f, "not a valid address")
		}
		if err := usertext.Check(a.Name); err != nil {
			return nil, badRequest(f, "the name %v", err)
		}
		out = append(out, &mail.Address{Name: a.Name, Address: addr})
	}
	return out, nil
}

func (s *Server) sendMessage(c echo.Context) error {
	var req sendRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	to, err := parseRecipients("to", req.To)
	if err != nil {
		return err
	}
	cc, err := parseRecipients("cc", req.Cc)
	if err != nil {
		return err
	}
	if err := usertext.Check(req.Subject); err != nil {
		return badRequest("subject", "subject %v", err)
	}
	rcpts := append(slices.Clone(to), cc...)
	switch {
	case len(rcpts) == 0:
		return badRequest("to", "at least one recipient is required")
	case len(rcpts) > maxRecipients:
		return badRequest("to", "at most %d recipients", maxRecipients)
	case len(req.Subject) > maxSubject:
		return badRequest("subject", "subject must be at most %d bytes", maxSubject)
	case !utf8.ValidString(req.Text):
		return badRequest("text", "text must be valid UTF-8")
	case !utf8.ValidString(req.HTML):
		return badRequest("html", "html must be valid UTF-8")
	case req.Text == "" && req.HTML == "":
		return badRequest("text", "the message needs a text or an html body")
	}

	ctx := c.Request().Context()
	uid := userID(c)
	u, err := s.st.GetUser(ctx, uid)
	if err != nil {
		return fmt.Errorf("send: get user: %w", err)
	}
	addrs, err := s.st.ListAddresses(ctx, uid)
	if err != nil {
		return fmt.Errorf("send: list addresses: %w", err)
	}
	if len(addrs) == 0 {
		return &Error{Status: http.StatusConflict, Code: "no_address", Message: "your account has no address to send from"}
	}
	from := &mail.Address{Name: u.DisplayName, Address: addrs[0].Address}

	var parent *store.Message
	if req.InReplyTo != "" {
		pid, err := uuid.Parse(req.InReplyTo)
		if err != nil {
			return badRequest("in_reply_to", "in_reply_to is not a valid id")
		}
		p, err := s.st.GetMessage(ctx, uid, pid)
		if errors.Is(err, store.ErrNotFound) {
			return badRequest("in_reply_to", "no such message")
		}
		if err != nil {
			return fmt.Errorf("send: get replied message: %w", err)
		}
		parent = &p
	}

	var recipientsKeys []*openpgp.Entity
	var signer *openpgp.Entity
	if req.Encrypt {
		var missing []string
		done := map[string]bool{}
		for _, r := range rcpts {
			if done[r.Address] {
				continue
			}
			done[r.Address] = true
			ct, err := s.st.FindContactByChannel(ctx, uid, "email", r.Address)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("send: find contact: %w", err)
			}
			e, kerr := encryptionEntity(ct.Keys, s.now())
			if err != nil || kerr != nil {
				missing = append(missing, r.Address)
				continue
			}
			recipientsKeys = append(recipientsKeys, e)
		}
		if len(missing) > 0 {
			return &Error{Status: http.StatusConflict, Code: "missing_keys",
				Message: "no usable encryption key for some recipients: import their keys or send unencrypted",
				Details: map[string]any{"recipients": missing}}
		}
		// Sign with the user's key when the server holds it (custody
		// "server", no passphrase): recipients then verify the sender end
		// to end (fact A2).
		if u.Setup.KeyCustody == "server" && u.Setup.PrivateKey != "" {
			signer = serverSigner(u.Setup.PrivateKey, s.now())
			if signer == nil {
				s.log.WarnContext(ctx, "server-held private key unusable for signing", "user", uid)
			}
		}
		// Encrypt to the sender too, so the sent copy stays readable to them.
		if u.Setup.PublicKey != "" {
			if el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(u.Setup.PublicKey)); err == nil && len(el) > 0 {
				if _, ok := el[0].EncryptionKey(s.now()); ok {
					recipientsKeys = append(recipientsKeys, el[0])
				}
			}
		}
	}

	if s.sender == nil {
		return &Error{Status: http.StatusServiceUnavailable, Code: "sending_disabled", Message: "sending is not configured on this server"}
	}

	d := message.Draft{
		From: message.Addr{Name: from.Name, Address: from.Address}, To: draftAddrs(to), Cc: draftAddrs(cc),
		Subject: req.Subject, Date: s.now(), Text: req.Text, HTML: req.HTML,
		Encrypt: req.Encrypt, EncryptTo: recipientsKeys, Signer: signer,
	}
	if parent != nil && parent.MessageID != "" {
		d.InReplyTo, d.References = parent.MessageID, parent.References
	}
	rawMsg, msgID, err := message.Compose(d)
	if err != nil {
		return fmt.Errorf("send: build message: %w", err)
	}

	// One RCPT per address, even when it is both in To and Cc.
	envelope := make([]string, 0, len(rcpts))
	for _, r := range rcpts {
		if !slices.Contains(envelope, r.Address) {
			envelope = append(envelope, r.Address)
		}
	}
	// A stolen token or a compromised client must not turn the account
	// into a spam cannon: recipients per user are a token bucket.
	sendKey := uid.String()
	if ok, wait := s.sendLimiter.allowN(sendKey, len(envelope), s.now()); !ok {
		return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
			Message: "too many recipients recently, try again later", RetryAfter: int(math.Ceil(wait.Seconds()))}
	}
	if err := s.sender.Send(ctx, from.Address, envelope, rawMsg); err != nil {
		s.sendLimiter.refundN(sendKey, len(envelope)) // nothing left
		var se *SubmissionError
		if errors.As(err, &se) {
			s.log.WarnContext(ctx, "submission refused", "user", uid, "code", se.Code, "reply", se.Message)
			return &Error{Status: http.StatusBadGateway, Code: "submission_refused", Message: se.Message,
				Details: map[string]any{"smtp_code": se.Code, "temporary": se.Temporary()}}
		}
		s.log.ErrorContext(ctx, "submission failed", "user", uid, "err", err)
		return &Error{Status: http.StatusBadGateway, Code: "relay_unavailable", Message: "the mail relay could not be reached, try again"}
	}

	resp := sendResponse{MessageID: msgID, Encrypted: req.Encrypt}
	if s.sent != nil {
		d, err := s.sent.StoreSent(ctx, uid, rawMsg, envelope)
		var m store.Message
		if err == nil {
			m, err = s.st.GetMessage(ctx, uid, d.MessageID)
		}
		if err != nil {
			// The relay has the message: answering an error would make the
			// client send it twice. Say it went, and that filing failed.
			s.log.ErrorContext(ctx, "storing sent message failed", "user", uid, "message_id", msgID, "err", err)
		} else {
			resp.Stored = true
			if sum, err := s.summary(c, s.newContactCache(uid), m); err == nil {
				resp.Message = &sum
			}
			if d.Created {
				s.hub.Publish(uid, Event{Type: "message.new", MessageID: m.ID, ConversationID: m.ConversationID, At: s.now().UTC()})
			}
		}
	}
	return c.JSON(http.StatusCreated, resp)
}

// serverSigner returns the user's server-held private key when it can sign
// now (not passphrase-protected, not expired or revoked), else nil.
func serverSigner(armored string, now time.Time) *openpgp.Entity {
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(armored))
	if err != nil || len(el) == 0 {
		return nil
	}
	e := el[0]
	k, ok := e.SigningKey(now)
	if !ok || k.PrivateKey == nil || k.PrivateKey.Encrypted {
		return nil
	}
	return e
}

func draftAddrs(as []*mail.Address) []message.Addr {
	out := make([]message.Addr, len(as))
	for i, a := range as {
		out[i] = message.Addr{Name: a.Name, Address: a.Address}
	}
	return out
}
