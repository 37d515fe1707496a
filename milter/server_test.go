package milter

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNewNeedsIngester(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Ingester") {
		t.Fatalf("New without an Ingester = %v, want an error naming Ingester", err)
	}
}

// Two listeners on one registry count into the same series instead of
// failing on duplicate registration.
func TestServeTwiceOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { errs <- mustNew(t, Config{Ingester: &recorder{}, Registerer: reg}).Serve(ctx, ln) }()
	}
	// Both are serving (or failed at once): give a failure time to show.
	select {
	case err := <-errs:
		t.Fatalf("Serve returned early: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

// A connection that never finishes a message is closed at shutdown; Serve
// does not wait ShutdownTimeout for it.
func TestShutdownClosesIdleConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mustNew(t, Config{Ingester: &recorder{}, ShutdownTimeout: time.Minute}).Serve(ctx, ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Let Serve accept it before shutting down.
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve waited for an idle connection")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	// The server closed our connection.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes from a connection the server should have closed", n)
	}
}
