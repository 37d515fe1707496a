package api

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/internal/password"
)

// sseStream is an open /events stream read line by line.
type sseStream struct {
	resp  *http.Response
	lines chan string
}

func openStream(t *testing.T, ts *httptest.Server, token string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return openStreamCtx(t, ctx, ts, token)
}

func openStreamCtx(t *testing.T, ctx context.Context, ts *httptest.Server, token string) *sseStream {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/api/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	s := &sseStream{resp: resp, lines: make(chan string, 100)}
	if resp.StatusCode != http.StatusOK {
		close(s.lines)
		return s
	}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	return s
}

// waitLine waits for the line want; it reports whether the stream then
// closed within the deadline when untilClosed.
func (s *sseStream) waitLine(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("stream closed waiting for %q", want)
			}
			if l == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %q within 5s", want)
		}
	}
}

// waitClosed waits for the server to end the stream.
func (s *sseStream) waitClosed(t *testing.T) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-s.lines:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("stream still open after 5s")
		}
	}
}

func TestChangePasswordEndsOtherSessions(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Heartbeat = 50 * time.Millisecond })
	ts := httptest.NewServer(h.srv.Echo())
	t.Cleanup(ts.Close) // after the streams' cleanups: Close waits for them

	other := h.token(h.alice.ID) // Alice's session on another device
	stream := openStream(t, ts, other)
	if stream.resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %d", stream.resp.StatusCode)
	}
	stream.waitLine(t, ": connected")

	np := "Correct-Horse-Battery-Staple-93!"
	decode[map[string]int](t, h.do(http.MethodPost, "/api/v1/me/password", h.alice.Token,
		map[string]string{"old_password": h.alice.Password, "new_password": np}), http.StatusOK)

	// The session that changed the password goes on; the other ends, and
	// so does its open stream; Bob is untouched.
	decode[meView](t, h.do(http.MethodGet, "/api/v1/me", h.alice.Token, nil), http.StatusOK)
	wantError(t, h.do(http.MethodGet, "/api/v1/me", other, nil), http.StatusUnauthorized, "", "")
	decode[meView](t, h.do(http.MethodGet, "/api/v1/me", h.bob.Token, nil), http.StatusOK)
	stream.waitLine(t, "event: unauthorized")
	stream.waitClosed(t)
}

