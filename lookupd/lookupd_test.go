package lookupd_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caliopen/caliopen/lookupd"
	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
)

// populate fills st with the directory every test uses.
func populate(t testing.TB, st store.Store) {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"example.org", "other.test"} {
		must(st.AddDomain(ctx, store.Domain{Name: d, CreatedAt: time.Now()}))
	}
	for name, addrs := range map[string][]string{
		"alice": {"alice@example.org"},
		"bob":   {"bob@example.org", "robert@other.test"},
	} {
		u := store.User{ID: uuid.New(), Name: name, CreatedAt: time.Now()}
		must(st.CreateUser(ctx, u))
		for _, a := range addrs {
			must(st.AddAddress(ctx, store.Address{Address: a, UserID: u.ID}))
		}
	}
	must(st.PutAlias(ctx, store.Alias{Address: "team@example.org",
		Targets: []string{"alice@example.org", "bob@example.org", "friend@remote.test"}}))
	must(st.PutAlias(ctx, store.Alias{Address: "@example.org", Targets: []string{"alice@example.org"}}))
	// Too long for a tcp_table reply (4096), fine for socketmap.
	must(st.PutAlias(ctx, store.Alias{Address: "big@other.test", Targets: targets(300)}))
	// Too long for a socketmap reply (100,000).
	must(st.PutAlias(ctx, store.Alias{Address: "huge@other.test", Targets: targets(6000)}))
}

func targets(n int) []string {
	t := make([]string, n)
	for i := range t {
		t[i] = fmt.Sprintf("member%05d@remote.test", i)
	}
	return t
}

// env is a running lookupd: one socketmap listener and one tcp_table
// listener per map, over a store whose reads can be failed on demand.
type env struct {
	st       *flakyStore
	reg      *prometheus.Registry
	sockAddr string
	tcpAddr  map[string]string
	cancel   context.CancelFunc
	smDone   chan error // the socketmap listener's Serve result
	done     chan error // one value per tcp_table listener when it stops
}

var allMaps = []string{lookupd.MapDomains, lookupd.MapMailboxes, lookupd.MapAliases, lookupd.MapSenders}

func resolver(t testing.TB, st store.Store) *resolve.Resolver {
	t.Helper()
	r, err := resolve.New(resolve.Config{Store: st, Delimiter: resolve.DefaultDelimiter})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func start(t testing.TB, st store.Store, cfg lookupd.Config) *env {
	t.Helper()
	e := &env{st: &flakyStore{Store: st}, reg: prometheus.NewRegistry(), tcpAddr: map[string]string{}}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	cfg.Registerer = e.reg
	cfg.Resolver = resolver(t, e.st)
	srv, err := lookupd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.smDone = make(chan error, 1)
	e.done = make(chan error, len(allMaps))
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ln := listen()
	e.sockAddr = ln.Addr().String()
	go func() { e.smDone <- srv.ServeSocketmap(ctx, ln) }()
	for _, m := range allMaps {
		ln := listen()
		e.tcpAddr[m] = ln.Addr().String()
		go func() { e.done <- srv.ServeTCPTable(ctx, ln, m) }()
	}
	t.Cleanup(func() { e.stop(t) })
	return e
}

// stop shuts the server down and checks every listener returned nil.
func (e *env) stop(t testing.TB) {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	e.wait(t, len(allMaps)+1)
}

// wait checks n listeners return nil within 10s.
func (e *env) wait(t testing.TB, n int) {
	t.Helper()
	for range n {
		var err error
		select {
		case err = <-e.smDone:
		case err = <-e.done:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return within 10s of shutdown")
		}
		if err != nil {
			t.Errorf("Serve returned %v after shutdown, want nil", err)
		}
	}
}

// client is a raw protocol client over TCP.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func netstring(s string) string { return strconv.Itoa(len(s)) + ":" + s + "," }

// readNetstring reads one socketmap reply.
func (c *client) readNetstring() (string, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.br.ReadString(':')
	if err != nil {
		return "", err
	}
	size, err := strconv.Atoi(strings.TrimSuffix(n, ":"))
	if err != nil {
		return "", fmt.Errorf("bad reply length %q", n)
	}
	buf := make([]byte, size+1)
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return "", err
	}
	if buf[size] != ',' {
		return "", fmt.Errorf("reply %q not terminated by ','", buf)
	}
	return string(buf[:size]), nil
}

