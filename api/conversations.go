package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/store"
)

// conversationView is a conversation as clients see it.
type conversationView struct {
	ID            uuid.UUID         `json:"id"`
	Subject       string            `json:"subject"`
	Participants  []participantView `json:"participants"`
	Protocols     []string          `json:"protocols"`
	CreatedAt     time.Time         `json:"created_at"`
	LastActivity  time.Time         `json:"last_activity"`
	LastMessageID uuid.UUID         `json:"last_message_id"`
	Excerpt       string            `json:"excerpt"`
	MessageCount  int               `json:"message_count"`
	UnreadCount   int               `json:"unread_count"`
	PI            piView            `json:"pi"`
}

type participantView struct {
	Role        string     `json:"role,omitempty"`
	Protocol    string     `json:"protocol"`
	Address     string     `json:"address"`
	Name        string     `json:"name,omitempty"`
	ContactID   *uuid.UUID `json:"contact_id,omitempty"`
	ContactName string     `json:"contact_name,omitempty"`
}

// piWindow is how many recent messages a conversation's PI averages
// (PRIVACY-INDEX.md: no higher than the mean of its last 20 messages).
const piWindow = 20

// tagWindow is how many recent messages the tag filter looks at per
// conversation: tags live on messages, and the work per request is bounded.
const tagWindow = 100

// contactCache resolves contact IDs to names once per request, through the
// server's short-lived name cache (a contact renamed by ingest shows its new
// name within contactNameTTL; the API's own writes invalidate at once).
type contactCache struct {
	s   *Server
	uid uuid.UUID
	m   map[uuid.UUID]contactName
}

// contactNameTTL bounds how long a participant list may show an old name.
const contactNameTTL = 30 * time.Second

func (s *Server) newContactCache(uid uuid.UUID) *contactCache {
	return &contactCache{s: s, uid: uid, m: make(map[uuid.UUID]contactName)}
}

func (cc *contactCache) get(ctx context.Context, id uuid.UUID) (contactName, error) {
	if id == uuid.Nil {
		return contactName{}, nil
	}
	if n, ok := cc.m[id]; ok {
		return n, nil
	}
	now := cc.s.now()
	key := ownedID{cc.uid, id}
	n, ok := cc.s.names.get(key, now)
	if !ok {
		c, err := cc.s.st.GetContact(ctx, cc.uid, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return contactName{}, fmt.Errorf("get contact: %w", err)
		default:
			n = contactName{found: true, name: c.Name}
		}
		cc.s.names.put(key, n, now)
	}
	cc.m[id] = n
	return n, nil
}