func TestLoginInputBounds(t *testing.T) {
	logs := &syncBuffer{}
	h := newHarness(t, func(c *Config) {
		// One attempt per key: a bounds refusal that spent one would show.
		c.LoginUserBurst, c.LoginAddrBurst = 1, 1
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	long := strings.Repeat("a", 321)
	for _, tc := range []struct {
		body  any
		field string
	}{
		{map[string]string{"username": long, "password": "x"}, "username"},
		{"{\"username\":\"al\xffice\",\"password\":\"x\"}", "username"}, // invalid UTF-8
		{map[string]string{"username": h.alice.Name, "password": strings.Repeat("p", password.MaxLength+1)}, "password"},
	} {
		wantError(t, h.do(http.MethodPost, "/api/v1/login", "", tc.body), http.StatusBadRequest, "invalid", tc.field)
	}
	if strings.Contains(logs.String(), long) {
		t.Errorf("an oversized user name reached the log:\n%s", logs)
	}
	if n := len(h.srv.userLimiter.buckets) + len(h.srv.addrLimiter.buckets); n != 0 {
		t.Errorf("refused logins reached the rate limiters (%d buckets)", n)
	}
	// 320 bytes is still a (wrong) login, not a 400.
	wantError(t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": long[:320], "password": "x"}),
		http.StatusUnauthorized, "bad_credentials", "")

	// Bodies of login and password change are small; sending is not.
	big := `{"username":"` + h.alice.Name + `","password":"` + strings.Repeat("p", 20<<10) + `"}`
	wantError(t, h.do(http.MethodPost, "/api/v1/login", "", big), http.StatusRequestEntityTooLarge, "too_large", "")
	bigPW := `{"old_password":"x","new_password":"` + strings.Repeat("p", 20<<10) + `"}`
	wantError(t, h.do(http.MethodPost, "/api/v1/me/password", h.alice.Token, bigPW), http.StatusRequestEntityTooLarge, "too_large", "")
	bigMsg := `{"to":["x@remote.example"],"text":"` + strings.Repeat("t", 100<<10) + `"}`
	if rec := h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, bigMsg); rec.Code == http.StatusRequestEntityTooLarge {
		t.Errorf("POST /messages of 100 KiB refused as too large")
	}
}

func TestLoginLogsNoUnknownName(t *testing.T) {
	logs := &syncBuffer{}
	h := newHarness(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	typed := "correct-horse-typed-in-the-name-field"
	wantError(t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": typed, "password": "x"}),
		http.StatusUnauthorized, "bad_credentials", "")
	out := logs.String()
	if strings.Contains(out, typed) {
		t.Errorf("unknown user name logged in clear:\n%s", out)
	}
	if !strings.Contains(out, nameHash(typed)) {
		t.Errorf("no hash of the unknown name in the log:\n%s", out)
	}
	// A known user's failures still name the user.
	h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": "x"})
	if !strings.Contains(logs.String(), "user=alice") {
		t.Errorf("known user's failure does not name the user:\n%s", logs)
	}
}

func TestEventStreamLimits(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Heartbeat = 50 * time.Millisecond
		c.MaxStreamsPerUser, c.MaxStreams = 2, 3
	})
	ts := httptest.NewServer(h.srv.Echo())
	t.Cleanup(ts.Close) // after the streams' cleanups: Close waits for them

	refused := func(s *sseStream, what string) {
		t.Helper()
		if s.resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s: status %d, want 429", what, s.resp.StatusCode)
		}
		if ct := s.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s: Content-Type %q, want JSON", what, ct)
		}
		var e apiErr
		if err := json.NewDecoder(s.resp.Body).Decode(&e); err != nil || e.Error.Code != "too_many_streams" {
			t.Fatalf("%s: error %+v (%v), want too_many_streams", what, e, err)
		}
	}
	opened := func(s *sseStream, what string) {
		t.Helper()
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d, want 200", what, s.resp.StatusCode)
		}
		s.waitLine(t, ": connected")
	}

	ctx1, close1 := context.WithCancel(context.Background())
	defer close1()
	a1 := openStreamCtx(t, ctx1, ts, h.alice.Token)
	opened(a1, "alice 1")
	opened(openStream(t, ts, h.alice.Token), "alice 2")
	refused(openStream(t, ts, h.alice.Token), "alice 3 (per-user cap)")
	opened(openStream(t, ts, h.bob.Token), "bob 1")
	refused(openStream(t, ts, h.bob.Token), "bob 2 (global cap)")

	// A stream that ends frees its place.
	close1()
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Hub().Subscribers(h.alice.ID) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("closed stream still counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	opened(openStream(t, ts, h.alice.Token), "alice after one closed")
}

func TestContactKeyLimits(t *testing.T) {
	h := newHarness(t)
	c := decode[contactView](t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token, map[string]any{"name": "Many keys"}), http.StatusCreated)
	base := "/api/v1/contacts/" + c.ID.String() + "/keys"

	huge := "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + strings.Repeat("QUFB\n", (maxArmoredKey/5)+1) + "-----END PGP PUBLIC KEY BLOCK-----\n"
	wantError(t, h.do(http.MethodPost, base, h.alice.Token, map[string]string{"armored": huge}), http.StatusRequestEntityTooLarge, "too_large", "armored")

	for i := range maxContactKeys {
		_, pub := newKey(t, "k"+itoa(i)+"@remote.example")
		decode[keyView](t, h.do(http.MethodPost, base, h.alice.Token, map[string]string{"armored": pub}), http.StatusCreated)
	}
	_, pub := newKey(t, "one-too-many@remote.example")
	wantError(t, h.do(http.MethodPost, base, h.alice.Token, map[string]string{"armored": pub}), http.StatusConflict, "too_many_keys", "")
	keys := decode[page[keyView]](t, h.do(http.MethodGet, base, h.alice.Token, nil), http.StatusOK)
	if len(keys.Items) != maxContactKeys {
		t.Fatalf("%d keys stored, want %d", len(keys.Items), maxContactKeys)
	}
	// Deleting one makes room.
	if rec := h.do(http.MethodDelete, base+"/"+keys.Items[0].Fingerprint, h.alice.Token, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("delete key: %d", rec.Code)
	}
	decode[keyView](t, h.do(http.MethodPost, base, h.alice.Token, map[string]string{"armored": pub}), http.StatusCreated)
}