func (c *client) query(name, key string) string {
	c.t.Helper()
	c.send(netstring(name + " " + key))
	r, err := c.readNetstring()
	if err != nil {
		c.t.Fatalf("socketmap %s %q: %v", name, key, err)
	}
	return r
}

func (c *client) readLine() (string, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return c.br.ReadString('\n')
}

func (c *client) get(key string) string {
	c.t.Helper()
	c.send("get " + key + "\n")
	r, err := c.readLine()
	if err != nil {
		c.t.Fatalf("tcp_table get %q: %v", key, err)
	}
	return r
}

// expectClosed checks the server closes the connection (EOF, or a reset)
// within d, without sending anything more.
func (c *client) expectClosed(d time.Duration) {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	b, err := c.br.ReadByte()
	switch {
	case err == nil:
		c.t.Errorf("read %q, want the connection closed", b)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.t.Errorf("connection still open after %v", d)
	}
}

// lookupCases are answers both protocols must give (socketmap form).
var lookupCases = []struct{ m, key, want string }{
	{lookupd.MapDomains, "example.org", "OK example.org"},
	{lookupd.MapDomains, "EXAMPLE.Org", "OK example.org"},
	{lookupd.MapDomains, "unknown.test", "NOTFOUND "},
	{lookupd.MapMailboxes, "alice@example.org", "OK alice@example.org"},
	{lookupd.MapMailboxes, "Alice@EXAMPLE.org", "OK alice@example.org"},
	{lookupd.MapMailboxes, "alice+news@example.org", "OK alice@example.org"},
	{lookupd.MapMailboxes, "robert@other.test", "OK robert@other.test"},
	{lookupd.MapMailboxes, "nobody@example.org", "NOTFOUND "},
	{lookupd.MapMailboxes, "team@example.org", "NOTFOUND "},
	{lookupd.MapAliases, "team@example.org", "OK alice@example.org,bob@example.org,friend@remote.test"},
	{lookupd.MapAliases, "alice+news@example.org", "OK alice@example.org"},
	{lookupd.MapAliases, "Alice+News@Example.org", "OK alice@example.org"},
	{lookupd.MapAliases, "anyone@example.org", "OK alice@example.org"}, // catch-all
	{lookupd.MapAliases, "alice@example.org", "NOTFOUND "},             // a mailbox, not caught
	{lookupd.MapAliases, "bob@example.org", "NOTFOUND "},
	{lookupd.MapAliases, "anyone@other.test", "NOTFOUND "},
	{lookupd.MapSenders, "alice@example.org", "OK alice"},
	{lookupd.MapSenders, "robert+x@other.test", "OK bob"},
	{lookupd.MapSenders, "team@example.org", "OK alice,bob"},
	{lookupd.MapSenders, "anyone@example.org", "NOTFOUND "}, // catch-all gives no sender right
	{lookupd.MapSenders, "x@unknown.test", "NOTFOUND "},
}

func TestSocketmapLookups(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{})
	c := dial(t, e.sockAddr) // one persistent connection for everything
	for _, tc := range lookupCases {
		if got := c.query(tc.m, tc.key); got != tc.want {
			t.Errorf("socketmap %s %q = %q, want %q", tc.m, tc.key, got, tc.want)
		}
	}
	// A reply just over Postfix's limit is refused, and the connection lives on.
	if got := c.query(lookupd.MapAliases, "huge@other.test"); !strings.HasPrefix(got, "PERM ") {
		t.Errorf("aliases huge@other.test = %.40q…, want PERM (reply too large)", got)
	}
	if got := c.query(lookupd.MapAliases, "big@other.test"); !strings.HasPrefix(got, "OK member00000@remote.test,") {
		t.Errorf("aliases big@other.test = %.40q…, want OK", got)
	}

	// Pipelined requests are answered in order.
	c.send(netstring("domains example.org") + netstring("mailboxes bob@example.org") + netstring("domains nope.test"))
	for _, want := range []string{"OK example.org", "OK bob@example.org", "NOTFOUND "} {
		if got, err := c.readNetstring(); err != nil || got != want {
			t.Errorf("pipelined reply = %q, %v; want %q", got, err, want)
		}
	}

	checkCounter(t, e.reg, "caliopen_lookupd_lookups_total",
		map[string]string{"protocol": "socketmap", "map": "aliases", "result": "found"}, 5)
	checkCounter(t, e.reg, "caliopen_lookupd_lookups_total",
		map[string]string{"protocol": "socketmap", "map": "aliases", "result": "perm"}, 1)
	checkCounter(t, e.reg, "caliopen_lookupd_lookups_total",
		map[string]string{"protocol": "socketmap", "map": "domains", "result": "notfound"}, 2)
}