func (cc *contactCache) participants(ctx context.Context, ps []store.Participant) ([]participantView, error) {
	out := make([]participantView, 0, len(ps))
	for _, p := range ps {
		v := participantView{Role: p.Role, Protocol: p.Protocol, Address: p.Address, Name: p.Name}
		if p.ContactID != uuid.Nil {
			n, err := cc.get(ctx, p.ContactID)
			if err != nil {
				return nil, err
			}
			if n.found {
				id := p.ContactID
				v.ContactID, v.ContactName = &id, n.name
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// convFilter is the list filters of GET /conversations.
type convFilter struct {
	unread   bool
	band     string
	protocol string
	tag      string
}

func (f convFilter) any() bool { return f.unread || f.band != "" || f.protocol != "" || f.tag != "" }

// needsMessages: these filters can only be decided from the messages.
func (f convFilter) needsMessages() bool { return f.band != "" || f.tag != "" }

func parseConvFilter(c echo.Context) (convFilter, error) {
	var f convFilter
	switch v := c.QueryParam("unread"); v {
	case "":
	case "true", "1":
		f.unread = true
	case "false", "0":
	default:
		return f, badRequest("unread", "unread must be true or false")
	}
	if v := c.QueryParam("band"); v != "" {
		f.band = strings.ToUpper(v)
		if len(f.band) != 1 || f.band[0] < 'A' || f.band[0] > 'E' {
			return f, badRequest("band", "band must be one of A, B, C, D, E")
		}
	}
	if v := c.QueryParam("protocol"); v != "" {
		f.protocol = strings.ToLower(v)
		if _, ok := protocols[f.protocol]; !ok {
			return f, badRequest("protocol", "unknown protocol %q", v)
		}
	}
	if v := c.QueryParam("tag"); v != "" {
		if err := validTag(v); err != nil {
			return f, badRequest("tag", "%v", err)
		}
		f.tag = v
	}
	return f, nil
}

// convLoader builds conversation views for one request, sharing its caches.
type convLoader struct {
	s   *Server
	uid uuid.UUID
	cc  *contactCache
}

func (s *Server) newConvLoader(uid uuid.UUID) *convLoader {
	return &convLoader{s: s, uid: uid, cc: s.newContactCache(uid)}
}

// recent returns the conversation's newest n messages.
func (l *convLoader) recent(ctx context.Context, conv store.Conversation, n int) ([]store.Message, error) {
	if conv.MessageCount == 0 {
		return nil, nil
	}
	msgs, _, err := l.s.st.ListMessages(ctx, l.uid, conv.ID, store.Page{Limit: n})
	if err != nil {
		return nil, fmt.Errorf("list messages of %s: %w", conv.ID, err)
	}
	return msgs, nil
}

// pi returns the conversation's PI, from the cache or from its recent
// messages (read when not given).
func (l *convLoader) pi(ctx context.Context, conv store.Conversation, recent []store.Message, loaded bool) (piView, error) {
	now := l.s.now()
	if pi, ok := l.s.piCache.get(conv, now); ok {
		return pi, nil
	}
	if !loaded {
		var err error
		if recent, err = l.recent(ctx, conv, piWindow); err != nil {
			return piView{}, err
		}
	}
	if len(recent) > piWindow {
		recent = recent[:piWindow]
	}
	pi := conversationPI(conv, recent, now)
	l.s.piCache.put(conv, pi, now)
	return pi, nil
}

func (l *convLoader) view(ctx context.Context, conv store.Conversation, recent []store.Message, loaded bool) (conversationView, error) {
	ps, err := l.cc.participants(ctx, conv.Participants)
	if err != nil {
		return conversationView{}, err
	}
	pi, err := l.pi(ctx, conv, recent, loaded)
	if err != nil {
		return conversationView{}, err
	}
	return conversationView{
		ID: conv.ID, Subject: conv.Subject, Participants: ps, Protocols: nonNil(conv.Protocols),
		CreatedAt: conv.CreatedAt, LastActivity: conv.LastActivity, LastMessageID: conv.LastMessageID,
		Excerpt: conv.Excerpt, MessageCount: conv.MessageCount, UnreadCount: conv.UnreadCount,
		PI: pi,
	}, nil
}

func (l *convLoader) cachedPI(conv store.Conversation) bool {
	_, ok := l.s.piCache.get(conv, l.s.now())
	return ok
}

// match applies the filters; recent is loaded only when a filter needs it.
func (l *convLoader) match(ctx context.Context, f convFilter, conv store.Conversation, recent []store.Message, loaded bool) (bool, error) {
	if f.unread && conv.UnreadCount == 0 {
		return false, nil
	}
	if f.protocol != "" && !slices.Contains(conv.Protocols, f.protocol) {
		return false, nil
	}
	if f.tag != "" && !slices.ContainsFunc(recent, func(m store.Message) bool { return slices.Contains(m.Flags.Tags, f.tag) }) {
		return false, nil
	}
	if f.band != "" {
		pi, err := l.pi(ctx, conv, recent, loaded)
		if err != nil || pi.Band != f.band {
			return false, err
		}
	}
	return true, nil
}

func (s *Server) listConversations(c echo.Context) error {
	ctx := c.Request().Context()
	uid := userID(c)
	limit, cur, err := pageParams(c)
	if err != nil {
		return err
	}
	f, err := parseConvFilter(c)
	if err != nil {
		return err
	}
	size := limit
	if f.any() {
		// Filtering rejects items: read bigger store pages.
		size = min(max(limit, 100), store.MaxLimit)
	}
	// A cursor inside a store page must re-read that page with the size it
	// was read with; a cursor at a page boundary reads at this request's size.
	if cur.Offset == 0 {
		cur.Size = size
	}
	window := piWindow
	if f.tag != "" {
		window = tagWindow
	}
	// Work budget: each conversation examined costs 1, each whose messages
	// had to be read costs 10 more.
	budget := s.cfg.filterScanLimit
	l := s.newConvLoader(uid)
	out := page[conversationView]{Items: []conversationView{}}
	for {
		convs, next, err := s.st.ListConversations(ctx, uid, store.Page{Limit: cur.Size, Cursor: cur.Store})
		if err != nil {
			return cursorErr(err, cur.Store)
		}
		if cur.Offset > len(convs) {
			cur.Offset = len(convs)
		}
		for i := cur.Offset; i < len(convs); i++ {
			conv := convs[i]
			budget--
			if f.needsMessages() {
				budget -= 10
			}
			// Cheap filters first, so rejected conversations cost no read;
			// messages are read only for the filters that need them, and
			// for the PI when it is not cached.
			keep, err := true, error(nil)
			if f.any() && !f.needsMessages() {
				keep, err = l.match(ctx, f, conv, nil, false)
			}
			var recent []store.Message
			loaded := false
			if keep && f.needsMessages() {
				if f.tag != "" || !l.cachedPI(conv) {
					if recent, err = l.recent(ctx, conv, window); err != nil {
						return err
					}
					loaded = true
				}
				keep, err = l.match(ctx, f, conv, recent, loaded)
			}
			if err != nil {
				return err
			}
			if !keep {
				if budget <= 0 {
					out.NextCursor = resumeAfter(cur, convs, i, next)
					return c.JSON(http.StatusOK, out)
				}
				continue
			}
			v, err := l.view(ctx, conv, recent, loaded)
			if err != nil {
				return err
			}
			out.Items = append(out.Items, v)
			if len(out.Items) == limit || budget <= 0 {
				out.NextCursor = resumeAfter(cur, convs, i, next)
				return c.JSON(http.StatusOK, out)
			}
		}
		if next == "" {
			return c.JSON(http.StatusOK, out)
		}
		cur = cursor{Store: next, Size: size}
	}
}

// resumeAfter is the cursor of the item after convs[i].
func resumeAfter(cur cursor, convs []store.Conversation, i int, next string) string {
	if i+1 < len(convs) {
		return cursor{Store: cur.Store, Offset: i + 1, Size: cur.Size}.encode()
	}
	if next == "" {
		return ""
	}
	return cursor{Store: next, Size: cur.Size}.encode()
}

// cursorErr turns a store's refusal of a cursor we passed on into a 400.
func cursorErr(err error, storeCursor string) error {
	if storeCursor != "" && errors.Is(err, store.ErrInvalid) {
		return badRequest("cursor", "malformed cursor")
	}
	return err
}

func (s *Server) getConversation(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	uid := userID(c)
	conv, err := s.st.GetConversation(ctx, uid, id)
	if err != nil {
		return err
	}
	v, err := s.newConvLoader(uid).view(ctx, conv, nil, false)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) deleteConversation(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if err := s.st.DeleteConversation(c.Request().Context(), userID(c), id); err != nil {
		return err
	}
	return noContent(c)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
