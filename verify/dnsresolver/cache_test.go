package dnsresolver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/caliopen/caliopen/verify/dnsresolver"
	"github.com/caliopen/caliopen/verify/internal/dnstest"
)

// clock is a settable time source for TTL tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// zone is example.org with an SOA whose negative TTL (MINIMUM) is 30 s.
func zone(t *testing.T) *dnstest.Server {
	srv := dnstest.Start(t)
	srv.Add(t,
		`example.org. 3600 IN SOA ns.example.org. hostmaster.example.org. 1 7200 3600 1209600 30`,
		`sel._domainkey.example.org. 60 IN TXT "v=DKIM1; p=AAAA"`,
		`mx1.example.org. 300 IN A 192.0.2.1`,
		`zero.example.org. 0 IN TXT "v=spf1 -all"`,
	)
	return srv
}

func cached(t *testing.T, srv *dnstest.Server, c *clock, size int) *dnsresolver.Resolver {
	return dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: time.Second, CacheSize: size, Now: c.Now})
}

func TestCacheKeepsAnswerForItsTTL(t *testing.T) {
	srv, c := zone(t), newClock()
	r := cached(t, srv, c, 100)
	const name = "sel._domainkey.example.org"
	for i, step := range []struct {
		advance time.Duration
		asked   int
	}{{0, 1}, {0, 1}, {59 * time.Second, 1}, {time.Second, 2}, {30 * time.Second, 2}} {
		c.Advance(step.advance)
		txt, err := r.LookupTXT(t.Context(), name)
		if err != nil || len(txt) != 1 || txt[0] != "v=DKIM1; p=AAAA" {
			t.Fatalf("lookup %d = %q, %v", i, txt, err)
		}
		if got := srv.Asked(name, dns.TypeTXT); got != step.asked {
			t.Errorf("lookup %d (TTL 60 s, at +%v): server asked %d times, want %d", i, step.advance, got, step.asked)
		}
	}
	// Names are case-insensitive: the same entry answers.
	if _, err := r.LookupTXT(t.Context(), "SEL._DomainKey.Example.ORG."); err != nil || srv.Asked(name, dns.TypeTXT) != 2 {
		t.Errorf("upper-case lookup went to the server (%d queries), err %v", srv.Asked(name, dns.TypeTXT), err)
	}
}