func TestTCPTableLookups(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{})
	conns := map[string]*client{}
	for _, m := range allMaps {
		conns[m] = dial(t, e.tcpAddr[m])
	}
	for _, tc := range lookupCases {
		want := "500 not found\n"
		if v, ok := strings.CutPrefix(tc.want, "OK "); ok {
			want = "200 " + v + "\n"
		}
		if got := conns[tc.m].get(tc.key); got != want {
			t.Errorf("tcp_table %s get %q = %q, want %q", tc.m, tc.key, got, want)
		}
	}
	al := conns[lookupd.MapAliases]
	// %XX decoding, hex digits in any case.
	for _, key := range []string{"%41lice%2bnews@example.org", "%61lice%2Bnews%40example.org"} {
		if got := al.get(key); got != "200 alice@example.org\n" {
			t.Errorf("get %q = %q, want 200 alice@example.org", key, got)
		}
	}
	// Over 4096 bytes: a temporary error, never a truncated list or a 500.
	if got := al.get("big@other.test"); !strings.HasPrefix(got, "400 ") {
		t.Errorf("get big@other.test = %.60q, want 400 (reply too large)", got)
	}
	// Malformed requests: 400, and the connection stays usable.
	for _, req := range []string{"get bad%zzencoding@example.org\n", "get trunc%4\n", "put a b\n", "GET team@example.org\n", "\n"} {
		al.send(req)
		if got, err := al.readLine(); err != nil || !strings.HasPrefix(got, "400 ") {
			t.Errorf("request %q: reply %q, %v; want 400", req, got, err)
		}
	}
	if got := al.get("team@example.org"); !strings.HasPrefix(got, "200 ") {
		t.Errorf("after malformed requests: %q, want 200", got)
	}
	checkCounter(t, e.reg, "caliopen_lookupd_protocol_errors_total", map[string]string{"protocol": "tcp_table"}, 5)
}

// A value with characters tcp_table must encode is encoded.
func TestTCPTableEncoding(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	ctx := context.Background()
	if err := st.PutAlias(ctx, store.Alias{Address: "odd@example.org", Targets: []string{"100%pure@remote.test", "été@remote.test"}}); err != nil {
		t.Fatal(err)
	}
	e := start(t, st, lookupd.Config{})
	c := dial(t, e.tcpAddr[lookupd.MapAliases])
	if got, want := c.get("odd@example.org"), "200 100%25pure@remote.test,%C3%A9t%C3%A9@remote.test\n"; got != want {
		t.Errorf("get odd@example.org = %q, want %q", got, want)
	}
}

// A store failure is a temporary error on both protocols, never not found.
func TestStoreFailure(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{})
	sm := dial(t, e.sockAddr)
	e.st.down.Store(true)
	for _, m := range allMaps {
		key := "alice@example.org"
		if m == lookupd.MapDomains {
			key = "example.org"
		}
		if got := sm.query(m, key); got != "TEMP lookup failed, try again later" {
			t.Errorf("socketmap %s with store down = %q, want TEMP", m, got)
		}
		if got := dial(t, e.tcpAddr[m]).get(key); got != "400 lookup failed, try again later\n" {
			t.Errorf("tcp_table %s with store down = %q, want 400", m, got)
		}
	}
	e.st.down.Store(false)
	if got := sm.query(lookupd.MapMailboxes, "alice@example.org"); got != "OK alice@example.org" {
		t.Errorf("after recovery = %q, want OK", got)
	}
	checkCounter(t, e.reg, "caliopen_lookupd_lookups_total",
		map[string]string{"protocol": "tcp_table", "map": "senders", "result": "temp"}, 1)
}

