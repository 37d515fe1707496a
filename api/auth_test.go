package api

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type loginAnswer struct {
	Token     string    `json:"token"`
	TokenType string    `json:"token_type"`
	ExpiresAt time.Time `json:"expires_at"`
}

func TestLoginLogoutExpiry(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TokenTTL = time.Hour })

	rec := h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": strings.ToUpper(h.alice.Name[:1]) + h.alice.Name[1:], "password": h.alice.Password})
	la := decode[loginAnswer](t, rec, http.StatusOK)
	if len(la.Token) != 43 || la.TokenType != "Bearer" {
		t.Fatalf("token %q type %q: want 43 base64url characters, Bearer", la.Token, la.TokenType)
	}
	if want := h.clock.Now().Add(time.Hour); !la.ExpiresAt.Equal(want) {
		t.Errorf("expires_at %v, want %v", la.ExpiresAt, want)
	}
	// Only the hash is stored.
	if _, err := h.st.GetToken(context.Background(), la.Token); err == nil {
		t.Error("the raw token is a key in the store; only its hash may be")
	}
	if _, err := h.st.GetToken(context.Background(), tokenHash(la.Token)); err != nil {
		t.Errorf("token hash not stored: %v", err)
	}

	if rec := h.do(http.MethodGet, "/api/v1/me", la.Token, nil); rec.Code != http.StatusOK {
		t.Fatalf("GET /me with fresh token: %d %s", rec.Code, rec.Body)
	}
	if rec := h.do(http.MethodPost, "/api/v1/logout", la.Token, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", rec.Code, rec.Body)
	}
	wantError(t, h.do(http.MethodGet, "/api/v1/me", la.Token, nil), http.StatusUnauthorized, "unauthorized", "")

	// Expiry, by our clock.
	la = decode[loginAnswer](t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": h.alice.Password}), http.StatusOK)
	h.clock.Advance(time.Hour + time.Second)
	wantError(t, h.do(http.MethodGet, "/api/v1/me", la.Token, nil), http.StatusUnauthorized, "unauthorized", "")

	// Wrong password and unknown user answer alike.
	a := wantError(t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": "nope"}), http.StatusUnauthorized, "bad_credentials", "")
	b := wantError(t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": "mallory", "password": "nope"}), http.StatusUnauthorized, "bad_credentials", "")
	if a.Error.Code != b.Error.Code || a.Error.Message != b.Error.Message {
		t.Errorf("unknown user %+v differs from wrong password %+v", b.Error, a.Error)
	}

	// Garbage tokens.
	for _, tok := range []string{"", "short", "x" + la.Token[1:]} {
		wantError(t, h.do(http.MethodGet, "/api/v1/me", tok, nil), http.StatusUnauthorized, "unauthorized", "")
	}
	wantError(t, h.do(http.MethodPost, "/api/v1/login", "", `{"username":"`+h.alice.Name+`"`), http.StatusBadRequest, "invalid", "")
	wantError(t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name}), http.StatusBadRequest, "invalid", "password")
}

func TestLoginRateLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.LoginUserBurst, c.LoginUserInterval = 2, time.Minute
		c.LoginAddrBurst, c.LoginAddrInterval = 4, time.Minute
	})
	bad := map[string]string{"username": h.alice.Name, "password": "wrong"}
	for i := range 2 {
		if rec := h.do(http.MethodPost, "/api/v1/login", "", bad); rec.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d, want 401", i, rec.Code)
		}
	}
	rec := h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": h.alice.Password})
	wantError(t, rec, http.StatusTooManyRequests, "rate_limited", "")
	if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After %q, want 1..60 seconds", rec.Header().Get("Retry-After"))
	}
	// Another user from the same address still has two attempts of the
	// address's four, then the address is limited too.
	other := map[string]string{"username": h.bob.Name, "password": "wrong"}
	for i := range 2 {
		if rec := h.do(http.MethodPost, "/api/v1/login", "", other); rec.Code != http.StatusUnauthorized {
			t.Fatalf("bob attempt %d: %d, want 401", i, rec.Code)
		}
	}
	wantError(t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": "carol", "password": "x"}), http.StatusTooManyRequests, "rate_limited", "")

	// Time refills the buckets.
	h.clock.Advance(2 * time.Minute)
	decode[loginAnswer](t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": h.alice.Password}), http.StatusOK)
}

func TestLimiterBoundedMemory(t *testing.T) {
	l := newLimiter(1, time.Minute, 10)
	now := time.Now()
	for i := range 1000 {
		l.allow(strconv.Itoa(i), now)
	}
	if n := len(l.buckets); n > 10 {
		t.Fatalf("%d buckets kept, max 10", n)
	}
}

func TestChangePassword(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.do(http.MethodPost, "/api/v1/me/password", h.alice.Token,
		map[string]string{"old_password": "wrong", "new_password": "a much longer passphrase 42!"}), http.StatusBadRequest, "bad_credentials", "old_password")
	wantError(t, h.do(http.MethodPost, "/api/v1/me/password", h.alice.Token,
		map[string]string{"old_password": h.alice.Password, "new_password": "aaa"}), http.StatusBadRequest, "invalid", "new_password")

	np := "Correct-Horse-Battery-Staple-93!"
	got := decode[map[string]int](t, h.do(http.MethodPost, "/api/v1/me/password", h.alice.Token,
		map[string]string{"old_password": h.alice.Password, "new_password": np}), http.StatusOK)
	u, err := h.st.GetUser(context.Background(), h.alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got["password_strength"] != u.Setup.PasswordStrength || u.Setup.PasswordStrength < 3 {
		t.Errorf("strength answered %d, stored %d, want ≥ 3 and equal", got["password_strength"], u.Setup.PasswordStrength)
	}
	decode[loginAnswer](t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": np}), http.StatusOK)
	me := decode[meView](t, h.do(http.MethodGet, "/api/v1/me", h.alice.Token, nil), http.StatusOK)
	if me.Setup.PasswordStrength != u.Setup.PasswordStrength {
		t.Errorf("GET /me strength %d, want %d", me.Setup.PasswordStrength, u.Setup.PasswordStrength)
	}
}

func TestLoginKeys(t *testing.T) {
	s, err := New(Config{Store: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string][]string{
		"192.0.2.7":            {"192.0.2.7"},
		"::ffff:192.0.2.7":     {"192.0.2.7"},
		"2001:db8:1:2:3:4:5:6": {"2001:db8:1:2::/64", "2001:db8:1::/48"},
		"2001:db8:1:2:ffff::1": {"2001:db8:1:2::/64", "2001:db8:1::/48"},
		"not an address":       {"not an address"},
	} {
		keys := s.loginKeys(in, "alice")
		var got []string
		for _, k := range keys[:len(keys)-1] {
			got = append(got, k.key)
		}
		if !slices.Equal(got, want) || keys[len(keys)-1] != (limitKey{s.userLimiter, "alice"}) {
			t.Errorf("loginKeys(%q) = %v, want %v and the user name", in, keys, want)
		}
	}
}

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecretsNotLogged: passwords and tokens never reach the log, whatever
// the outcome, at the most verbose level.
func TestSecretsNotLogged(t *testing.T) {
	logs := &syncBuffer{}
	relayAddr := startRelay(t, &relay{}, nil)
	h := newHarness(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.Sender = smtpSender(t, SMTPConfig{Addr: relayAddr, Username: "api", Password: "relay-secret-pw"})
	})
	h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": "wrong-secret-pw"})
	la := decode[loginAnswer](t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": h.alice.Password}), http.StatusOK)
	h.do(http.MethodPost, "/api/v1/me/password", la.Token, map[string]string{"old_password": "wrong-old-pw", "new_password": "new-secret-pw-123456"})
	h.do(http.MethodPost, "/api/v1/messages", la.Token, map[string]any{"to": []string{"refused@remote.example"}, "text": "x"})
	h.do(http.MethodPost, "/api/v1/logout", la.Token, nil)
	h.do(http.MethodGet, "/api/v1/me", la.Token, nil)
	out := logs.String()
	if !strings.Contains(out, "login") {
		t.Fatalf("nothing logged, the test sees nothing: %q", out)
	}
	for _, secret := range []string{"wrong-secret-pw", h.alice.Password, la.Token, tokenHash(la.Token), "wrong-old-pw", "new-secret-pw-123456", "relay-secret-pw"} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds a secret %q:\n%s", secret, out)
		}
	}
}
