package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/caliopen/caliopen/api"
	"github.com/caliopen/caliopen/internal/config"
	"github.com/caliopen/caliopen/store"
)

// Every setting of api.Config comes from a key of the api section: set each
// key to a value that is not its default and find it in the API's Config.
func TestAPIConfigFromTOML(t *testing.T) {
	cfg, err := config.Load("", nil, []string{
		"api.token_ttl=100h", "api.token_idle=5h", "api.max_body=3MB", "api.outbound_authenticated=true",
		"api.login.user_burst=7", "api.login.user_interval=2m", "api.login.addr_burst=9", "api.login.addr_interval=11s",
		"api.login.max_concurrent=2", "api.send.burst=150", "api.send.interval=1m",
		"api.events.heartbeat=13s", "api.events.max_streams_per_user=3", "api.events.max_streams=40",
		"api.submission.helo_name=mx.example.org", "api.submission.timeout=17s",
		"api.trusted_proxies=10.0.0.0/8, 2001:db8::1",
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	got, err := a.apiConfig(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := api.Config{
		Logger: got.Logger, Sender: got.Sender,
		TokenTTL: 100 * time.Hour, TokenIdle: 5 * time.Hour, MaxBody: 3 << 20, OutboundAuthenticated: true,
		LoginUserBurst: 7, LoginUserInterval: 2 * time.Minute, LoginAddrBurst: 9, LoginAddrInterval: 11 * time.Second,
		MaxConcurrentLogins: 2, SendBurst: 150, SendInterval: time.Minute,
		Heartbeat: 13 * time.Second, MaxStreamsPerUser: 3, MaxStreams: 40,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("api.Config from the configuration:\n got %+v\nwant %+v", got, want)
	}
	// A setting added to api.Config must be wired too: none is left zero.
	v := reflect.ValueOf(got)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		switch k := f.Type.Kind(); {
		case !f.IsExported(), k == reflect.Interface, k == reflect.Pointer, k == reflect.Func:
			continue // dependencies, not settings
		}
		if v.Field(i).IsZero() {
			t.Errorf("api.Config.%s is not set from any configuration key", f.Name)
		}
	}
	snd := reflect.ValueOf(got.Sender).Elem().FieldByName("cfg")
	if snd.FieldByName("LocalName").String() != "mx.example.org" || snd.FieldByName("Timeout").Int() != int64(17*time.Second) {
		t.Errorf("submission settings not wired: %+v", snd)
	}
}

// The API's HTTP server drops a client that is slow to send its headers or
// idles on a kept-alive connection, but keeps an event stream open well past
// its read, write and idle time-outs.
func TestAPIHTTPTimeouts(t *testing.T) {
	cfg, err := config.Load("", []string{"CALIOPEN_DATA_DIR=" + t.TempDir()}, []string{
		"api.read_header_timeout=300ms", "api.read_timeout=500ms", "api.write_timeout=500ms",
		"api.idle_timeout=500ms", "api.events.heartbeat=100ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := a.openStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	uid := uuid.Must(uuid.NewV7())
	if err := st.CreateUser(ctx, store.User{ID: uid, Name: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	tok := strings.Repeat("A", 43) // a bearer token is 43 base64url characters
	sum := sha256.Sum256([]byte(tok))
	if err := st.PutToken(ctx, store.Token{Hash: hex.EncodeToString(sum[:]), UserID: uid, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	acfg, err := a.apiConfig(st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, gctx := errgroup.WithContext(ctx)
	serveHTTP(&runtime{store: st, group: g, ctx: gctx}, "api", ln, srv.Echo(), a.apiTimeouts())
	defer func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Error(err)
		}
		st.Close()
	}()
	addr := ln.Addr().String()

	// closedWithin reads until the server closes the connection.
	closedWithin := func(c net.Conn, max time.Duration) time.Duration {
		start := time.Now()
		c.SetReadDeadline(start.Add(max))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("connection still open after %v: %v", max, err)
		}
		return time.Since(start)
	}

	// Headers that never end.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprint(slow, "GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n")
	if d := closedWithin(slow, 3*time.Second); d < 200*time.Millisecond {
		t.Errorf("slow headers cut after %v, before the 300ms time-out", d)
	}

	// A kept-alive connection left idle.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprint(idle, "GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
	br := bufio.NewReader(idle)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /me: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle kept-alive connection: %v, want closed by the server", err)
	}

	// The event stream outlives every time-out.
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err = http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /events: %v %v", res, err)
	}
	defer res.Body.Close()
	lines := bufio.NewScanner(res.Body)
	start, beats := time.Now(), 0
	for time.Since(start) < 2*time.Second && lines.Scan() {
		if lines.Text() == ": heartbeat" {
			beats++
		}
	}
	if time.Since(start) < 2*time.Second || beats < 10 {
		t.Errorf("event stream ended after %v with %d heartbeats (%v), want it open for 2s, 4 times every time-out",
			time.Since(start).Round(time.Millisecond), beats, lines.Err())
	}
}