func TestSocketmapMalformed(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{MaxRequestSize: 512})

	// Well-framed but meaningless requests: PERM, connection kept.
	c := dial(t, e.sockAddr)
	for _, req := range []string{"nosuchmap alice@example.org", "mailboxes", ""} {
		c.send(netstring(req))
		if got, err := c.readNetstring(); err != nil || !strings.HasPrefix(got, "PERM ") {
			t.Errorf("request %q: reply %q, %v; want PERM", req, got, err)
		}
	}
	if got := c.query(lookupd.MapDomains, "example.org"); got != "OK example.org" {
		t.Errorf("after bad requests: %q, want OK example.org", got)
	}

	// Broken framing: PERM, then the connection is closed.
	for _, raw := range []string{
		"abc",                            // no length
		"5:hello;",                       // wrong terminator
		"-1:x,",                          // sign
		"513:" + strings.Repeat("x", 20), // over MaxRequestSize
		"99999999999999999999:",          // overflowing length
		"0000000000000000000000000",      // endless leading zeros
	} {
		c := dial(t, e.sockAddr)
		c.send(raw)
		if got, err := c.readNetstring(); err != nil || !strings.HasPrefix(got, "PERM ") {
			t.Errorf("raw %.30q: reply %q, %v; want PERM", raw, got, err)
		}
		c.expectClosed(2 * time.Second)
	}

	// The largest request allowed is still served.
	key := strings.Repeat("a", 512-len("mailboxes ")-len("@example.org")) + "@example.org"
	if got := dial(t, e.sockAddr).query(lookupd.MapMailboxes, key); got != "NOTFOUND " {
		t.Errorf("request of exactly MaxRequestSize: %q, want NOTFOUND", got)
	}

	// A client hanging up mid-request does not disturb the server.
	c = dial(t, e.sockAddr)
	c.send("40:mailboxes alice")
	c.c.Close()
	if got := dial(t, e.sockAddr).query(lookupd.MapDomains, "example.org"); got != "OK example.org" {
		t.Errorf("after a truncated request: %q", got)
	}
}

func TestTCPTableOversized(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{MaxRequestSize: 256})
	c := dial(t, e.tcpAddr[lookupd.MapMailboxes])
	c.send("get " + strings.Repeat("a", 300) + "@example.org\n")
	if got, err := c.readLine(); err != nil || !strings.HasPrefix(got, "400 request too large") {
		t.Errorf("oversized: %q, %v; want 400 request too large", got, err)
	}
	c.expectClosed(2 * time.Second)
}

func TestIdleTimeout(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{IdleTimeout: 200 * time.Millisecond})

	c := dial(t, e.sockAddr)
	if got := c.query(lookupd.MapDomains, "example.org"); got != "OK example.org" {
		t.Fatalf("query: %q", got)
	}
	began := time.Now()
	c.expectClosed(3 * time.Second)
	if idle := time.Since(began); idle < 150*time.Millisecond {
		t.Errorf("closed after %v, before the 200ms idle timeout", idle)
	}

	// A client stalling mid-request is cut off too.
	c = dial(t, e.sockAddr)
	c.send("30:mailboxes ali")
	c.expectClosed(3 * time.Second)

	t2 := dial(t, e.tcpAddr[lookupd.MapDomains])
	t2.send("get exa")
	t2.expectClosed(3 * time.Second)
}

