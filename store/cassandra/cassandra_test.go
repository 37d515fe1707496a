package cassandra_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/cassandra"
	"github.com/caliopen/caliopen/store/cassandra/cassandratest"
	"github.com/caliopen/caliopen/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return cassandratest.Open(t) })
}

// TestUnavailable runs the suite's unavailability checks on a store whose
// session is gone: every method must answer ErrUnavailable, never panic.
// A SetContactHistory whose UPDATE lands after a DeleteContact leaves a row
// with only the history column: reads must not bring the contact back.
func TestContactHistoryAfterDelete(t *testing.T) {
	st := cassandratest.Open(t)
	ctx := t.Context()
	userID, id := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	if err := st.UpdateHistoryColumn(ctx, userID, id, []byte(`{"v":1,"m":[]}`)); err != nil {
		t.Fatal(err)
	}
	if c, err := st.GetContact(ctx, userID, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetContact of a history-only row = %+v, %v; want ErrNotFound", c, err)
	}
	if cs, err := st.ListContacts(ctx, userID); err != nil || len(cs) != 0 {
		t.Errorf("ListContacts with a history-only row = %+v, %v; want none", cs, err)
	}
	if err := st.SetContactHistory(ctx, userID, id, []byte(`{"v":1,"m":[]}`)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetContactHistory on a history-only row = %v; want ErrNotFound", err)
	}
}

func TestUnavailable(t *testing.T) {
	storetest.RunUnavailable(t, func(t *testing.T) store.Store {
		cfg := cassandratest.Config(t)
		st, err := cassandra.Open(t.Context(), cfg, nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		_ = st.Close()
		return st
	})
}

// TestUnavailableCluster checks a store whose cluster went away (every
// connection cut, nothing listening any more) answers ErrUnavailable promptly.
func TestUnavailableCluster(t *testing.T) {
	cfg := cassandratest.Config(t)
	px := newProxy(t, cfg.Hosts[0])
	cfg.Hosts = []string{px.addr()}
	st, err := cassandra.Open(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("Open through proxy: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.Ping(t.Context()); err != nil {
		t.Fatalf("Ping through proxy: %v", err)
	}
	px.stop()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := st.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping with the cluster gone: %v, want ErrUnavailable", err)
	}
	_, err = st.GetUser(ctx, [16]byte{1})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetUser with the cluster gone: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 25*time.Second {
		t.Errorf("answering with the cluster gone took %v", d)
	}
}

func TestOpenUnreachable(t *testing.T) {
	// A port nobody listens on: take one and release it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cfg := cassandra.Config{Hosts: []string{addr}, Keyspace: "caliopen_test", ConnectTimeout: 2 * time.Second}
	st, err := cassandra.Open(ctx, cfg, nil)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open on a closed port: store %v, err %v; want ErrUnavailable", st, err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the host %s", err, addr)
	}
	if err := cassandra.Migrate(ctx, cfg, nil); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Migrate on a closed port: %v, want ErrUnavailable", err)
	}
}

func TestOpenRefusesUnmigratedKeyspace(t *testing.T) {
	cfg := cassandratest.Config(t)
	cfg.Keyspace = "caliopen_never_migrated"
	_, err := cassandra.Open(t.Context(), cfg, nil)
	if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("Open on a keyspace that does not exist: %v, want ErrInvalid telling to migrate", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, cfg := range map[string]cassandra.Config{
		"no hosts":          {},
		"keyspace injected": {Hosts: []string{"127.0.0.1"}, Keyspace: "x; DROP KEYSPACE y"},
		"replication":       {Hosts: []string{"127.0.0.1"}, Replication: "SimpleStrategy"},
		"consistency":       {Hosts: []string{"127.0.0.1"}, Consistency: "MOSTLY"},
	} {
		if _, err := cassandra.Open(t.Context(), cfg, nil); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: Open = %v, want ErrInvalid", name, err)
		}
		if err := cassandra.Migrate(t.Context(), cfg, nil); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: Migrate = %v, want ErrInvalid", name, err)
		}
	}
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return cassandratest.Open(b) })
}

// proxy forwards TCP to a Cassandra node until stopped, then refuses.
type proxy struct {
	t      *testing.T
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	if !strings.Contains(target, ":") {
		target += ":9042"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, l: l, target: target}
	p.wg.Go(p.serve)
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			_ = dst.Close()
			_ = src.Close()
		}
		p.wg.Go(func() { pipe(u, c) })
		p.wg.Go(func() { pipe(c, u) })
	}
}

