package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/store"
)

// TestIsolation: Bob's token gets, on every one of Alice's resources,
// exactly the answer a nonexistent id gets, and changes nothing.
func TestIsolation(t *testing.T) {
	h := newHarness(t)
	d := h.deliver(h.alice, richMessage)
	ct := decode[contactView](t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token, map[string]any{
		"name": "Frank", "channels": []map[string]string{{"protocol": "email", "address": "frank@remote.example"}},
	}), http.StatusCreated)
	_, pub := newKey(t, "frank@remote.example")
	k := decode[keyView](t, h.do(http.MethodPost, "/api/v1/contacts/"+ct.ID.String()+"/keys", h.alice.Token, map[string]string{"armored": pub}), http.StatusCreated)

	conv, msg, contact := d.ConversationID.String(), d.MessageID.String(), ct.ID.String()
	missing := uuid.Must(uuid.NewV7()).String()
	type req struct {
		method, path string
		body         any
	}
	reqs := func(conv, msg, contact string) []req {
		return []req{
			{http.MethodGet, "/api/v1/conversations/" + conv, nil},
			{http.MethodGet, "/api/v1/conversations/" + conv + "/messages", nil},
			{http.MethodDelete, "/api/v1/conversations/" + conv, nil},
			{http.MethodGet, "/api/v1/messages/" + msg, nil},
			{http.MethodGet, "/api/v1/messages/" + msg + "/raw", nil},
			{http.MethodGet, "/api/v1/messages/" + msg + "/attachments/2", nil},
			{http.MethodPatch, "/api/v1/messages/" + msg, map[string]any{"read": false, "tags": []string{"pwned"}}},
			{http.MethodDelete, "/api/v1/messages/" + msg, nil},
			{http.MethodGet, "/api/v1/contacts/" + contact, nil},
			{http.MethodPatch, "/api/v1/contacts/" + contact, map[string]any{"name": "pwned"}},
			{http.MethodDelete, "/api/v1/contacts/" + contact, nil},
			{http.MethodGet, "/api/v1/contacts/" + contact + "/privacy", nil},
			{http.MethodGet, "/api/v1/contacts/" + contact + "/keys", nil},
			{http.MethodPost, "/api/v1/contacts/" + contact + "/keys", map[string]string{"armored": pub}},
			{http.MethodPost, "/api/v1/contacts/" + contact + "/keys/" + k.Fingerprint + "/verify", nil},
			{http.MethodDelete, "/api/v1/contacts/" + contact + "/keys/" + k.Fingerprint, nil},
		}
	}
	foreign, absent := reqs(conv, msg, contact), reqs(missing, missing, missing)
	for i, r := range foreign {
		got := h.do(r.method, r.path, h.bob.Token, r.body)
		want := h.do(absent[i].method, absent[i].path, h.bob.Token, absent[i].body)
		wantError(t, got, http.StatusNotFound, "not_found", "")
		if got.Body.String() != want.Body.String() {
			t.Errorf("%s %s: foreign answer %s differs from nonexistent %s", r.method, r.path, got.Body, want.Body)
		}
	}
	// A reply to Alice's message is not Bob's to make.
	wantError(t, h.do(http.MethodPost, "/api/v1/messages", h.bob.Token, map[string]any{
		"to": []string{"x@remote.example"}, "text": "hi", "in_reply_to": msg}), http.StatusBadRequest, "invalid", "in_reply_to")

	// Alice's data is untouched.
	ctx := context.Background()
	m, err := h.st.GetMessage(ctx, h.alice.ID, d.MessageID)
	if err != nil || len(m.Flags.Tags) != 0 {
		t.Fatalf("Alice's message after Bob: %v %+v", err, m.Flags)
	}
	c, err := h.st.GetContact(ctx, h.alice.ID, ct.ID)
	if err != nil || c.Name != "Frank" || len(c.Keys) != 1 || c.Keys[0].Verified {
		t.Fatalf("Alice's contact after Bob: %v %+v", err, c)
	}
	if _, err := h.st.GetConversation(ctx, h.alice.ID, d.ConversationID); err != nil {
		t.Fatalf("Alice's conversation after Bob: %v", err)
	}
	// And Bob's lists do not show it.
	list := decode[page[conversationView]](t, h.do(http.MethodGet, "/api/v1/conversations", h.bob.Token, nil), http.StatusOK)
	if len(list.Items) != 0 {
		t.Fatalf("Bob lists %d conversations", len(list.Items))
	}
	contacts := decode[page[contactView]](t, h.do(http.MethodGet, "/api/v1/contacts", h.bob.Token, nil), http.StatusOK)
	if len(contacts.Items) != 0 {
		t.Fatalf("Bob lists %d contacts", len(contacts.Items))
	}
}

