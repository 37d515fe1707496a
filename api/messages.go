package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/internal/usertext"
	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/store"
)

// messageSummary is a message in a list: no bodies.
type messageSummary struct {
	ID             uuid.UUID         `json:"id"`
	ConversationID uuid.UUID         `json:"conversation_id"`
	Protocol       string            `json:"protocol"`
	Inbound        bool              `json:"inbound"`
	Date           time.Time         `json:"date"`
	ReceivedAt     time.Time         `json:"received_at"`
	Subject        string            `json:"subject"`
	Participants   []participantView `json:"participants"`
	Excerpt        string            `json:"excerpt"`
	Flags          store.Flags       `json:"flags"`
	Attachments    int               `json:"attachment_count"`
	PI             storedPIView      `json:"pi"`
}

// messageView is one message in full.
type messageView struct {
	messageSummary
	MessageID           string           `json:"message_id"`
	InReplyTo           []string         `json:"in_reply_to"`
	References          []string         `json:"references"`
	Headers             []headerView     `json:"headers"`
	TextBody            string           `json:"text_body"`
	HTMLBody            string           `json:"html_body"`
	RemoteImagesBlocked int              `json:"remote_images_blocked"`
	AttachmentList      []attachmentView `json:"attachments"`
	Security            json.RawMessage  `json:"security"`
	RawSize             int64            `json:"raw_size"`
}

type headerView struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type attachmentView struct {
	store.Attachment
	URL string `json:"url"`
}

// storedPIView is the PI snapshot stored with a message; details is the
// model's explanation (facts, caps, advice) as the model wrote it.
type storedPIView struct {
	Version int             `json:"version"`
	Score   int             `json:"score"`
	Band    string          `json:"band"`
	Warning bool            `json:"warning"`
	Details json.RawMessage `json:"details,omitempty"`
}

func storedPI(p store.PI, details bool) storedPIView {
	v := storedPIView{Version: p.Version, Score: p.Score, Band: p.Band, Warning: p.Warning}
	if details && json.Valid(p.Details) {
		v.Details = p.Details
	}
	return v
}

func (s *Server) summary(c echo.Context, cc *contactCache, m store.Message) (messageSummary, error) {
	ps, err := cc.participants(c.Request().Context(), m.Participants)
	if err != nil {
		return messageSummary{}, err
	}
	flags := m.Flags
	flags.Tags = nonNil(flags.Tags)
	return messageSummary{
		ID: m.ID, ConversationID: m.ConversationID, Protocol: m.Protocol, Inbound: m.Inbound,
		Date: m.Date, ReceivedAt: m.ReceivedAt, Subject: m.Subject, Participants: ps,
		Excerpt: m.Excerpt, Flags: flags, Attachments: len(m.Attachments), PI: storedPI(m.PI, false),
	}, nil
}