func TestMaxConns(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{MaxConns: 2})
	a, b := dial(t, e.sockAddr), dial(t, e.tcpAddr[lookupd.MapDomains])
	if got := a.query(lookupd.MapDomains, "example.org"); got != "OK example.org" {
		t.Fatalf("first connection: %q", got)
	}
	if got := b.get("example.org"); got != "200 example.org\n" {
		t.Fatalf("second connection: %q", got)
	}
	over := dial(t, e.sockAddr)
	over.expectClosed(2 * time.Second)
	checkCounter(t, e.reg, "caliopen_lookupd_connections_rejected_total", map[string]string{"reason": "max_conns"}, 1)
	checkGauge(t, e.reg, "caliopen_lookupd_connections", map[string]string{"protocol": "socketmap"}, 1)

	// A freed slot is available again.
	a.c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial(t, e.sockAddr)
		c.send(netstring("domains example.org"))
		if got, err := c.readNetstring(); err == nil {
			if got != "OK example.org" {
				t.Errorf("after a slot freed: %q", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection accepted after a slot was freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gatedStore holds GetDomain until released, to catch a lookup in flight.
type gatedStore struct {
	store.Store
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) GetDomain(ctx context.Context, name string) (store.Domain, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Store.GetDomain(ctx, name)
}

// Shutdown answers the request in flight, closes idle connections and
// the listeners, and only then returns.
func TestGracefulShutdown(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	g := &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	e := start(t, g, lookupd.Config{})

	busy := dial(t, e.sockAddr)
	idle := dial(t, e.tcpAddr[lookupd.MapMailboxes])
	if got := idle.get("alice@example.org"); got != "200 alice@example.org\n" {
		t.Fatalf("idle connection: %q", got)
	}
	busy.send(netstring("domains example.org"))
	<-g.entered

	e.cancel()
	idle.expectClosed(5 * time.Second)
	e.wait(t, len(allMaps)) // the tcp_table listeners: nothing in flight
	select {
	case err := <-e.smDone:
		t.Fatalf("socketmap Serve returned (%v) while a lookup was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := net.DialTimeout("tcp", e.sockAddr, time.Second); err == nil {
		t.Error("listener still accepts after shutdown began")
	}

	close(g.release)
	if got, err := busy.readNetstring(); err != nil || got != "OK example.org" {
		t.Errorf("in-flight request during shutdown: %q, %v; want OK example.org", got, err)
	}
	busy.expectClosed(5 * time.Second)
	e.wait(t, 1)
	e.cancel = nil // already stopped and checked
}

func TestServeTCPTableUnknownMap(t *testing.T) {
	st := newTestStore(t)
	srv, err := lookupd.New(lookupd.Config{Resolver: resolver(t, st)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ServeTCPTable(context.Background(), ln, "nosuchmap"); err == nil {
		t.Error("ServeTCPTable with an unknown map returned nil")
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener not closed: Accept = %v", err)
	}
}

func TestNewRegistersMetricsOnce(t *testing.T) {
	st := newTestStore(t)
	reg := prometheus.NewRegistry()
	if _, err := lookupd.New(lookupd.Config{Resolver: resolver(t, st), Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	// A second server on the same registry is a configuration error.
	if _, err := lookupd.New(lookupd.Config{Resolver: resolver(t, st), Registerer: reg}); err == nil {
		t.Error("second New on the same registry succeeded; want a registration error")
	}
	if _, err := lookupd.New(lookupd.Config{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			}
		}
	}
	return 0, false
}

func checkCounter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	if got, ok := metricValue(t, reg, name, labels); !ok || got != want {
		t.Errorf("metric %s%v = %v (present %v), want %v", name, labels, got, ok, want)
	}
}

func checkGauge(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	checkCounter(t, reg, name, labels, want)
}

// panicStore panics on one key, as a buggy engine might.
type panicStore struct{ store.Store }

func (p panicStore) GetAlias(ctx context.Context, a string) (store.Alias, error) {
	if a == "boom@example.org" {
		panic("engine bug")
	}
	return p.Store.GetAlias(ctx, a)
}

// A panic in a lookup is a temporary failure for that key; the connection
// and the daemon carry on.
func TestLookupPanic(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	e := start(t, panicStore{st}, lookupd.Config{})
	c := dial(t, e.sockAddr)
	if got := c.query(lookupd.MapAliases, "boom@example.org"); got != "TEMP lookup failed, try again later" {
		t.Errorf("panicking lookup = %q, want TEMP", got)
	}
	if got := c.query(lookupd.MapAliases, "team@example.org"); !strings.HasPrefix(got, "OK ") {
		t.Errorf("next lookup on the same connection = %q, want OK", got)
	}
	if got := dial(t, e.tcpAddr[lookupd.MapAliases]).get("boom@example.org"); got != "400 lookup failed, try again later\n" {
		t.Errorf("tcp_table panicking lookup = %q, want 400", got)
	}
}

// A listener closed from outside ends Serve with an error, and its
// connections are shut down rather than left to idle out.
func TestListenerClosed(t *testing.T) {
	st := newTestStore(t)
	populate(t, st)
	srv, err := lookupd.New(lookupd.Config{Resolver: resolver(t, st), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeSocketmap(context.Background(), ln) }()
	c := dial(t, ln.Addr().String())
	if got := c.query(lookupd.MapDomains, "example.org"); got != "OK example.org" {
		t.Fatalf("query: %q", got)
	}
	ln.Close()
	c.expectClosed(5 * time.Second)
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener was closed")
	}
}
