package api

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caliopen/caliopen/store"
)

// A token ends after api.token_idle without use, and after api.token_ttl
// however used; use slides its expiry with one store write a minute at most.
func TestTokenIdleExpiry(t *testing.T) {
	const day = 24 * time.Hour
	h := newHarness(t, func(c *Config) { c.TokenTTL, c.TokenIdle = 10*day, 3*day })
	login := func() loginAnswer {
		return decode[loginAnswer](t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": h.alice.Password}), http.StatusOK)
	}
	stored := func(tok string) time.Time {
		t.Helper()
		st, err := h.st.GetToken(context.Background(), tokenHash(tok))
		if err != nil {
			t.Fatalf("stored token: %v", err)
		}
		return st.ExpiresAt
	}
	la := login()
	if want := h.clock.Now().Add(3 * day); !la.ExpiresAt.Equal(want) {
		t.Errorf("expires_at %v, want login + token_idle %v", la.ExpiresAt, want)
	}
	// Within a minute, a request writes nothing.
	h.clock.Advance(30 * time.Second)
	decode[meView](t, h.do(http.MethodGet, "/api/v1/me", la.Token, nil), http.StatusOK)
	if got := stored(la.Token); !got.Equal(la.ExpiresAt) {
		t.Errorf("expiry rewritten after 30s of use: %v, was %v", got, la.ExpiresAt)
	}
	// Used every two days, the token lives on, up to its lifetime.
	end := h.clock.Now().Add(-30 * time.Second).Add(10 * day)
	for h.clock.Now().Add(2 * day).Before(end) {
		h.clock.Advance(2 * day)
		decode[meView](t, h.do(http.MethodGet, "/api/v1/me", la.Token, nil), http.StatusOK)
		want := h.clock.Now().Add(3 * day)
		if want.After(end) {
			want = end
		}
		if got := stored(la.Token); !got.Equal(want) {
			t.Errorf("day %v: stored expiry %v, want %v", h.clock.Now().Sub(end.Add(-10*day)).Hours()/24, got, want)
		}
	}
	h.clock.Advance(end.Sub(h.clock.Now()))
	wantError(t, h.do(http.MethodGet, "/api/v1/me", la.Token, nil), http.StatusUnauthorized, "unauthorized", "")

	// Unused for token_idle, a token ends.
	la = login()
	h.clock.Advance(3*day - time.Second)
	decode[meView](t, h.do(http.MethodGet, "/api/v1/me", la.Token, nil), http.StatusOK)
	h.clock.Advance(3 * day)
	wantError(t, h.do(http.MethodGet, "/api/v1/me", la.Token, nil), http.StatusUnauthorized, "unauthorized", "")
}

// interleaving runs during once, right after a request has read its token
// from the store and before it slides it: the worst moment for a session to
// end.
type interleaving struct {
	Store
	armed  atomic.Bool
	during func()
}

func (s *interleaving) GetToken(ctx context.Context, hash string) (store.Token, error) {
	t, err := s.Store.GetToken(ctx, hash)
	if s.armed.CompareAndSwap(true, false) {
		s.during()
	}
	return t, err
}

// A session ended while one of its requests is in flight stays ended: the
// request's slide of the expiry does not write the token back.
func TestSlideDoesNotResurrect(t *testing.T) {
	var il *interleaving
	h := newHarness(t, func(c *Config) {
		il = &interleaving{Store: c.Store}
		c.Store = il
	})
	for _, tc := range []struct {
		name string
		end  func(victim, other string)
	}{
		{"logout", func(victim, _ string) {
			if rec := h.do(http.MethodPost, "/api/v1/logout", victim, nil); rec.Code != http.StatusNoContent {
				t.Errorf("logout: %d %s", rec.Code, rec.Body)
			}
		}},
		{"password change", func(_, other string) {
			decode[map[string]int](t, h.do(http.MethodPost, "/api/v1/me/password", other,
				map[string]string{"old_password": h.alice.Password, "new_password": h.alice.Password + " 2"}), http.StatusOK)
			h.alice.Password += " 2"
		}},
	} {
		victim, other := h.token(h.alice.ID), h.token(h.alice.ID)
		h.clock.Advance(2 * time.Minute) // the next use slides the expiry
		il.during = func() { tc.end(victim, other) }
		il.armed.Store(true)
		wantError(t, h.do(http.MethodGet, "/api/v1/me", victim, nil), http.StatusUnauthorized, "unauthorized", "")
		if _, err := h.st.GetToken(context.Background(), tokenHash(victim)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: the ended token is back in the store (%v)", tc.name, err)
		}
		decode[meView](t, h.do(http.MethodGet, "/api/v1/me", other, nil), http.StatusOK)
	}
}
