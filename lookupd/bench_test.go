package lookupd_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/internal/cpustat"
	"github.com/caliopen/caliopen/lookupd"
	"github.com/caliopen/caliopen/store"
)

const benchUsers = 2000 // mailboxes in the store

// benchClient is one client connection's work: keys to look up in one map,
// in turn; found is how many of them must be found.
type benchClient struct {
	table string // the map name after socketmap:inet:ADDR:
	keys  []byte // one key per line
	found int
}

// benchClients splits n lookups over 4 connections, one per map a
// RCPT costs Postfix (virtual_mailbox_domains, virtual_alias_maps,
// virtual_mailbox_maps), over hosted, extended and unknown addresses; all
// found by a responder that finds everything when all is set.
func benchClients(n int, all bool) []benchClient {
	cs := []benchClient{{table: "domains"}, {table: "aliases"}, {table: "mailboxes"}, {table: "mailboxes"}}
	for i := range cs {
		var b bytes.Buffer
		share := n / len(cs)
		if i < n%len(cs) {
			share++
		}
		for j := range share {
			u := (j * 7919) % benchUsers
			var key string
			hit := true
			switch i {
			case 0:
				key = "example.org"
			case 1: // a mailbox is no alias; the unknown address tries the catch-all
				key, hit = fmt.Sprintf("user%d@example.org", u), false
				if j%2 == 1 {
					key = fmt.Sprintf("nobody%d@other.test", u)
				}
			case 2:
				key = fmt.Sprintf("user%d@example.org", u)
			case 3: // an extension, or no such mailbox
				key = fmt.Sprintf("User%d+tag@example.org", u)
				if j%2 == 1 {
					key, hit = fmt.Sprintf("nobody%d@example.org", u), false
				}
			}
			b.WriteString(key)
			b.WriteByte('\n')
			if hit || all {
				cs[i].found++
			}
		}
		cs[i].keys = b.Bytes()
	}
	return cs
}

// BenchmarkSocketmap measures lookupd answering socketmap lookups from
// 4 persistent connections against the embedded store, and in the
// same run a trivial responder that speaks the same protocol without any
// lookup: the ratio is lookupd's share of the raw loopback round-trip rate,
// which factors out the machine and its load.
//
// Two clients, both in processes of their own with blocking I/O, each
// connection waiting for a reply before its next request, as Postfix's
// smtpd and cleanup do:
//
//   - client=blocking: testdata/socketmap-client.c, one thread per
//     connection doing nothing but the protocol, so the figure is lookupd's
//     capacity rather than the client's;
//   - client=postmap: Postfix's own client code (postmap -q - reads keys on
//     its standard input), which costs more per lookup than the server.
func BenchmarkSocketmap(b *testing.B) {
	e := start(b, benchStore(b), lookupd.Config{})
	baseline := startTrivial(b)
	b.Run("client=blocking", func(b *testing.B) { benchSocketmap(b, e.sockAddr, baseline, blockingClient(b)) })
	b.Run("client=postmap", func(b *testing.B) { benchSocketmap(b, e.sockAddr, baseline, postmapClient(b)) })
}

// benchStore is the test store (populate) with benchUsers more mailboxes,
// user0..user1999@example.org.
func benchStore(tb testing.TB) store.Store {
	st := newTestStore(tb)
	populate(tb, st)
	ctx := context.Background()
	for i := range benchUsers {
		u := store.User{ID: uuid.New(), Name: fmt.Sprintf("user%d", i), CreatedAt: time.Now()}
		if err := st.CreateUser(ctx, u); err != nil {
			tb.Fatal(err)
		}
		if err := st.AddAddress(ctx, store.Address{Address: fmt.Sprintf("user%d@example.org", i), UserID: u.ID}); err != nil {
			tb.Fatal(err)
		}
	}
	return st
}

// A hammer runs clients against the socketmap at addr, all at once, checks
// each found what it should, and returns the wall time they took.
type hammer func(tb testing.TB, addr string, clients []benchClient) time.Duration

func benchSocketmap(b *testing.B, lookupdAddr, baselineAddr string, run hammer) {
	// Alternate rounds so load from elsewhere on the machine hits both
	// sides alike.
	const rounds = 4
	var tLookupd, tBaseline, cLookupd, cBaseline time.Duration
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r == rounds-1 {
			n = b.N - n*(rounds-1)
		}
		c0 := machineBusy(b)
		tBaseline += run(b, baselineAddr, benchClients(n, true))
		c1 := machineBusy(b)
		tLookupd += run(b, lookupdAddr, benchClients(n, false))
		c2 := machineBusy(b)
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
	// Wall-clock rates depend on what else runs on the machine; the whole
	// machine's CPU time per lookup (clients and server) does much less.
	b.ReportMetric(float64(cLookupd.Nanoseconds())/float64(b.N)/1e3, "cpu-µs/lookup")
	b.ReportMetric(float64(cBaseline.Nanoseconds())/float64(b.N)/1e3, "baseline_cpu-µs/lookup")
}