func TestContactsPagination(t *testing.T) {
	h := newHarness(t)
	const n = 7
	want := map[string]bool{}
	for i := range n {
		c := decode[contactView](t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token, map[string]any{"name": "C" + itoa(i)}), http.StatusCreated)
		want[c.ID.String()] = true
	}
	decode[contactView](t, h.do(http.MethodPost, "/api/v1/contacts", h.bob.Token, map[string]any{"name": "Bob's"}), http.StatusCreated)

	seen := map[string]bool{}
	cur, pages := "", 0
	for {
		path := "/api/v1/contacts?limit=3"
		if cur != "" {
			path += "&cursor=" + cur
		}
		p := decode[page[contactView]](t, h.do(http.MethodGet, path, h.alice.Token, nil), http.StatusOK)
		pages++
		if len(p.Items) > 3 {
			t.Fatalf("page of %d, limit 3", len(p.Items))
		}
		for _, c := range p.Items {
			if seen[c.ID.String()] || !want[c.ID.String()] {
				t.Fatalf("contact %s repeated or not Alice's", c.ID)
			}
			seen[c.ID.String()] = true
		}
		if p.NextCursor == "" {
			break
		}
		if pages > n {
			t.Fatal("pagination does not end")
		}
		cur = p.NextCursor
	}
	if len(seen) != n || pages != 3 {
		t.Fatalf("saw %d contacts in %d pages, want %d in 3", len(seen), pages, n)
	}
	// Without a limit: everything fits the default page.
	all := decode[page[contactView]](t, h.do(http.MethodGet, "/api/v1/contacts", h.alice.Token, nil), http.StatusOK)
	if len(all.Items) != n || all.NextCursor != "" {
		t.Fatalf("default page: %d items, cursor %q", len(all.Items), all.NextCursor)
	}
	// A contact deleted under the cursor does not break the walk.
	first := decode[page[contactView]](t, h.do(http.MethodGet, "/api/v1/contacts?limit=2", h.alice.Token, nil), http.StatusOK)
	h.do(http.MethodDelete, "/api/v1/contacts/"+first.Items[1].ID.String(), h.alice.Token, nil)
	rest := decode[page[contactView]](t, h.do(http.MethodGet, "/api/v1/contacts?limit=50&cursor="+first.NextCursor, h.alice.Token, nil), http.StatusOK)
	if len(rest.Items) != n-2 {
		t.Fatalf("after deleting the cursor's contact: %d items, want %d", len(rest.Items), n-2)
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x"} {
		wantError(t, h.do(http.MethodGet, "/api/v1/contacts?"+q, h.alice.Token, nil), http.StatusBadRequest, "invalid", "limit")
	}
	for _, q := range []string{"cursor=!!", "cursor=AAAA"} {
		wantError(t, h.do(http.MethodGet, "/api/v1/contacts?"+q, h.alice.Token, nil), http.StatusBadRequest, "invalid", "cursor")
	}
}

func TestSanitizerNoClobberingNoRelativeURLs(t *testing.T) {
	out, _ := sanitizeHTML(`<p id="config">a</p><map name="x"><area href="https://ok.example/" shape="rect" coords="0,0,1,1"></map>` +
		`<a href="/api/v1/logout">rel</a><a href="https://ok.example/page">abs</a><a href="http://[::1">bad</a>` +
		`<img id="currentUser" src="https://tracker.example/p.gif"><b title="t">bold</b>`)
	for _, bad := range []string{"id=", "name=", `href="/api`, "[::1"} {
		if strings.Contains(out, bad) {
			t.Errorf("sanitised HTML holds %q: %s", bad, out)
		}
	}
	for _, good := range []string{`href="https://ok.example/page"`, `<b title="t">bold</b>`, blockedSrc, "<p>a</p>"} {
		if !strings.Contains(out, good) {
			t.Errorf("sanitised HTML lost %q: %s", good, out)
		}
	}
}

func TestAttachmentDispositionInvisibleChars(t *testing.T) {
	for in, want := range map[string]string{
		"evil\u202egpj.exe":         "evilgpj.exe",
		"in\u200bvoice\u200d.pdf":   "invoice.pdf",
		"a\u2066b\u2069c\u200e.txt": "abc.txt",
		"\u202e":                    "attachment",
	} {
		got := attachmentDisposition(in)
		if !strings.Contains(got, want) {
			t.Errorf("attachmentDisposition(%q) = %q, want filename %q", in, got, want)
		}
		for _, r := range got {
			if r >= 0x200b && r <= 0x200f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 {
				t.Errorf("attachmentDisposition(%q) = %q keeps an invisible %U", in, got, r)
			}
		}
	}
}