func TestTTLZeroIsNotCached(t *testing.T) {
	srv, c := zone(t), newClock()
	r := cached(t, srv, c, 100)
	for range 3 {
		if _, err := r.LookupTXT(t.Context(), "zero.example.org"); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.Asked("zero.example.org", dns.TypeTXT); got != 3 {
		t.Errorf("TTL 0 answer: server asked %d times for 3 lookups, want 3", got)
	}
}

// RFC 2308: NXDOMAIN and NODATA are kept for min(SOA TTL, SOA MINIMUM).
func TestNegativeAnswersCachedBySOA(t *testing.T) {
	srv, c := zone(t), newClock()
	r := cached(t, srv, c, 100)
	ctx := t.Context()
	nx := func() error { _, err := r.LookupTXT(ctx, "_dmarc.nothing.example.org"); return err }
	nodata := func() error {
		txt, err := r.LookupTXT(ctx, "mx1.example.org")
		if err == nil && len(txt) != 0 {
			return fmt.Errorf("NODATA answered %q", txt)
		}
		return err
	}
	for i, advance := range []time.Duration{0, 0, 29 * time.Second, 2 * time.Second} {
		c.Advance(advance)
		var de *net.DNSError
		if err := nx(); !errors.As(err, &de) || !de.IsNotFound || de.Temporary() {
			t.Fatalf("lookup %d: NXDOMAIN gave %#v; want not found", i, err)
		}
		if err := nodata(); err != nil {
			t.Fatalf("lookup %d: NODATA gave %v", i, err)
		}
	}
	want := 2 // once, then again after the 30 s MINIMUM
	if got := srv.Asked("_dmarc.nothing.example.org", dns.TypeTXT); got != want {
		t.Errorf("NXDOMAIN asked %d times, want %d", got, want)
	}
	if got := srv.Asked("mx1.example.org", dns.TypeTXT); got != want {
		t.Errorf("NODATA asked %d times, want %d", got, want)
	}

	// The SOA's own TTL wins when it is lower than MINIMUM.
	srv2, c2 := dnstest.Start(t), newClock()
	srv2.Add(t, `example.net. 10 IN SOA ns.example.net. h.example.net. 1 7200 3600 1209600 300`)
	r2 := cached(t, srv2, c2, 100)
	for _, advance := range []time.Duration{0, 9 * time.Second, 2 * time.Second} {
		c2.Advance(advance)
		_, _ = r2.LookupTXT(ctx, "x.example.net")
	}
	if got := srv2.Asked("x.example.net", dns.TypeTXT); got != 2 {
		t.Errorf("SOA TTL 10 < MINIMUM 300: asked %d times over 11 s, want 2", got)
	}
}

// A negative answer without an SOA may not be cached (RFC 2308 §5).
func TestNegativeAnswerWithoutSOAIsNotCached(t *testing.T) {
	srv, c := dnstest.Start(t), newClock()
	r := cached(t, srv, c, 100)
	for range 2 {
		_, _ = r.LookupTXT(t.Context(), "nothing.example.com")
	}
	if got := srv.Asked("nothing.example.com", dns.TypeTXT); got != 2 {
		t.Errorf("asked %d times, want 2", got)
	}
}

// A failure says nothing about the record: the next lookup asks again, and
// finds the record once the server is back.
func TestFailuresAreNotCached(t *testing.T) {
	srv, c := zone(t), newClock()
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: 200 * time.Millisecond, CacheSize: 100, Now: c.Now})
	const name = "sel._domainkey.example.org"
	ctx := t.Context()

	srv.SetRcode(dns.RcodeServerFailure)
	if _, err := r.LookupTXT(ctx, name); !isTemp(err) {
		t.Fatalf("SERVFAIL gave %#v; want a temporary error", err)
	}
	srv.SetRcode(dns.RcodeSuccess)
	srv.SetDrop(true)
	if _, err := r.LookupTXT(ctx, name); !isTemp(err) {
		t.Fatalf("dropped query gave %#v; want a temporary error", err)
	}
	srv.SetDrop(false)
	if txt, err := r.LookupTXT(ctx, name); err != nil || len(txt) != 1 {
		t.Fatalf("after recovery: %q, %v; want the record", txt, err)
	}
	if got := srv.Asked(name, dns.TypeTXT); got != 3 {
		t.Errorf("server asked %d times, want 3 (no failure cached)", got)
	}
}

func isTemp(err error) bool {
	de, ok := err.(*net.DNSError)
	return ok && de.Temporary() && !de.IsNotFound
}

func TestCacheIsBounded(t *testing.T) {
	srv, c := dnstest.Start(t), newClock()
	for _, n := range []string{"a", "b", "c"} {
		srv.Add(t, n+`.example.org. 300 IN TXT "`+n+`"`)
	}
	r := cached(t, srv, c, 2)
	look := func(n string) {
		t.Helper()
		if txt, err := r.LookupTXT(t.Context(), n+".example.org"); err != nil || len(txt) != 1 || txt[0] != n {
			t.Fatalf("%s: %q, %v", n, txt, err)
		}
	}
	look("a")
	look("b")
	look("a") // a is now the most recently used
	look("c") // evicts b, the least recently used
	look("a")
	look("b")
	for n, want := range map[string]int{"a": 1, "b": 2, "c": 1} {
		if got := srv.Asked(n+".example.org", dns.TypeTXT); got != want {
			t.Errorf("%s asked %d times, want %d", n, got, want)
		}
	}
}