// blockingClient builds testdata/socketmap-client.c and returns a hammer
// running it, one thread per client.
func blockingClient(tb testing.TB) hammer {
	dir := tb.TempDir()
	bin := filepath.Join(dir, "socketmap-client")
	if out, err := exec.Command("cc", "-O2", "-pthread", "-o", bin, filepath.Join("testdata", "socketmap-client.c")).CombinedOutput(); err != nil {
		tb.Fatalf("build the socketmap client: %v\n%s", err, out)
	}
	return func(tb testing.TB, addr string, clients []benchClient) time.Duration {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			tb.Fatal(err)
		}
		args := []string{host, port}
		for i, c := range clients {
			var reqs bytes.Buffer
			for key := range bytes.Lines(c.keys) {
				reqs.WriteString(c.table + " ")
				reqs.Write(key)
			}
			f := filepath.Join(dir, fmt.Sprintf("conn%d", i))
			if err := os.WriteFile(f, reqs.Bytes(), 0o600); err != nil {
				tb.Fatal(err)
			}
			args = append(args, f)
		}
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				tb.Fatalf("socketmap client: %v: %s", err, ee.Stderr)
			}
			tb.Fatalf("socketmap client: %v", err)
		}
		lines := strings.Fields(string(out))
		if len(lines) != len(clients)+1 {
			tb.Fatalf("socketmap client printed %q", out)
		}
		for i, c := range clients {
			if lines[i] != strconv.Itoa(c.found) {
				tb.Fatalf("connection %d (%s): %s found, want %d", i, c.table, lines[i], c.found)
			}
		}
		ns, err := strconv.ParseInt(lines[len(clients)], 10, 64)
		if err != nil {
			tb.Fatalf("socketmap client printed %q", out)
		}
		return time.Duration(ns)
	}
}

// postmapClient returns a hammer running one postmap -q - per client.
func postmapClient(tb testing.TB) hammer {
	cfgDir := postmapConfig(tb)
	return func(tb testing.TB, addr string, clients []benchClient) time.Duration {
		var wg sync.WaitGroup
		errs := make(chan error, len(clients))
		began := time.Now()
		for _, c := range clients {
			wg.Go(func() {
				table := "socketmap:inet:" + addr + ":" + c.table
				cmd := exec.Command(postmapPath, "-c", cfgDir, "-q", "-", table)
				cmd.Stdin = bytes.NewReader(c.keys)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				// postmap exits 1 when a key is not found; anything on
				// stderr (a TEMP or PERM answer, a lost connection) fails.
				if stderr.Len() > 0 || (err != nil && cmd.ProcessState.ExitCode() != 1) {
					errs <- fmt.Errorf("postmap -q - %s: %v: %s", table, err, stderr.Bytes())
					return
				}
				if got := bytes.Count(out, []byte("\n")); got != c.found {
					errs <- fmt.Errorf("postmap -q - %s: %d keys found, want %d", table, got, c.found)
				}
			})
		}
		wg.Wait()
		took := time.Since(began)
		close(errs)
		for err := range errs {
			tb.Fatal(err)
		}
		return took
	}
}

// TestBenchClients keeps the benchmark's tools honest: both clients, on a
// few hundred requests, see exactly the answers lookupd and the trivial
// responder give.
func TestBenchClients(t *testing.T) {
	e := start(t, benchStore(t), lookupd.Config{})
	baseline := startTrivial(t)
	for name, run := range map[string]hammer{"blocking": blockingClient(t), "postmap": postmapClient(t)} {
		if d := run(t, e.sockAddr, benchClients(400, false)); d <= 0 {
			t.Errorf("%s: took %v", name, d)
		}
		run(t, baseline, benchClients(400, true))
	}
}

// postmapConfig is a minimal Postfix configuration directory for postmap,
// keeping the host's /etc/postfix out of the benchmark.
func postmapConfig(tb testing.TB) string {
	if _, err := os.Stat(postmapPath); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("Postfix is required in CI: %v", err)
		}
		tb.Skipf("Postfix not installed: %v", err)
	}
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte("compatibility_level = 3.6\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// machineBusy is cpustat.Busy for a benchmark.
func machineBusy(tb testing.TB) time.Duration {
	d, err := cpustat.Busy()
	if err != nil {
		tb.Fatal(err)
	}
	return d
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
func startTrivial(b testing.TB) string {
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
