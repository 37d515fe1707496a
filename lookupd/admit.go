package lookupd

import (
	"net"
	"net/netip"
	"sync"

	"github.com/caliopen/caliopen/internal/allowlist"
)

// Why a connection was refused, as logged and as the metric's label.
const (
	refusedNotAllowed = "not_allowed"    // TCP peer outside AllowedClients
	refusedTotal      = "max_conns"      // MaxConns open over all listeners
	refusedPerClient  = "max_per_client" // MaxConnsPerClient open from that client
)

// admission decides which connections are served: the address allow-list
// and the per-client cap for TCP peers, the total cap for every
// connection. A Unix socket's peers are whoever its file mode lets in.
type admission struct {
	allowed   []netip.Prefix
	perClient int
	slots     chan struct{} // total connection slots, shared by all listeners

	mu     sync.Mutex
	counts map[netip.Addr]int // open connections per client key
}

func newAdmission(cfg Config) *admission {
	return &admission{
		allowed:   cfg.AllowedClients,
		perClient: cfg.MaxConnsPerClient,
		slots:     make(chan struct{}, cfg.MaxConns),
		counts:    map[netip.Addr]int{},
	}
}

// clientKey is what the per-client cap counts by: the IPv4 address, or
// the IPv6 /64 (one host usually holds a whole /64). ok is false for peers
// that are not IP (Unix sockets).
func clientKey(addr net.Addr) (ip, key netip.Addr, ok bool) {
	ta, isTCP := addr.(*net.TCPAddr)
	if !isTCP {
		return netip.Addr{}, netip.Addr{}, false
	}
	ip = ta.AddrPort().Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return ip, p.Addr(), true
	}
	return ip, ip, true
}

// admit reserves the slots for a connection from addr, returning the
// function that releases them, or the reason for refusing it.
func (a *admission) admit(addr net.Addr) (release func(), refused string) {
	ip, key, isIP := clientKey(addr)
	if isIP && !allowlist.Contains(a.allowed, ip) {
		return nil, refusedNotAllowed
	}
	select {
	case a.slots <- struct{}{}:
	default:
		return nil, refusedTotal
	}
	if !isIP {
		return func() { <-a.slots }, ""
	}
	a.mu.Lock()
	if a.counts[key] >= a.perClient {
		a.mu.Unlock()
		<-a.slots
		return nil, refusedPerClient
	}
	a.counts[key]++
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		if a.counts[key]--; a.counts[key] == 0 {
			delete(a.counts, key)
		}
		a.mu.Unlock()
		<-a.slots
	}, ""
}