func (p *proxy) stop() {
	_ = p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// TestReconnectAfterRestart stops a Cassandra node and starts it again with
// scripts/cassandra.sh, checking the store answers ErrUnavailable while it is
// down and recovers by itself once it is back (what the milter relies on to
// turn 4xx back into 250). It runs its own node, in a temporary directory,
// because the shared test node serves other packages' tests meanwhile.
func TestReconnectAfterRestart(t *testing.T) {
	cassandratest.Config(t) // skips, or fails in CI, where Cassandra cannot run
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	ctx := t.Context()
	script := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "../../scripts/cassandra.sh", args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cassandra.sh %v: %v\n%s", args, err, out)
		}
	}
	script("start", dir, port)
	t.Cleanup(func() { _ = exec.Command("../../scripts/cassandra.sh", "stop", dir).Run() })

	cfg := cassandra.Config{Hosts: []string{"127.0.0.1:" + port}, Keyspace: "caliopen_restart", Consistency: "ONE",
		Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}", // one node
		Timeout:     5 * time.Second, ConnectTimeout: 5 * time.Second}
	if err := cassandra.Migrate(ctx, cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	st, err := cassandra.Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.AddDomain(ctx, store.Domain{Name: "restart.example", CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}); err != nil {
		t.Fatalf("AddDomain: %v", err)
	}

	script("stop", dir)
	down, cancel := context.WithTimeout(ctx, 20*time.Second)
	if _, err := st.GetDomain(down, "restart.example"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetDomain with the node down: %v, want ErrUnavailable", err)
	}
	cancel()

	script("start", dir, port)
	deadline := time.Now().Add(90 * time.Second)
	for {
		d, err := st.GetDomain(ctx, "restart.example")
		if err == nil {
			if d.Name != "restart.example" {
				t.Fatalf("after restart: %+v", d)
			}
			break // answered from the data kept across the restart
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover within 90 s of the node's restart: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestConcurrentActivity puts distinct messages into one conversation from
// many goroutines, in shuffled time order: the summary must converge on the
// newest message and the list must show the conversation once, at its place.
func TestConcurrentActivity(t *testing.T) {
	st := cassandratest.Open(t)
	ctx := t.Context()
	uid := uuid.Must(uuid.NewV7())
	if err := st.CreateUser(ctx, store.User{ID: uid, Name: "act-" + uid.String()}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	conv, err := st.GetOrCreateConversation(ctx, store.Conversation{UserID: uid, Key: "k", CreatedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.GetOrCreateConversation(ctx, store.Conversation{UserID: uid, Key: "other", CreatedAt: t0.Add(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	ids := make([]uuid.UUID, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			j := (i * 7) % n // shuffled arrival order
			m, _, err := st.PutMessage(ctx, store.Message{
				UserID: uid, ConversationID: conv.ID, DedupKey: fmt.Sprint("dk-", j), Protocol: "email",
				ReceivedAt: t0.Add(time.Duration(j+1) * time.Second), Excerpt: fmt.Sprint("excerpt ", j),
			})
			ids[j], errs[i] = m.ID, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("PutMessage: %v", err)
		}
	}
	got, err := st.GetConversation(ctx, uid, conv.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastMessageID != ids[n-1] || got.Excerpt != fmt.Sprint("excerpt ", n-1) || !got.LastActivity.Equal(t0.Add(n*time.Second)) ||
		got.MessageCount != n || got.UnreadCount != n {
		t.Errorf("summary after concurrent puts = last %s %q at %v, %d/%d; want %s at %v, %d/%d",
			got.LastMessageID, got.Excerpt, got.LastActivity, got.MessageCount, got.UnreadCount, ids[n-1], t0.Add(n*time.Second), n, n)
	}
	list, next, err := st.ListConversations(ctx, uid, store.Page{Limit: 10})
	if err != nil || next != "" || len(list) != 2 || list[0].ID != other.ID || list[1].ID != conv.ID {
		t.Errorf("list = %v (next %q, %v), want [other, conv] once each", len(list), next, err)
	}

	// A message older than the conversation itself (an import) moves nothing back.
	if _, _, err := st.PutMessage(ctx, store.Message{UserID: uid, ConversationID: other.ID, DedupKey: "old",
		ReceivedAt: t0.Add(-24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	o, err := st.GetConversation(ctx, uid, other.ID)
	if err != nil || !o.LastActivity.Equal(other.CreatedAt) || o.MessageCount != 1 {
		t.Errorf("after an old import: activity %v count %d (%v), want %v and 1", o.LastActivity, o.MessageCount, err, other.CreatedAt)
	}
}
