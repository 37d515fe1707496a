package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// loopbackClient dials from its own loopback address, as a distinct client.
func loopbackClient(from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 30 * time.Second}
}

// postLogin logs in through base with an optional X-Forwarded-For, and
// returns the status.
func postLogin(t *testing.T, c *http.Client, base, xff, user, pw string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": user, "password": pw})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+Prefix+"/login", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// Behind a reverse proxy (a real one, httputil's, which appends the peer to
// X-Forwarded-For), each client is limited by its own address: one client's
// failures do not lock out another, and a forged X-Forwarded-For neither
// frames another client nor frees the forger. From a peer that is not a
// trusted proxy, X-Forwarded-For is ignored.
func TestLoginsThroughProxy(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.LoginAddrBurst, c.LoginAddrInterval = 3, time.Hour
		c.LoginUserBurst = 1000 // only the address limit is under test
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	api := httptest.NewServer(h.srv.Echo()) // listens on 127.0.0.1
	defer api.Close()
	target, _ := url.Parse(api.URL)
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	defer proxy.Close()
	// The proxy connects to the API from 127.0.0.1, the trusted address.

	mallory := loopbackClient("127.0.0.2")
	alice := loopbackClient("127.0.0.3")
	for i := range 3 {
		// Each failure claims another origin to the left: only the
		// address the proxy appended counts.
		if code := postLogin(t, mallory, proxy.URL, "203.0.113."+strconv.Itoa(i), h.bob.Name, "guess"); code != http.StatusUnauthorized {
			t.Fatalf("mallory's failure %d: %d, want 401", i, code)
		}
	}
	if code := postLogin(t, mallory, proxy.URL, "127.0.0.3", h.bob.Name, "guess"); code != http.StatusTooManyRequests {
		t.Fatalf("mallory's 4th attempt, framing 127.0.0.3: %d, want 429", code)
	}
	// Alice, behind the same proxy, is not locked out, even though mallory
	// named her address.
	for i := range 3 {
		if code := postLogin(t, alice, proxy.URL, "", h.alice.Name, h.alice.Password); code != http.StatusOK {
			t.Fatalf("alice's login %d through the proxy: %d, want 200", i, code)
		}
	}
	if code := postLogin(t, alice, proxy.URL, "", h.alice.Name, "typo"); code != http.StatusUnauthorized {
		t.Fatalf("alice's typo: %d, want 401 (her own allowance)", code)
	}

	// Straight to the API, from a peer that is no trusted proxy: the
	// header is ignored, failures count against the peer itself.
	direct := loopbackClient("127.0.0.4")
	for i := range 3 {
		if code := postLogin(t, direct, api.URL, "198.51.100."+strconv.Itoa(i), h.bob.Name, "guess"); code != http.StatusUnauthorized {
			t.Fatalf("direct failure %d: %d, want 401", i, code)
		}
	}
	if code := postLogin(t, direct, api.URL, "198.51.100.99", h.bob.Name, h.bob.Password); code != http.StatusTooManyRequests {
		t.Fatalf("direct client with a fresh X-Forwarded-For: %d, want 429", code)
	}
}

func TestClientIP(t *testing.T) {
	s, err := New(Config{Store: openStore(t), TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1:1", []string{"198.51.100.1"}, "192.0.2.1"},                      // untrusted peer
		{"10.0.0.1:1", nil, "10.0.0.1"},                                             // proxy, no header
		{"10.0.0.1:1", []string{"198.51.100.1"}, "198.51.100.1"},                    // one proxy
		{"10.0.0.1:1", []string{"1.1.1.1, 198.51.100.1, 10.9.9.9"}, "198.51.100.1"}, // two proxies
		{"10.0.0.1:1", []string{"1.1.1.1", "198.51.100.1"}, "198.51.100.1"},         // several headers
		{"10.0.0.1:1", []string{"10.2.2.2, 10.3.3.3"}, "10.2.2.2"},                  // all trusted
		{"10.0.0.1:1", []string{"198.51.100.1, garbage, 10.3.3.3"}, "10.3.3.3"},     // garbage stops
		{"[2001:db8:ffff::1]:1", []string{"2001:db8:1::5"}, "2001:db8:1::5"},        // IPv6
		{"10.0.0.1:1", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},             // mapped
		{"[::ffff:10.0.0.1]:1", []string{"198.51.100.7"}, "198.51.100.7"},           // mapped peer
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientIP(r); got != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}

// Only failures count: a client that logs in correctly again and again is
// never refused (it used to get 429 after about 15).
func TestSuccessfulLoginsNotLimited(t *testing.T) {
	h := newHarness(t)
	for i := range 40 {
		rec := h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": h.alice.Password})
		if rec.Code != http.StatusOK {
			t.Fatalf("login %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	// Failures still do: the user's burst is 5.
	for i := range 5 {
		if rec := h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": "x"}); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, rec.Code)
		}
	}
	wantError(t, h.do(http.MethodPost, "/api/v1/login", "", map[string]string{"username": h.alice.Name, "password": h.alice.Password}),
		http.StatusTooManyRequests, "rate_limited", "")
}

// IPv6 clients are limited by /64, and a /48 as a whole gets a few clients'
// allowance: rotating through the /64s of one /48 does not escape.
func TestLoginLimitIPv6Networks(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.LoginAddrBurst, c.LoginAddrInterval = 2, time.Hour
		c.LoginUserBurst = 1000
	})
	login := func(peer, pw string) int {
		body, _ := json.Marshal(map[string]string{"username": h.alice.Name, "password": pw})
		req := httptest.NewRequest(http.MethodPost, "/api/v1/login", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = "[" + peer + "]:4000"
		rec := httptest.NewRecorder()
		h.srv.Echo().ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range 2 {
		if code := login("2001:db8:1:0::"+strconv.Itoa(i+1), "x"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, code)
		}
	}
	if code := login("2001:db8:1:0:ffff::9", h.alice.Password); code != http.StatusTooManyRequests {
		t.Fatalf("another address of the same /64: %d, want 429", code)
	}
	if code := login("2001:db8:1:1::1", h.alice.Password); code != http.StatusOK {
		t.Fatalf("another /64 of the /48: %d, want 200", code)
	}
	// The /48 allows netLimitFactor times one client's burst in all: 2
	// failures spent above, 8 more from other /64s.
	for i := range 2*netLimitFactor - 2 {
		if code := login("2001:db8:1:"+strconv.FormatInt(int64(0x100+i), 16)+"::1", "x"); code != http.StatusUnauthorized {
			t.Fatalf("/48 failure %d: %d", i, code)
		}
	}
	if code := login("2001:db8:1:ffff::1", h.alice.Password); code != http.StatusTooManyRequests {
		t.Fatalf("a fresh /64 of an exhausted /48: %d, want 429", code)
	}
	if code := login("2001:db8:2::1", h.alice.Password); code != http.StatusOK {
		t.Fatalf("another /48: %d, want 200", code)
	}
}

// When the table is full, the least recently used key goes, not the table.
func TestLimiterEvictsLeastRecentlyUsed(t *testing.T) {
	l := newLimiter(1, time.Hour, 3)
	now := time.Now()
	for _, k := range []string{"attacker", "b", "c"} {
		if ok, _ := l.allow(k, now); !ok {
			t.Fatalf("first attempt of %s refused", k)
		}
	}
	if ok, _ := l.allow("attacker", now); ok { // refused, and now the most recent
		t.Fatal("second attempt of attacker allowed")
	}
	for i := range 2 {
		l.allow("new"+strconv.Itoa(i), now) // evicts b, then c
	}
	if ok, _ := l.allow("attacker", now); ok {
		t.Error("a flood of new keys reset the attacker's bucket")
	}
	if len(l.buckets) != 3 || l.lru.Len() != 3 {
		t.Errorf("%d buckets, %d in LRU order, want 3", len(l.buckets), l.lru.Len())
	}
	if _, ok := l.buckets["b"]; ok {
		t.Error("the least recently used key was kept")
	}
}
