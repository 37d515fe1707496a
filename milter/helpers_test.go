package milter

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/internal/postfixtest"
)

// recorder is the milter's neighbour: an Ingester that keeps what it got.
type recorder struct {
	mu    sync.Mutex
	calls []call
	err   error         // returned by Ingest when set
	gate  chan struct{} // when set, Ingest waits for it to close
	seen  chan struct{} // when set, receives one value per Ingest entry
}

type call struct {
	env ingest.Envelope
	raw []byte
}

func (r *recorder) Ingest(ctx context.Context, env ingest.Envelope, raw []byte) (ingest.Result, error) {
	r.mu.Lock()
	gate, seen := r.gate, r.seen
	r.mu.Unlock()
	if seen != nil {
		seen <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ingest.Result{}, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Keep a copy: the milter may reuse nothing today, but the test must
	// not depend on that.
	r.calls = append(r.calls, call{env: env, raw: append([]byte(nil), raw...)})
	return ingest.Result{}, r.err
}

func (r *recorder) setErr(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

func (r *recorder) got() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// startMilter serves s on a free loopback port until the test ends and
// checks that Serve then returns nil.
func startMilter(t testing.TB, s Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startMilterOn(t, s, ln)
	return ln.Addr().String()
}

// listenUnix listens on a Unix socket at path as `caliopen` does: mode 0660,
// reachable by the group of its (set-group-ID) directory.
func listenUnix(t testing.TB, path string) net.Listener {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		t.Fatal(err)
	}
	return ln
}

// mustNew builds a Server from cfg, logging warnings to the test.
func mustNew(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startMilterOn serves a Server built from cfg on ln until the test ends.
func startMilterOn(t testing.TB, cfg Config, ln net.Listener) {
	t.Helper()
	s := mustNew(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("Serve did not return after cancel")
		}
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startPostfix runs Postfix with contrib/postfix included as shipped, its
// ports pointed at milterAddr and at a stand-in lookupd hosting example.org.
// extra main.cf lines come last and win.
func startPostfix(t testing.TB, milterAddr string, extra ...string) *postfixtest.Instance {
	t.Helper()
	postfixtest.Require(t)
	return postfixtest.Start(t, postfixtest.Options{
		Include: &postfixtest.Include{MilterAddr: milterAddr, LookupdAddr: startSocketmap(t)},
		Main:    extra,
	})
}

// startSocketmap is a stand-in for lookupd (its own tests use the real
// one): example.org is hosted with every mailbox but nobody@, no aliases,
// no senders.
func startSocketmap(t testing.TB) string {
	t.Helper()
	return serveLoopback(t, serveSocketmap)
}

func serveSocketmap(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := readNetstring(br)
		if err != nil {
			return
		}
		name, key, _ := strings.Cut(req, " ")
		reply := "NOTFOUND "
		switch {
		case name == "domains" && key == "example.org":
			reply = "OK example.org"
		case name == "mailboxes" && strings.HasSuffix(key, "@example.org") && key != "nobody@example.org":
			reply = "OK " + key
		}
		if _, err := fmt.Fprintf(c, "%d:%s,", len(reply), reply); err != nil {
			return
		}
	}
}

func readNetstring(br *bufio.Reader) (string, error) {
	l, err := br.ReadString(':')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(strings.TrimSuffix(l, ":"))
	if err != nil || n < 0 || n > 100000 {
		return "", errors.New("bad netstring length")
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(br, buf); err != nil {
		return "", err
	}
	if buf[n] != ',' {
		return "", errors.New("bad netstring end")
	}
	return string(buf[:n]), nil
}

// metricValue reads one counter or gauge from reg ("" label matches none).
func metricValue(t testing.TB, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := outcome == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "outcome" && lp.GetValue() == outcome {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// startSASL is a stand-in for Dovecot's authentication service (Postfix's
// smtpd_sasl_type = dovecot, over TCP): it accepts PLAIN for alice/secret.
// It speaks just enough of Dovecot's auth protocol (version 1.2) for Postfix.
func startSASL(t testing.TB) string {
	t.Helper()
	return serveLoopback(t, serveSASL)
}

// serveLoopback runs serve on every connection to a fresh loopback
// listener, closed when the test ends, and returns its address.
func serveLoopback(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

func serveSASL(c net.Conn) {
	defer c.Close()
	if _, err := io.WriteString(c, "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\t00\nDONE\n"); err != nil {
		return
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if f[0] != "AUTH" || len(f) < 3 {
			continue // VERSION, CPID
		}
		id, reply := f[1], "FAIL\t"+f[1]
		for _, p := range f[3:] {
			if resp, ok := strings.CutPrefix(p, "resp="); ok {
				if dec, err := base64.StdEncoding.DecodeString(resp); err == nil && string(dec) == "\x00alice\x00secret" {
					reply = "OK\t" + id + "\tuser=alice"
				}
			}
		}
		if _, err := io.WriteString(c, reply+"\n"); err != nil {
			return
		}
	}
}
