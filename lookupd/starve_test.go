package lookupd_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caliopen/caliopen/lookupd"
)

// refusalCounter is a slog handler that counts lookupd's refusal lines
// and the refusals they report.
type refusalCounter struct {
	mu       sync.Mutex
	lines    int
	refusals int64
}

func (h *refusalCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *refusalCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *refusalCounter) WithGroup(string) slog.Handler            { return h }
func (h *refusalCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "lookupd refused connections" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lines++
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "count" {
			h.refusals += a.Value.Int64()
		}
		return true
	})
	return nil
}

func (h *refusalCounter) get() (int, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lines, h.refusals
}

// holdIdle opens n connections to addr from the local address from and
// keeps them open, idle, until the test ends. It returns once the server
// has had time to accept or refuse each.
func holdIdle(t *testing.T, from, addr string, n int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	for i := range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d from %s: %v", i, from, err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// A local client that is not Postfix holds 1,100 idle connections: it gets
// its share (lookupd.max_connections_per_client), the rest are closed at
// once, and Postfix's own lookups (postmap -q, Postfix's socketmap and
// tcp_table clients) still answer. The refusals are logged a bounded
// number of times, with their count.
func TestIdleClientCannotStarvePostfix(t *testing.T) {
	query := postmap(t)
	st := newTestStore(t)
	populate(t, st)
	logs := &refusalCounter{}
	const interval = 300 * time.Millisecond
	e := start(t, st, lookupd.Config{Logger: slog.New(logs), RefusalLogInterval: interval})

	// The other client uses another loopback address, as a second host
	// (or user) would; Postfix's postmap connects from 127.0.0.1.
	const held = 1100
	began := time.Now()
	holdIdle(t, "127.0.0.2", e.sockAddr, held)
	refused := float64(held - lookupd.DefaultMaxConnsPerClient)
	waitMetric(t, e, "caliopen_lookupd_connections_rejected_total", map[string]string{"reason": "max_per_client"}, refused)
	checkGauge(t, e.reg, "caliopen_lookupd_connections", map[string]string{"protocol": "socketmap"}, lookupd.DefaultMaxConnsPerClient)

	for _, table := range []string{"socketmap:inet:" + e.sockAddr + ":mailboxes", "tcp:" + e.tcpAddr[lookupd.MapMailboxes]} {
		if out, stderr, code := query("alice@example.org", table); code != 0 || out != "alice@example.org\n" {
			t.Errorf("postmap -q alice@example.org %s while another client holds %d connections: %q, exit %d, stderr %q",
				table, held, out, code, stderr)
		}
	}

	// Every refusal is counted in the log, in few lines: the first at
	// once, the rest at most one per interval.
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines, n := logs.get()
		if n == int64(refused) {
			elapsed := time.Since(began)
			if max := 2 + int(elapsed/interval); lines > max {
				t.Errorf("%d refusal log lines in %v, want at most %d (one per %v)", lines, elapsed, max, interval)
			}
			t.Logf("%d refusals logged in %d lines over %v", n, lines, elapsed.Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log reports %d refusals in %d lines, want %v", n, lines, refused)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitMetric waits up to 10s for a counter to reach want.
func waitMetric(t *testing.T, e *env, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := metricValue(t, e.reg, name, labels)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A TCP peer outside lookupd.allowed_clients is closed at once, whatever
// it sends.
func TestAllowedClients(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{AllowedClients: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if got := dial(t, e.sockAddr).query(lookupd.MapDomains, "example.org"); got != "OK example.org" {
		t.Fatalf("allowed client: %q", got)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", e.sockAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _ = nc.Write([]byte(netstring("domains example.org")))
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := nc.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("client outside allowed_clients: read %d bytes, err %v; want the connection closed", n, err)
	}
	waitMetric(t, e, "caliopen_lookupd_connections_rejected_total", map[string]string{"reason": "not_allowed"}, 1)
}

// The socketmap on a Unix socket as `caliopen` makes it (mode 0660 in a
// set-group-ID directory of Postfix's group): Postfix's client answers,
// and a local user outside the group cannot open even one connection, let
// alone 1,100.
func TestUnixSocketGroupOnly(t *testing.T) {
	query := postmap(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test must run as root in CI (it connects as nobody)")
		}
		t.Skip("needs root to connect as another user")
	}
	st := newTestStore(t)
	populate(t, st)
	srv, err := lookupd.New(lookupd.Config{Resolver: resolver(t, st), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is 0700: let others reach dir, so that only
	// dir's and the socket's modes decide.
	top, err := os.MkdirTemp("", "lookupd-unix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(top, "caliopen")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o2750); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "socketmap.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeSocketmap(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeSocketmap: %v", err)
		}
	})

	// nobody tries: a shell loop would need a shell; Go's own net.Dial
	// through `go run` would need a toolchain. This test binary is at
	// hand, so it dials as nobody (see TestMain).
	// go test builds the binary in a directory only root can enter.
	bin := filepath.Join(filepath.Dir(dir), "lookupd.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "CALIOPEN_LOOKUPD_DIAL_UNIX="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dialing as nobody: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, "opened 0 of 1100") || !strings.Contains(got, "permission denied") {
		t.Errorf("as nobody: %q, want 0 connections opened, permission denied", got)
	}

	if out, stderr, code := query("alice@example.org", "socketmap:unix:"+path+":mailboxes"); code != 0 || out != "alice@example.org\n" {
		t.Errorf("postmap -q over the Unix socket: %q, exit %d, stderr %q", out, code, stderr)
	}
}

// dialUnixChild opens up to 1,100 connections to path and reports how many
// it could open and the first error.
func dialUnixChild(path string) int {
	var first error
	opened := 0
	for range 1100 {
		c, err := net.Dial("unix", path)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		defer c.Close()
		opened++
	}
	fmt.Printf("opened %d of 1100: %v\n", opened, first)
	return 0
}

func TestMain(m *testing.M) {
	if path := os.Getenv("CALIOPEN_LOOKUPD_DIAL_UNIX"); path != "" {
		os.Exit(dialUnixChild(path))
	}
	os.Exit(m.Run())
}