func (s *Server) listMessages(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	limit, cur, err := pageParams(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	uid := userID(c)
	// An unknown or foreign conversation is a 404, not an empty list.
	if _, err := s.st.GetConversation(ctx, uid, id); err != nil {
		return err
	}
	if cur.Size == 0 || cur.Offset != 0 {
		// Message cursors never carry an offset: pages are not filtered.
		cur = cursor{Store: cur.Store, Size: limit}
	}
	msgs, next, err := s.st.ListMessages(ctx, uid, id, store.Page{Limit: limit, Cursor: cur.Store})
	if err != nil {
		return cursorErr(err, cur.Store)
	}
	cc := s.newContactCache(uid)
	out := page[messageSummary]{Items: make([]messageSummary, 0, len(msgs))}
	for _, m := range msgs {
		v, err := s.summary(c, cc, m)
		if err != nil {
			return err
		}
		out.Items = append(out.Items, v)
	}
	if next != "" {
		out.NextCursor = cursor{Store: next, Size: limit}.encode()
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) loadMessage(c echo.Context) (store.Message, error) {
	id, err := pathID(c, "id")
	if err != nil {
		return store.Message{}, err
	}
	return s.st.GetMessage(c.Request().Context(), userID(c), id)
}

func (s *Server) getMessage(c echo.Context) error {
	m, err := s.loadMessage(c)
	if err != nil {
		return err
	}
	sum, err := s.summary(c, s.newContactCache(userID(c)), m)
	if err != nil {
		return err
	}
	sum.PI = storedPI(m.PI, true)
	v := messageView{
		messageSummary: sum,
		MessageID:      m.MessageID,
		InReplyTo:      nonNil(m.InReplyTo),
		References:     nonNil(m.References),
		Headers:        []headerView{},
		AttachmentList: make([]attachmentView, 0, len(m.Attachments)),
		RawSize:        m.RawSize,
	}
	if json.Valid(m.Security) {
		v.Security = m.Security
	} else {
		v.Security = json.RawMessage("{}")
	}
	for _, a := range m.Attachments {
		v.AttachmentList = append(v.AttachmentList, attachmentView{Attachment: a,
			URL: fmt.Sprintf("%s/messages/%s/attachments/%s", Prefix, m.ID, a.PartPath)})
	}
	text, html := m.TextBody, m.HTMLBody
	if m.RawHash != "" {
		raw, err := s.st.GetBlob(c.Request().Context(), m.RawHash)
		if err != nil {
			return fmt.Errorf("get raw of %s: %w", m.ID, err)
		}
		if text == "" && html == "" {
			// Bodies are not stored (except on old records): one parse of
			// the raw message gives them, as it gave them to ingest.
			p := parseRaw(raw)
			text, html = p.TextBody, p.HTMLBody
			v.Headers = headersFrom(p.Header())
		} else {
			v.Headers = headersFrom(message.ReadHeader(raw))
		}
	}
	v.TextBody = text
	v.HTMLBody, v.RemoteImagesBlocked = sanitizeHTML(html)
	return c.JSON(http.StatusOK, v)
}

// parseRaw parses a stored raw message; a parser panic (a bug, which
// ingest survived by storing the message raw only) gives no bodies.
func parseRaw(raw []byte) (m *message.Message) {
	defer func() {
		if r := recover(); r != nil {
			m = &message.Message{Root: &message.Part{Header: message.ReadHeader(raw)}}
		}
	}()
	return message.Parse(raw, message.Options{})
}

// headersFrom returns the top-level header fields, in order, with encoded
// words decoded where they can be. A header that does not parse yields
// what was read before the problem.
func headersFrom(h message.Header) []headerView {
	out := []headerView{}
	for _, f := range h {
		v := message.DecodeWords(f.Value)
		if !utf8.ValidString(v) {
			v = strings.ToValidUTF8(v, "\uFFFD")
		}
		out = append(out, headerView{Name: f.Name, Value: v})
	}
	return out
}

// patchMessageRequest changes only the fields present.
type patchMessageRequest struct {
	Read    *bool     `json:"read"`
	Starred *bool     `json:"starred"`
	Tags    *[]string `json:"tags"`
}

const (
	maxTags   = 50
	maxTagLen = 64
)

func validTag(t string) error {
	switch {
	case strings.TrimSpace(t) == "":
		return fmt.Errorf("a tag cannot be empty")
	case len(t) > maxTagLen:
		return fmt.Errorf("a tag is at most %d bytes", maxTagLen)
	}
	if err := usertext.Check(t); err != nil {
		return fmt.Errorf("tag %v", err)
	}
	return nil
}

func (s *Server) patchMessage(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	var req patchMessageRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Tags != nil {
		if len(*req.Tags) > maxTags {
			return badRequest("tags", "at most %d tags", maxTags)
		}
		seen := map[string]bool{}
		tags := make([]string, 0, len(*req.Tags))
		for i, t := range *req.Tags {
			if err := validTag(t); err != nil {
				return badRequest("tags["+strconv.Itoa(i)+"]", "%v", err)
			}
			if !seen[t] {
				seen[t] = true
				tags = append(tags, t)
			}
		}
		req.Tags = &tags
	}
	ctx := c.Request().Context()
	uid := userID(c)
	m, err := s.st.GetMessage(ctx, uid, id)
	if err != nil {
		return err
	}
	f := m.Flags
	if req.Read != nil {
		f.Read = *req.Read
	}
	if req.Starred != nil {
		f.Starred = *req.Starred
	}
	if req.Tags != nil {
		f.Tags = *req.Tags
	}
	if err := s.st.SetFlags(ctx, uid, id, f); err != nil {
		return err
	}
	f.Tags = nonNil(f.Tags)
	return c.JSON(http.StatusOK, f)
}

func (s *Server) deleteMessage(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if err := s.st.DeleteMessage(c.Request().Context(), userID(c), id); err != nil {
		return err
	}
	return noContent(c)
}

func (s *Server) getRaw(c echo.Context) error {
	m, err := s.loadMessage(c)
	if err != nil {
		return err
	}
	raw, err := s.st.GetBlob(c.Request().Context(), m.RawHash)
	if err != nil {
		return fmt.Errorf("get raw of %s: %w", m.ID, err)
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentDisposition, attachmentDisposition(m.ID.String()+".eml"))
	// Opened directly, a browser must neither sniff the message as HTML nor
	// run or load anything from it.
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	return c.Blob(http.StatusOK, "message/rfc822", raw)
}
