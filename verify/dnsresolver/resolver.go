// Package dnsresolver is a small stub resolver built on github.com/miekg/dns
// that asks one configured server (host:port) and reports failures the way the
// standard library does, as *net.DNSError values.
//
// It caches answers for their TTL and coalesces concurrent identical queries:
// the milter verifies every message while the SMTP client waits, mail comes
// from few domains, and a resolver that rate-limits us would otherwise turn
// each message into seconds of time-outs.
//
// The error shape matters: the SPF, DKIM and DMARC libraries we use classify
// DNS failures by type-asserting *net.DNSError (IsNotFound ⇒ no record,
// Temporary() ⇒ temperror). Returning anything else, or wrapping it, would turn
// a DNS timeout into a permanent failure.
package dnsresolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// DefaultTimeout bounds one query (UDP, then TCP when truncated) when
// Config.Timeout is zero.
const DefaultTimeout = 3 * time.Second

// DefaultCacheSize is the number of answers the TOML default (dns.cache_size)
// keeps: a few hundred correspondents need a few records each.
const DefaultCacheSize = 10000

// udpSize is the EDNS0 buffer size we advertise: the DNS flag day 2020 value,
// which avoids IP fragmentation while keeping TCP fallbacks rare.
const udpSize = 1232

// Config is what a Resolver needs.
type Config struct {
	// Server is the address of the DNS server, "host:port" (":53" is added
	// when the port is missing). Required.
	Server string
	// Timeout bounds each query; DefaultTimeout when zero. The context passed
	// to each lookup may shorten it further for that caller.
	Timeout time.Duration
	// CacheSize is how many answers are kept, each for its TTL; 0 keeps none.
	CacheSize int
	// Now is the clock for TTLs; nil means time.Now.
	Now func() time.Time
}

// Resolver queries one DNS server, caching answers for their TTL (negative
// answers for their SOA's, RFC 2308) and sending a single query for
// concurrent lookups of the same name and type. It is safe for concurrent use.
type Resolver struct {
	server  string
	timeout time.Duration
	now     func() time.Time
	cache   *cache // nil when caching is off
	flight  singleflight.Group
}

// New returns a Resolver for cfg.
func New(cfg Config) (*Resolver, error) {
	server := strings.TrimSpace(cfg.Server)
	if server == "" {
		return nil, errors.New("dnsresolver: Server is required")
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	if cfg.Timeout < 0 || cfg.CacheSize < 0 {
		return nil, fmt.Errorf("dnsresolver: negative Timeout (%v) or CacheSize (%d)", cfg.Timeout, cfg.CacheSize)
	}
	r := &Resolver{server: server, timeout: cfg.Timeout, now: cfg.Now}
	if r.timeout == 0 {
		r.timeout = DefaultTimeout
	}
	if r.now == nil {
		r.now = time.Now
	}
	if cfg.CacheSize > 0 {
		r.cache = newCache(cfg.CacheSize)
	}
	return r, nil
}

// answer is one query's outcome as shared between coalesced callers.
type answer struct {
	rrs      []dns.RR
	notFound bool
}

// query returns the answer RRs of type qtype for name. A name that exists
// without records of that type is (nil, nil), like NODATA.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn := dns.Fqdn(name)
	if _, ok := dns.IsDomainName(fqdn); !ok || len(fqdn) > 254 {
		// A name that cannot be put on the wire is as absent as NXDOMAIN;
		// it is the sender's record that is broken, not the network.
		return nil, &net.DNSError{Err: "invalid domain name", Name: name, Server: r.server, IsNotFound: true}
	}
	key := cacheKey{name: strings.ToLower(fqdn), qtype: qtype}
	if r.cache != nil {
		if e, ok := r.cache.get(key, r.now()); ok {
			return r.result(name, answer{rrs: e.rrs, notFound: e.notFound}, nil)
		}
	}

	ch := r.flight.DoChan(dns.TypeToString[qtype]+" "+key.name, func() (any, error) {
		// The query outlives the caller that started it, up to the timeout:
		// that caller giving up must not fail the others waiting on it.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
		defer cancel()
		return r.exchange(qctx, key, fqdn)
	})
	select {
	case res := <-ch:
		a, _ := res.Val.(answer)
		return r.result(name, a, res.Err)
	case <-ctx.Done():
		return nil, r.netError(name, ctx.Err())
	}
}

