// Package allowlist says whether a TCP peer may use a listener: the rule the
// milter and lookupd share for their allowed_clients settings.
package allowlist

import (
	"net"
	"net/netip"
)

// Loopback is the default list: this machine only.
var Loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// Contains reports whether ip (IPv4-mapped addresses as IPv4) is in one of
// the prefixes.
func Contains(prefixes []netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Allows reports whether addr may connect: a TCP peer within prefixes, or
// any other kind of peer (a Unix socket's), whom the socket's permissions
// judge instead.
func Allows(prefixes []netip.Prefix, addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return true
	}
	return Contains(prefixes, ta.AddrPort().Addr())
}