// unavailable is a store that has lost its engine for the listed calls.
type unavailable struct {
	Store
}

func (unavailable) ListConversations(context.Context, uuid.UUID, store.Page) ([]store.Conversation, string, error) {
	return nil, "", errors.Join(errors.New("dial 10.0.0.1:9042: timeout"), store.ErrUnavailable)
}

func (unavailable) GetMessage(context.Context, uuid.UUID, uuid.UUID) (store.Message, error) {
	return store.Message{}, errors.Join(errors.New("no connections"), store.ErrUnavailable)
}

func TestStoreUnavailable(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Store = unavailable{c.Store} })
	for _, p := range []string{"/api/v1/conversations", "/api/v1/messages/" + uuid.Must(uuid.NewV7()).String()} {
		rec := h.do(http.MethodGet, p, h.alice.Token, nil)
		wantError(t, rec, http.StatusServiceUnavailable, "unavailable", "")
		if rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", p)
		}
		if strings.Contains(rec.Body.String(), "10.0.0.1") || strings.Contains(rec.Body.String(), "connections") {
			t.Errorf("%s: internal detail leaked: %s", p, rec.Body)
		}
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxBody = 2 << 10 })
	tok := h.alice.Token
	wantError(t, h.do(http.MethodPost, "/api/v1/contacts", tok, `{"name": "x",`), http.StatusBadRequest, "invalid", "")
	wantError(t, h.do(http.MethodPost, "/api/v1/contacts", tok, `{"name": "x"} {"name": "y"}`), http.StatusBadRequest, "invalid", "")
	wantError(t, h.do(http.MethodPost, "/api/v1/contacts", tok, `[1,2]`), http.StatusBadRequest, "invalid", "")
	wantError(t, h.do(http.MethodPost, "/api/v1/contacts", tok, `{"name": 42}`), http.StatusBadRequest, "invalid", "name")
	wantError(t, h.do(http.MethodPost, "/api/v1/contacts", tok, ``), http.StatusBadRequest, "invalid", "")
	wantError(t, h.do(http.MethodGet, "/api/v1/messages/123", tok, nil), http.StatusBadRequest, "invalid", "id")
	wantError(t, h.do(http.MethodGet, "/api/v1/conversations/zzz/messages", tok, nil), http.StatusBadRequest, "invalid", "id")
	wantError(t, h.do(http.MethodPost, "/api/v1/contacts", tok, `{"name":"`+strings.Repeat("x", 4000)+`"}`), http.StatusRequestEntityTooLarge, "too_large", "")
	// Chunked (no Content-Length): the limit is enforced while reading.
	chunked := httptest.NewRequest(http.MethodPost, "/api/v1/contacts", io.MultiReader(strings.NewReader(`{"name":"`+strings.Repeat("x", 4000)+`"}`)))
	chunked.ContentLength = -1
	chunked.Header.Set("Authorization", "Bearer "+tok)
	chunked.Header.Set("Content-Type", "application/json")
	rec413 := httptest.NewRecorder()
	h.srv.Echo().ServeHTTP(rec413, chunked)
	wantError(t, rec413, http.StatusRequestEntityTooLarge, "too_large", "")
	wantError(t, h.do(http.MethodGet, "/api/v1/nowhere", tok, nil), http.StatusNotFound, "not_found", "")
	// Echo answers an unrouted method under a group with middleware as 404.
	if rec := h.do(http.MethodPut, "/api/v1/contacts", tok, nil); rec.Code != http.StatusMethodNotAllowed {
		wantError(t, rec, http.StatusNotFound, "not_found", "")
	}

	req := h.do(http.MethodPost, "/api/v1/contacts", tok, nil)
	wantError(t, req, http.StatusBadRequest, "invalid", "")

	// A panic is a JSON 500 with nothing of the panic in it.
	h.srv.Echo().GET("/api/v1/test-panic", func(echo.Context) error { panic("secret detail at db.go:42") })
	rec := h.do(http.MethodGet, "/api/v1/test-panic", tok, nil)
	wantError(t, rec, http.StatusInternalServerError, "internal", "")
	if strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("panic leaked: %s", rec.Body)
	}
}
