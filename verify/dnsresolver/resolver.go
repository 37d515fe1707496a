// Package dnsresolver is a small stub resolver built on github.com/miekg/dns
// that asks one configured server (host:port) and reports failures the way the
// standard library does, as *net.DNSError values.
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
)

// DefaultTimeout bounds one query (UDP, then TCP when truncated) when
// Resolver.Timeout is zero.
const DefaultTimeout = 3 * time.Second

// udpSize is the EDNS0 buffer size we advertise: the DNS flag day 2020 value,
// which avoids IP fragmentation while keeping TCP fallbacks rare.
const udpSize = 1232

// Resolver queries one DNS server. The zero value is not usable: Server must be
// set. A Resolver is safe for concurrent use and holds no mutable state.
type Resolver struct {
	// Server is the address of the DNS server, "host:port" (e.g. "127.0.0.1:53").
	Server string
	// Timeout bounds each query; DefaultTimeout when zero. The context passed
	// to each lookup may shorten it further.
	Timeout time.Duration
}

// New returns a Resolver for server ("host:port"; ":53" is added when the
// port is missing).
func New(server string, timeout time.Duration) *Resolver {
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	return &Resolver{Server: server, Timeout: timeout}
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

// query sends one question and returns the answer RRs of type qtype. A name
// that exists without records of that type is (nil, nil), like NODATA.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn := dns.Fqdn(name)
	if _, ok := dns.IsDomainName(fqdn); !ok || len(fqdn) > 254 {
		// A name that cannot be put on the wire is as absent as NXDOMAIN;
		// it is the sender's record that is broken, not the network.
		return nil, &net.DNSError{Err: "invalid domain name", Name: name, Server: r.Server, IsNotFound: true}
	}

	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()

	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = true
	m.SetEdns0(udpSize, false)

	c := &dns.Client{Net: "udp", UDPSize: udpSize, Timeout: r.timeout()}
	resp, _, err := c.ExchangeContext(ctx, m, r.Server)
	if err == nil && resp.Truncated {
		c = &dns.Client{Net: "tcp", Timeout: r.timeout()}
		resp, _, err = c.ExchangeContext(ctx, m, r.Server)
	}
	if err != nil {
		return nil, r.netError(name, err)
	}

	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: r.Server, IsNotFound: true}
	default:
		// SERVFAIL, REFUSED, …: the server could not answer now. RFC 7208
		// §2.6.6 and RFC 6376 §6.1.2 both call that a temporary error.
		return nil, &net.DNSError{
			Err:         "server answered " + dns.RcodeToString[resp.Rcode],
			Name:        name,
			Server:      r.Server,
			IsTemporary: true,
		}
	}

	var out []dns.RR
	for _, rr := range resp.Answer {
		// A recursive server returns the whole CNAME chain; keeping every RR of
		// the wanted type follows it without re-querying.
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	return out, nil
}

// netError turns a transport failure into a temporary *net.DNSError, keeping
// the timeout flag so that callers can tell "slow" from "unreachable".
func (r *Resolver) netError(name string, err error) *net.DNSError {
	de := &net.DNSError{Err: err.Error(), Name: name, Server: r.Server, IsTemporary: true}
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
				de = &net.DNSError{Err: err.Error(), Name: host, Server: r.Server, IsTemporary: true}
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
		return nil, &net.DNSError{Err: fmt.Sprintf("reverse of %q: %v", addr, err), Name: addr, Server: r.Server, IsNotFound: true}
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
