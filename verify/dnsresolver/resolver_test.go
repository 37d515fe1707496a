package dnsresolver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caliopen/caliopen/verify/dnsresolver"
	"github.com/caliopen/caliopen/verify/internal/dnstest"
)

func TestLookups(t *testing.T) {
	srv := dnstest.Start(t)
	long := strings.Repeat("k", 600) // three TXT strings on the wire
	srv.AddTXT("sel._domainkey.example.org", "v=DKIM1; p="+long)
	srv.Add(t,
		`example.org. 300 IN MX 10 mx1.example.org.`,
		`example.org. 300 IN MX 20 mx2.example.org.`,
		`mx1.example.org. 300 IN A 192.0.2.1`,
		`mx1.example.org. 300 IN AAAA 2001:db8::1`,
		`1.2.0.192.in-addr.arpa. 300 IN PTR mx1.example.org.`,
	)
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: time.Second})
	ctx := t.Context()

	txt, err := r.LookupTXT(ctx, "sel._domainkey.example.org")
	if err != nil || len(txt) != 1 || txt[0] != "v=DKIM1; p="+long {
		t.Fatalf("LookupTXT = %q, %v; want the joined record", txt, err)
	}

	mx, err := r.LookupMX(ctx, "example.org")
	if err != nil || len(mx) != 2 {
		t.Fatalf("LookupMX = %v, %v", mx, err)
	}
	hosts := []string{mx[0].Host, mx[1].Host}
	slices.Sort(hosts)
	if hosts[0] != "mx1.example.org." || hosts[1] != "mx2.example.org." {
		t.Errorf("MX hosts = %v", hosts)
	}

	ips, err := r.LookupIPAddr(ctx, "mx1.example.org")
	if err != nil || len(ips) != 2 {
		t.Fatalf("LookupIPAddr = %v, %v; want A and AAAA", ips, err)
	}
	if !ips[0].IP.Equal(net.ParseIP("192.0.2.1")) || !ips[1].IP.Equal(net.ParseIP("2001:db8::1")) {
		t.Errorf("LookupIPAddr = %v", ips)
	}

	names, err := r.LookupAddr(ctx, "192.0.2.1")
	if err != nil || len(names) != 1 || names[0] != "mx1.example.org." {
		t.Errorf("LookupAddr = %v, %v", names, err)
	}

	// A name that exists without the asked type is NODATA: no error, no records.
	txt, err = r.LookupTXT(ctx, "mx1.example.org")
	if err != nil || len(txt) != 0 {
		t.Errorf("NODATA TXT = %q, %v; want none, nil", txt, err)
	}
}

func TestNXDOMAINIsNotFound(t *testing.T) {
	srv := dnstest.Start(t)
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: time.Second})
	_, err := r.LookupTXT(t.Context(), "nothing.example.org")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound || de.Temporary() {
		t.Fatalf("err = %#v; want a permanent not-found *net.DNSError", err)
	}
	// Callers (the SPF and DKIM libraries) type-assert, so it must not be wrapped.
	if _, ok := err.(*net.DNSError); !ok {
		t.Errorf("error is %T, want *net.DNSError itself", err)
	}
}

func TestTimeoutIsTemporaryAndBounded(t *testing.T) {
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: dnstest.Blackhole(t), Timeout: 200 * time.Millisecond})
	start := time.Now()
	_, err := r.LookupTXT(t.Context(), "example.org")
	elapsed := time.Since(start)
	de, ok := err.(*net.DNSError)
	if !ok || !de.IsTimeout || !de.Temporary() {
		t.Fatalf("err = %#v; want a timeout *net.DNSError", err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("lookup took %v with a 200ms timeout", elapsed)
	}
}

func TestContextCancelStopsLookup(t *testing.T) {
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: dnstest.Blackhole(t), Timeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.LookupMX(ctx, "example.org")
	if err == nil {
		t.Fatal("lookup against a silent server succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("lookup ignored the context deadline: %v", d)
	}
}

func TestTruncatedAnswerRetriesOverTCP(t *testing.T) {
	srv := dnstest.Start(t)
	// 20 records of 200 bytes: over the 1232-byte EDNS0 size, so the UDP
	// answer comes back truncated and only TCP carries it whole.
	for i := range 20 {
		srv.AddTXT("big.example.org", fmt.Sprintf("%02d%s", i, strings.Repeat("x", 198)))
	}
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: time.Second})
	txt, err := r.LookupTXT(t.Context(), "big.example.org")
	if err != nil || len(txt) != 20 {
		t.Fatalf("LookupTXT = %d records, %v; want 20", len(txt), err)
	}
}

func TestInvalidNameIsNotFound(t *testing.T) {
	srv := dnstest.Start(t)
	r := dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: time.Second})
	_, err := r.LookupTXT(t.Context(), strings.Repeat("a", 70)+".example.org")
	de, ok := err.(*net.DNSError)
	if !ok || !de.IsNotFound {
		t.Fatalf("err = %#v; want not found for a label over 63 bytes", err)
	}
	if srv.Queries() != 0 {
		t.Errorf("an invalid name went on the wire")
	}
}
