package lookupd

import (
	"net"
	"net/netip"
	"testing"
)

// The per-client cap counts an IPv6 /64 as one client and an IPv4 address
// as one; Unix socket peers count only against the total; freed slots
// are available again.
func TestAdmission(t *testing.T) {
	a := newAdmission(Config{
		MaxConns: 4, MaxConnsPerClient: 2,
		AllowedClients: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.0.2.0/24")},
	})
	tcp := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 1} }
	admit := func(addr net.Addr, want string) func() {
		t.Helper()
		release, refused := a.admit(addr)
		if refused != want {
			t.Fatalf("admit(%v) refused %q, want %q", addr, refused, want)
		}
		return release
	}
	admit(tcp("198.51.100.1"), refusedNotAllowed)
	r1 := admit(tcp("2001:db8:0:1::1"), "")
	admit(tcp("2001:db8:0:1::2"), "")
	admit(tcp("2001:db8:0:1:ffff::3"), refusedPerClient) // same /64
	admit(tcp("2001:db8:0:2::1"), "")                    // another /64
	admit(&net.UnixAddr{Name: "@", Net: "unix"}, "")     // no per-client cap, no allow-list
	admit(tcp("192.0.2.1"), refusedTotal)
	r1()
	admit(tcp("::ffff:192.0.2.1"), "") // v4-mapped is the IPv4 client
	if n := len(a.slots); n != 4 {
		t.Errorf("%d slots taken, want 4", n)
	}
}
