// Package dnstest runs a real authoritative DNS server (miekg/dns) on
// 127.0.0.1, UDP and TCP on the same random port, for tests that must resolve
// DKIM keys, SPF and DMARC records over the wire.
package dnstest

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/caliopen/caliopen/verify/dnsresolver"
)

// Server is a running authoritative server. Records may be added while it runs.
type Server struct {
	// Addr is "127.0.0.1:port", the same port for UDP and TCP.
	Addr string

	mu      sync.Mutex
	records map[string][]dns.RR // by lowercased FQDN
	queries int
	asked   map[question]int
	delay   time.Duration
	drop    bool
	rcode   int // forced response code, when not RcodeSuccess
}

type question struct {
	name  string
	qtype uint16
}

// Start starts a server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{records: make(map[string][]dns.RR), asked: make(map[question]int)}

	// Bind UDP on a random port, then TCP on the same port; retry if the
	// TCP port happens to be taken.
	var (
		pc net.PacketConn
		ln net.Listener
	)
	for range 20 {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: listen udp: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("dnstest: no port free for both UDP and TCP")
	}
	s.Addr = pc.LocalAddr().String()

	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("dnstest: server did not start")
		}
	}
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
	})
	return s
}

// Add adds records in zone-file syntax, e.g. `example.org. 300 IN A 192.0.2.1`.
func (s *Server) Add(t testing.TB, lines ...string) {
	t.Helper()
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("dnstest: bad record %q: %v", l, err)
		}
		s.AddRR(rr)
	}
}

// AddTXT adds a TXT record, splitting value in 255-byte strings as a zone
// file would (DKIM keys are longer than one string).
func (s *Server) AddTXT(name, value string) {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, value[:255])
		value = value[255:]
	}
	parts = append(parts, value)
	s.AddRR(&dns.TXT{
		Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
		Txt: parts,
	})
}

// AddRR adds one record.
func (s *Server) AddRR(rr dns.RR) {
	name := strings.ToLower(dns.Fqdn(rr.Header().Name))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[name] = append(s.records[name], rr)
}

// Queries returns how many queries the server received.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Asked returns how many queries for name (any case, with or without the
// final dot) and qtype (dns.TypeTXT, …) the server received.
func (s *Server) Asked(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[question{strings.ToLower(dns.Fqdn(name)), qtype}]
}

// SetDelay makes the server wait d before each answer, as an overloaded
// resolver does.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetDrop makes the server read queries and never answer them (on), as a
// resolver dropping queries above its rate limit does, or answer again (off).
func (s *Server) SetDrop(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = on
}

// SetRcode makes every answer carry rcode (dns.RcodeServerFailure, …) and no
// records; dns.RcodeSuccess answers normally again.
func (s *Server) SetRcode(rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode = rcode
}

// ServeDNS answers authoritatively: the records of the asked type, NODATA
// when the name exists with other types only, NXDOMAIN otherwise. A
// negative answer carries the SOA of the closest enclosing zone that has one
// (added with Add), as RFC 2308 §3 requires for it to be cached.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		s.mu.Lock()
		s.queries++
		s.asked[question{name, q.Qtype}]++
		delay, drop, rcode := s.delay, s.drop, s.rcode
		rrs, ok := s.records[name]
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		if len(m.Answer) == 0 {
			if soa := s.soaFor(name); soa != nil {
				m.Ns = append(m.Ns, dns.Copy(soa))
			}
		}
		s.mu.Unlock()
		if drop {
			return
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		switch {
		case rcode != dns.RcodeSuccess:
			m.Rcode, m.Answer, m.Ns = rcode, nil, nil
		case !ok:
			m.Rcode = dns.RcodeNameError
		}
	} else {
		m.Rcode = dns.RcodeFormatError
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
		m.SetEdns0(opt.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		// As a real server does: an answer over the client's UDP size is
		// truncated with TC set, and the client retries over TCP.
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// soaFor returns the SOA of name's closest enclosing zone, nil when none.
// s.mu must be held.
func (s *Server) soaFor(name string) dns.RR {
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		for _, rr := range s.records[name[off:]] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return rr
			}
		}
	}
	return nil
}

// Blackhole returns the address of a UDP socket that reads queries and never
// answers, for timeout tests.
func Blackhole(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dnstest: listen udp: %v", err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// NewResolver returns a dnsresolver.Resolver for cfg (Server: a Server's
// Addr, or Blackhole's), failing the test when cfg is refused.
func NewResolver(t testing.TB, cfg dnsresolver.Config) *dnsresolver.Resolver {
	t.Helper()
	r, err := dnsresolver.New(cfg)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	return r
}