// result turns a shared answer into this caller's values: errors are built
// afresh so that no two callers hold the same *net.DNSError.
func (r *Resolver) result(name string, a answer, err error) ([]dns.RR, error) {
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) {
			c := *de
			c.Name = name
			return nil, &c
		}
		return nil, r.netError(name, err)
	}
	if a.notFound {
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: r.server, IsNotFound: true}
	}
	return a.rrs, nil
}

// exchange sends the question over the wire and caches what the server
// answered (records, NODATA, NXDOMAIN); failures are not cached.
func (r *Resolver) exchange(ctx context.Context, key cacheKey, fqdn string) (answer, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, key.qtype)
	m.RecursionDesired = true
	m.SetEdns0(udpSize, false)

	c := &dns.Client{Net: "udp", UDPSize: udpSize, Timeout: r.timeout}
	resp, _, err := c.ExchangeContext(ctx, m, r.server)
	if err == nil && resp.Truncated {
		c = &dns.Client{Net: "tcp", Timeout: r.timeout}
		resp, _, err = c.ExchangeContext(ctx, m, r.server)
	}
	if err != nil {
		return answer{}, r.netError(fqdn, err)
	}

	var (
		a   answer
		ttl time.Duration
	)
	switch resp.Rcode {
	case dns.RcodeSuccess:
		for _, rr := range resp.Answer {
			// A recursive server returns the whole CNAME chain; keeping every
			// RR of the wanted type follows it without re-querying.
			if rr.Header().Rrtype == key.qtype {
				a.rrs = append(a.rrs, rr)
			}
		}
		if len(a.rrs) > 0 {
			ttl = positiveTTL(resp.Answer)
		} else {
			ttl = negativeTTL(resp.Ns)
		}
	case dns.RcodeNameError:
		a.notFound = true
		ttl = negativeTTL(resp.Ns)
	default:
		// SERVFAIL, REFUSED, …: the server could not answer now. RFC 7208
		// §2.6.6 and RFC 6376 §6.1.2 both call that a temporary error.
		return answer{}, &net.DNSError{
			Err:         "server answered " + dns.RcodeToString[resp.Rcode],
			Name:        fqdn,
			Server:      r.server,
			IsTemporary: true,
		}
	}
	if r.cache != nil && ttl > 0 {
		r.cache.put(entry{key: key, rrs: a.rrs, notFound: a.notFound, expires: r.now().Add(ttl)})
	}
	return a, nil
}

// netError turns a transport failure into a temporary *net.DNSError, keeping
// the timeout flag so that callers can tell "slow" from "unreachable".
func (r *Resolver) netError(name string, err error) *net.DNSError {
	de := &net.DNSError{Err: err.Error(), Name: name, Server: r.server, IsTemporary: true}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		de.IsTimeout = true
	}
	return de
}

// LookupTXT returns the TXT records of name, each record's strings joined
// (as net.LookupTXT does: DKIM keys are routinely split in 255-byte strings).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupMX returns the MX records of name in the order received.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA records of host. It fails only when both
// queries fail; a temporary failure of either wins over "not found" so that a
// half-answered lookup is never mistaken for a missing host.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	var (
		out  []net.IPAddr
		errs []*net.DNSError
	)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, qt)
		if err != nil {
			var de *net.DNSError
			if !errors.As(err, &de) {
				de = &net.DNSError{Err: err.Error(), Name: host, Server: r.server, IsTemporary: true}
			}
			errs = append(errs, de)
			continue
		}
		for _, rr := range rrs {
			switch a := rr.(type) {
			case *dns.A:
				out = append(out, net.IPAddr{IP: a.A})
			case *dns.AAAA:
				out = append(out, net.IPAddr{IP: a.AAAA})
			}
		}
	}
	for _, de := range errs {
		if de.Temporary() {
			return nil, de
		}
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, errs[0]
	}
	return out, nil
}

// LookupAddr returns the PTR names of addr (an IP address in text form).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: fmt.Sprintf("reverse of %q: %v", addr, err), Name: addr, Server: r.server, IsNotFound: true}
	}
	rrs, err := r.query(ctx, arpa, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}