func TestRawMessageHeaders(t *testing.T) {
	h := newHarness(t)
	d := h.deliver(h.alice, richMessage)
	rec := h.do(http.MethodGet, "/api/v1/messages/"+d.MessageID.String()+"/raw", h.alice.Token, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("raw: %d", rec.Code)
	}
	if got := rec.Header().Get("Content-Security-Policy"); got != "sandbox; default-src 'none'" {
		t.Errorf("raw CSP %q", got)
	}
	if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("raw X-Content-Type-Options %q", got)
	}
}

type countingSender struct {
	mu   sync.Mutex
	sent int
	fail bool
}

func (s *countingSender) Send(_ context.Context, _ string, to []string, _ []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return &SubmissionError{Code: 451, Message: "try later"}
	}
	s.sent += len(to)
	return nil
}

func TestSendRateLimit(t *testing.T) {
	snd := &countingSender{}
	h := newHarness(t, func(c *Config) {
		c.Sender = snd
		c.SendBurst, c.SendInterval = 5, time.Minute
	})
	send := func(tok string, n int) *httptest.ResponseRecorder {
		to := make([]string, n)
		for i := range to {
			to[i] = "r" + itoa(i) + "@remote.example"
		}
		return h.do(http.MethodPost, "/api/v1/messages", tok, map[string]any{"to": to, "subject": "s", "text": "hello"})
	}
	if rec := send(h.alice.Token, 3); rec.Code != http.StatusCreated {
		t.Fatalf("first send: %d %s", rec.Code, rec.Body)
	}
	rec := send(h.alice.Token, 3) // 3 of the 2 left
	wantError(t, rec, http.StatusTooManyRequests, "rate_limited", "")
	if ra := rec.Header().Get("Retry-After"); ra != "60" {
		t.Errorf("Retry-After %q, want 60 (one recipient short, one a minute)", ra)
	}
	// A refused submission costs nothing.
	snd.fail = true
	if rec := send(h.alice.Token, 2); rec.Code != http.StatusBadGateway {
		t.Fatalf("refused send: %d %s", rec.Code, rec.Body)
	}
	snd.fail = false
	if rec := send(h.alice.Token, 2); rec.Code != http.StatusCreated {
		t.Fatalf("send within the limit: %d %s", rec.Code, rec.Body)
	}
	// Per user: Bob has his own budget.
	if rec := send(h.bob.Token, 5); rec.Code != http.StatusCreated {
		t.Fatalf("bob's send: %d %s", rec.Code, rec.Body)
	}
	h.clock.Advance(3 * time.Minute)
	if rec := send(h.alice.Token, 3); rec.Code != http.StatusCreated {
		t.Fatalf("send after refill: %d %s", rec.Code, rec.Body)
	}
	if snd.sent != 3+2+5+3 {
		t.Errorf("%d recipients relayed, want 13", snd.sent)
	}
}

func TestErrorShapes(t *testing.T) {
	h := newHarness(t)
	e := wantError(t, h.do(http.MethodPost, "/api/v1/login", "", `["`+h.alice.Name+`","pw"]`), http.StatusBadRequest, "invalid", "")
	if e.Error.Message != "body must be a JSON object" {
		t.Errorf("top-level array: %q", e.Error.Message)
	}
	e = wantError(t, h.do(http.MethodPost, "/api/v1/login", "", `{"username":1,"password":"x"}`), http.StatusBadRequest, "invalid", "username")
	if strings.Contains(e.Error.Message, "api.") || !strings.Contains(e.Error.Message, "a string") {
		t.Errorf("type mismatch message %q", e.Error.Message)
	}
	rec := h.do(http.MethodPut, "/api/v1/me", h.alice.Token, nil)
	wantError(t, rec, http.StatusMethodNotAllowed, "method_not_allowed", "")
	if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("Allow %q", allow)
	}
	rec = h.do(http.MethodDelete, "/api/v1/login", h.alice.Token, nil)
	wantError(t, rec, http.StatusMethodNotAllowed, "method_not_allowed", "")
	rec = h.do(http.MethodPut, "/api/v1/contacts/"+uuid.Must(uuid.NewV7()).String(), h.alice.Token, nil)
	wantError(t, rec, http.StatusMethodNotAllowed, "method_not_allowed", "")
	// Unknown paths stay 404.
	wantError(t, h.do(http.MethodGet, "/api/v1/nothing-here", h.alice.Token, nil), http.StatusNotFound, "not_found", "")
}