// Concurrent lookups of one name and type share one query, even with the
// cache off; other names or types get their own.
func TestConcurrentLookupsCoalesce(t *testing.T) {
	srv := zone(t)
	srv.SetDelay(200 * time.Millisecond)
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: 2 * time.Second})
	const name = "sel._domainkey.example.org"
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Go(func() {
			txt, err := r.LookupTXT(t.Context(), name)
			if err == nil && (len(txt) != 1 || txt[0] != "v=DKIM1; p=AAAA") {
				err = fmt.Errorf("got %q", txt)
			}
			errs <- err
		})
	}
	wg.Go(func() { _, _ = r.LookupIPAddr(t.Context(), "mx1.example.org") })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.Asked(name, dns.TypeTXT); got != 1 {
		t.Errorf("40 concurrent lookups sent %d queries, want 1", got)
	}
	if got := srv.Asked("mx1.example.org", dns.TypeA); got != 1 {
		t.Errorf("A lookup of another name sent %d queries, want 1", got)
	}
}

// A caller that gives up (its context ends) gets a time-out at once, and does
// not fail the callers sharing its query.
func TestCallerGivingUpDoesNotFailOthers(t *testing.T) {
	srv := zone(t)
	srv.SetDelay(300 * time.Millisecond)
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: 2 * time.Second, CacheSize: 10})
	const name = "sel._domainkey.example.org"

	impatient := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := r.LookupTXT(ctx, name)
		if d := time.Since(start); err == nil || d > 250*time.Millisecond {
			impatient <- fmt.Errorf("impatient caller: %v after %v; want a time-out by its deadline", err, d)
			return
		}
		if de, ok := err.(*net.DNSError); !ok || !de.IsTimeout || !de.Temporary() {
			impatient <- fmt.Errorf("impatient caller got %#v; want a timeout *net.DNSError", err)
			return
		}
		impatient <- nil
	}()
	time.Sleep(10 * time.Millisecond) // the impatient caller starts the query
	txt, err := r.LookupTXT(t.Context(), name)
	if err != nil || len(txt) != 1 {
		t.Errorf("patient caller: %q, %v", txt, err)
	}
	if err := <-impatient; err != nil {
		t.Error(err)
	}
	if got := srv.Asked(name, dns.TypeTXT); got != 1 {
		t.Errorf("server asked %d times, want 1", got)
	}
}

// A slow server and one that drops queries both give temporary errors within
// the timeout, for every concurrent caller.
func TestSlowAndDroppingServersGiveTimelyTempErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(*dnstest.Server)
	}{
		{"slow", func(s *dnstest.Server) { s.SetDelay(1500 * time.Millisecond) }},
		{"dropping", func(s *dnstest.Server) { s.SetDrop(true) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := zone(t)
			c.setup(srv)
			const timeout = 300 * time.Millisecond
			r := dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: timeout, CacheSize: 10})
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, 20)
			for i := range 20 {
				wg.Go(func() {
					_, err := r.LookupTXT(t.Context(), fmt.Sprintf("n%d.example.org", i%5))
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			if d := time.Since(start); d > timeout+700*time.Millisecond {
				t.Errorf("20 lookups took %v with a %v timeout", d, timeout)
			}
			for err := range errs {
				if de, ok := err.(*net.DNSError); !ok || !de.IsTimeout || !de.Temporary() {
					t.Fatalf("got %#v; want a timeout *net.DNSError", err)
				}
			}
			if q := srv.Queries(); q != 5 {
				t.Errorf("server got %d queries for 5 names, want 5", q)
			}
		})
	}
}

func TestNewRejectsMissingServer(t *testing.T) {
	if _, err := dnsresolver.New(dnsresolver.Config{}); err == nil {
		t.Error("New without Server succeeded")
	}
	if _, err := dnsresolver.New(dnsresolver.Config{Server: "127.0.0.1:53", CacheSize: -1}); err == nil {
		t.Error("New with a negative CacheSize succeeded")
	}
}
