package lookupd_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/lookupd"
	"github.com/caliopen/caliopen/store"
)

const (
	benchConns = 4    // client connections, like a few busy smtpd processes
	benchUsers = 2000 // mailboxes in the store
)

// BenchmarkSocketmap measures lookupd answering socketmap lookups from
// benchConns persistent connections (each waiting for its reply before the
// next request, as Postfix does) against the embedded store, and in the
// same run a trivial responder that speaks the same protocol without any
// lookup: the ratio is lookupd's share of the raw loopback round-trip rate,
// which factors out the machine and its load.
//
// The request mix is what one RCPT costs Postfix: virtual_mailbox_domains,
// virtual_alias_maps, virtual_mailbox_maps, over hosted, extended and
// unknown addresses.
func BenchmarkSocketmap(b *testing.B) {
	st := newTestStore(b)
	populate(b, st)
	ctx := context.Background()
	for i := range benchUsers {
		u := store.User{ID: uuid.New(), Name: fmt.Sprintf("user%d", i), CreatedAt: time.Now()}
		if err := st.CreateUser(ctx, u); err != nil {
			b.Fatal(err)
		}
		if err := st.AddAddress(ctx, store.Address{Address: fmt.Sprintf("user%d@example.org", i), UserID: u.ID}); err != nil {
			b.Fatal(err)
		}
	}
	var reqs [][]byte
	for i := range 256 {
		u := (i * 7919) % benchUsers
		for _, r := range []string{
			"domains example.org",
			fmt.Sprintf("aliases user%d@example.org", u),
			fmt.Sprintf("mailboxes user%d@example.org", u),
			fmt.Sprintf("mailboxes User%d+tag@example.org", u),
			fmt.Sprintf("aliases nobody%d@other.test", u),
		} {
			reqs = append(reqs, []byte(netstring(r)))
		}
	}

	e := start(b, st, lookupd.Config{})
	baseline := startTrivial(b)

	// Alternate short rounds so load from elsewhere on the machine hits
	// both sides alike.
	const rounds = 8
	var tLookupd, tBaseline, cLookupd, cBaseline time.Duration
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r == rounds-1 {
			n = b.N - n*(rounds-1)
		}
		c0 := cpuTime(b)
		tBaseline += hammer(b, baseline, reqs, n)
		c1 := cpuTime(b)
		tLookupd += hammer(b, e.sockAddr, reqs, n)
		c2 := cpuTime(b)
		cBaseline += c1 - c0
		cLookupd += c2 - c1
	}
	b.StopTimer()

	rate := float64(b.N) / tLookupd.Seconds()
	base := float64(b.N) / tBaseline.Seconds()
	b.ReportMetric(float64(tLookupd.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(rate, "lookups/s")
	b.ReportMetric(base, "baseline_lookups/s")
	b.ReportMetric(rate/base, "ratio")
	// Wall-clock rates depend on what else runs on the machine; CPU time
	// per lookup (this process: clients and server) does much less. It
	// also gives the rate the machine's cores could sustain if idle.
	cpuPer := float64(cLookupd.Nanoseconds()) / float64(b.N) / 1e3
	b.ReportMetric(cpuPer, "cpu-µs/lookup")
	b.ReportMetric(float64(cBaseline.Nanoseconds())/float64(b.N)/1e3, "baseline_cpu-µs/lookup")
	b.ReportMetric(float64(runtime.NumCPU())*1e6/cpuPer, "cpu-bound_lookups/s")
}

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hammer sends n requests to addr over benchConns connections, one
// outstanding request per connection, and returns the wall time.
func hammer(b *testing.B, addr string, reqs [][]byte, n int) time.Duration {
	conns := make([]net.Conn, benchConns)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	began := time.Now()
	for i, c := range conns {
		share := n / benchConns
		if i < n%benchConns {
			share++
		}
		wg.Go(func() {
			br := bufio.NewReader(c)
			buf := make([]byte, 0, 256)
			for j := range share {
				if _, err := c.Write(reqs[(i*31+j)%len(reqs)]); err != nil {
					mu.Lock()
					ferr = err
					mu.Unlock()
					return
				}
				var err error
				if buf, err = readReply(br, buf[:0]); err != nil {
					mu.Lock()
					ferr = err
					mu.Unlock()
					return
				}
				if len(buf) < 2 || (buf[0] != 'O' && buf[0] != 'N') {
					mu.Lock()
					ferr = fmt.Errorf("unexpected reply %q", buf)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(began)
	if ferr != nil {
		b.Fatal(ferr)
	}
	return took
}

// readReply reads one netstring into buf.
func readReply(br *bufio.Reader, buf []byte) ([]byte, error) {
	head, err := br.ReadSlice(':')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(string(head[:len(head)-1]))
	if err != nil {
		return nil, err
	}
	buf = append(buf, make([]byte, n+1)...)
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// startTrivial runs the baseline: a socketmap responder that parses each
// request the same way and answers "OK x" without looking anything up.
func startTrivial(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req := make([]byte, 0, 512)
				out := []byte(netstring("OK x"))
				for {
					var err error
					if req, err = readReply(br, req[:0]); err != nil {
						return
					}
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}
