package allowlist

import (
	"net"
	"net/netip"
	"testing"
)

func TestAllows(t *testing.T) {
	only := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	for _, tc := range []struct {
		prefixes []netip.Prefix
		addr     net.Addr
		want     bool
	}{
		{Loopback, &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, true},
		{Loopback, &net.TCPAddr{IP: net.ParseIP("::1")}, true},
		{Loopback, &net.TCPAddr{IP: net.ParseIP("192.0.2.7")}, false},
		{only, &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7")}, true}, // v4-mapped
		{only, &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, false},
		{nil, &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, false},
		{nil, &net.UnixAddr{Name: "@", Net: "unix"}, true}, // judged by the socket's mode
	} {
		if got := Allows(tc.prefixes, tc.addr); got != tc.want {
			t.Errorf("Allows(%v, %v) = %v, want %v", tc.prefixes, tc.addr, got, tc.want)
		}
	}
}
