package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	netmail "net/mail"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/internal/usertext"
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
	// maxReferences keeps References bounded in long threads (RFC 5322 asks
	// for the first and the most recent ones).
	maxReferences = 20
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

	var h mail.Header
	h.SetDate(s.now())
	h.SetAddressList("From", []*mail.Address{from})
	if len(to) > 0 {
		h.SetAddressList("To", to)
	}
	if len(cc) > 0 {
		h.SetAddressList("Cc", cc)
	}
	h.SetSubject(req.Subject)
	if err := h.GenerateMessageIDWithHostname(store.AddressDomain(from.Address)); err != nil {
		return fmt.Errorf("send: message id: %w", err)
	}
	if parent != nil && parent.MessageID != "" {
		h.SetMsgIDList("In-Reply-To", []string{parent.MessageID})
		refs := append(slices.Clone(parent.References), parent.MessageID)
		if len(refs) > maxReferences {
			refs = append(refs[:1], refs[len(refs)-maxReferences+1:]...)
		}
		h.SetMsgIDList("References", refs)
	}
	h.Set("MIME-Version", "1.0")
	msgID, _ := h.MessageID()

	var raw bytes.Buffer
	if req.Encrypt {
		err = writeEncrypted(&raw, h, req.Text, req.HTML, recipientsKeys, signer)
	} else {
		err = writeBody(&raw, h, req.Text, req.HTML)
	}
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
	if err := s.sender.Send(ctx, from.Address, envelope, raw.Bytes()); err != nil {
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
		d, err := s.sent.StoreSent(ctx, uid, raw.Bytes(), envelope)
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

// writeBody writes a header and a text body, with an HTML alternative when
// there is one.
func writeBody(w io.Writer, h mail.Header, text, html string) error {
	if html == "" {
		h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		bw, err := mail.CreateSingleInlineWriter(w, h)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(bw, text); err != nil {
			return err
		}
		return bw.Close()
	}
	iw, err := mail.CreateInlineWriter(w, h)
	if err != nil {
		return err
	}
	for _, p := range []struct{ typ, body string }{{"text/plain", text}, {"text/html", html}} {
		var ph mail.InlineHeader
		ph.SetContentType(p.typ, map[string]string{"charset": "utf-8"})
		pw, err := iw.CreatePart(ph)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(pw, p.body); err != nil {
			return err
		}
		if err := pw.Close(); err != nil {
			return err
		}
	}
	return iw.Close()
}

// writeEncrypted writes a PGP/MIME message (RFC 3156): the body entity is
// encrypted to keys and carried in multipart/encrypted.
func writeEncrypted(w io.Writer, h mail.Header, text, html string, keys []*openpgp.Entity, signer *openpgp.Entity) error {
	var inner bytes.Buffer
	if err := writeBody(&inner, mail.Header{}, text, html); err != nil {
		return err
	}
	var armored bytes.Buffer
	aw, err := armor.Encode(&armored, "PGP MESSAGE", nil)
	if err != nil {
		return err
	}
	pw, err := openpgp.Encrypt(aw, keys, signer, &openpgp.FileHints{IsBinary: true}, nil)
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if _, err := pw.Write(inner.Bytes()); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("armor: %w", err)
	}
	armored.WriteString("\r\n")

	h.SetContentType("multipart/encrypted", map[string]string{"protocol": "application/pgp-encrypted"})
	mw, err := message.CreateWriter(w, h.Header)
	if err != nil {
		return err
	}
	var ctl message.Header
	ctl.SetContentType("application/pgp-encrypted", nil)
	ctl.Set("Content-Description", "PGP/MIME version identification")
	var data message.Header
	data.SetContentType("application/octet-stream", map[string]string{"name": "encrypted.asc"})
	data.Set("Content-Description", "OpenPGP encrypted message")
	data.SetContentDisposition("inline", map[string]string{"filename": "encrypted.asc"})
	for _, p := range []struct {
		h    message.Header
		body []byte
	}{{ctl, []byte("Version: 1\r\n")}, {data, armored.Bytes()}} {
		part, err := mw.CreatePart(p.h)
		if err != nil {
			return err
		}
		if _, err := part.Write(p.body); err != nil {
			return err
		}
		if err := part.Close(); err != nil {
			return err
		}
	}
	return mw.Close()
}
