package api

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientIP is the address of the client of r, for rate limits and logs: the
// TCP peer, unless the peer is one of Config.TrustedProxies. Then it is the
// right-most address of X-Forwarded-For that is not a trusted proxy: each
// proxy appends the address it received from, so only what our own proxies
// appended can be believed, and anything to its left may be forged.
func (s *Server) clientIP(r *http.Request) string {
	peer := parseAddr(r.RemoteAddr)
	if !peer.IsValid() || !s.trusted(peer) {
		return addrString(peer, r.RemoteAddr)
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		list := strings.Split(hops[i], ",")
		for j := len(list) - 1; j >= 0; j-- {
			a := parseAddr(strings.TrimSpace(list[j]))
			if !a.IsValid() {
				// Garbage from whoever is left of our proxies: the last
				// address we can believe is the client.
				return client.String()
			}
			client = a
			if !s.trusted(a) {
				return a.String()
			}
		}
	}
	return client.String()
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseAddr reads an IP address, with or without a port ("[::1]:80",
// "192.0.2.1:80", "::1"), IPv4-mapped IPv6 as IPv4; invalid gives the zero Addr.
func parseAddr(s string) netip.Addr {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}
	}
	return a.Unmap()
}

func addrString(a netip.Addr, raw string) string {
	if a.IsValid() {
		return a.String()
	}
	return raw
}

// netLimitFactor is how many clients' allowance an IPv6 /48 gets, against a
// single client's (/64): one site holds a /48 and may hand out 65,536 /64s.
const netLimitFactor = 5

// loginKeys are the limits one login attempt from ip for user name spends:
// the user name; the address (IPv4) or its /64 and /48 (IPv6).
func (s *Server) loginKeys(ip, name string) []limitKey {
	keys := make([]limitKey, 0, 3)
	a, err := netip.ParseAddr(ip)
	switch {
	case err != nil:
		keys = append(keys, limitKey{s.addrLimiter, ip})
	case a.Unmap().Is4():
		keys = append(keys, limitKey{s.addrLimiter, a.Unmap().String()})
	default:
		p64, _ := a.Prefix(64)
		p48, _ := a.Prefix(48)
		keys = append(keys, limitKey{s.addrLimiter, p64.String()}, limitKey{s.netLimiter, p48.String()})
	}
	return append(keys, limitKey{s.userLimiter, name})
}

func newNetLimiter(cfg Config) *limiter {
	return newLimiter(cfg.LoginAddrBurst*netLimitFactor, cfg.LoginAddrInterval/netLimitFactor, limiterSize)
}
