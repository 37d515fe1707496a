package api

import (
	"net/http"
	"strings"
	"testing"
)

// Every text a client sets for people to read refuses NUL, other control
// characters and bidirectional overrides, with a 400 naming the field, and
// nothing is written.
func TestUserTextRefused(t *testing.T) {
	h := newHarness(t)
	contact := decode[contactView](t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token,
		map[string]any{"name": "Carol"}), http.StatusCreated)
	cpath := "/api/v1/contacts/" + contact.ID.String()
	d := h.deliver(h.alice, "From: Dave <dave@remote.example>\nTo: alice@example.org\nSubject: hi\nMessage-ID: <ut1@remote.example>\n\nhello\n")
	mpath := "/api/v1/messages/" + d.MessageID.String()

	for _, bad := range []string{"nul\x00x", "new\nline", "esc\x1b[31m", "c1\u0085x", "paypal\u202ecom", "\u2066iso"} {
		for _, tc := range []struct {
			method, path string
			body         any
			field        string
		}{
			{http.MethodPost, "/api/v1/contacts", map[string]any{"name": bad}, "name"},
			{http.MethodPatch, cpath, map[string]any{"name": bad}, "name"},
			{http.MethodPost, "/api/v1/contacts", map[string]any{"channels": []map[string]string{{"protocol": "email", "address": "x" + bad + "@example.net"}}}, "channels[0].address"},
			{http.MethodPatch, cpath, map[string]any{"channels": []map[string]string{{"protocol": "matrix", "address": "@x" + bad + ":example.net"}}}, "channels[0].address"},
			{http.MethodPatch, mpath, map[string]any{"tags": []string{"ok", "t" + bad}}, "tags[1]"},
			{http.MethodPost, "/api/v1/messages", map[string]any{"to": []string{"bob@example.org"}, "subject": "s" + bad, "text": "x"}, "subject"},
			{http.MethodPost, "/api/v1/messages", map[string]any{"to": []string{"bob@example.org"}, "cc": []string{`"Bob` + bad + `" <bob@example.org>`}, "text": "x"}, "cc[0]"},
		} {
			rec := h.do(tc.method, tc.path, h.alice.Token, tc.body)
			if rec.Code != http.StatusBadRequest {
				t.Errorf("%s %s with %q: %d, want 400", tc.method, tc.path, bad, rec.Code)
				continue
			}
			e := wantError(t, rec, http.StatusBadRequest, "invalid", tc.field)
			// (net/mail itself refuses controls in a quoted name.)
			if tc.field != "cc[0]" && !strings.Contains(e.Error.Message, "control character") && !strings.Contains(e.Error.Message, "bidirectional override") {
				t.Errorf("%s %s with %q: message %q does not say what is wrong", tc.method, tc.path, bad, e.Error.Message)
			}
		}
	}
	// Nothing changed.
	got := decode[contactView](t, h.do(http.MethodGet, cpath, h.alice.Token, nil), http.StatusOK)
	if got.Name != "Carol" || len(got.Channels) != 0 {
		t.Errorf("contact changed by refused requests: %+v", got)
	}
	list := decode[struct{ Items []contactView }](t, h.do(http.MethodGet, "/api/v1/contacts", h.alice.Token, nil), http.StatusOK)
	for _, c := range list.Items {
		if c.ID != contact.ID && c.Name != "Dave" {
			t.Errorf("a refused request created contact %+v", c)
		}
	}
	// Ordinary non-ASCII text passes.
	decode[contactView](t, h.do(http.MethodPatch, cpath, h.alice.Token, map[string]any{"name": "Zoë محمد 日本"}), http.StatusOK)
}
