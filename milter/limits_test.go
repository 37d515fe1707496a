package milter

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caliopen/caliopen/internal/postfixtest"
)

// expectClosed checks the server closes c within d.
func expectClosed(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read %d bytes, err %v: want the connection closed within %v", n, err, d)
	}
}

// With milter.max_connections open, a new connection is closed at once and
// Postfix tempfails that session (milter_default_action); once a slot is
// free, mail flows again.
func TestMaxConnsTempfails(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	addr := startMilter(t, Config{Ingester: rec, Registerer: reg, MaxConns: 1})
	pf := startPostfix(t, addr)
	ctx := testCtx(t)
	msg := postfixtest.Message{From: "zoe@example.net", To: []string{"bob@example.org"}, Raw: []byte("Subject: x\r\n\r\nx\r\n")}

	hog, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hog.Close()
	// The hog holds the only slot once the milter has accepted it.
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, reg, "caliopen_milter_connections", "") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("milter did not accept the first connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{}, msg)
	if err != nil {
		t.Fatal(err)
	}
	if tr := s.Transactions[0]; tr.Accepted() || !strings.HasPrefix(firstRefusal(tr).String(), "4") {
		t.Fatalf("with every milter slot taken: %+v, want a 4xx", tr)
	}
	if v := metricValue(t, reg, "caliopen_milter_connections_refused_total", ""); v < 1 {
		t.Errorf("refused metric = %v, want ≥ 1", v)
	}

	hog.Close()
	deadline = time.Now().Add(30 * time.Second)
	for {
		s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{}, msg)
		if err != nil {
			t.Fatal(err)
		}
		if s.Transactions[0].Accepted() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the slot was freed: %+v", s.Transactions[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(rec.got()); n != 1 {
		t.Errorf("Ingest called %d times, want 1", n)
	}
}

func firstRefusal(tr postfixtest.Transaction) postfixtest.Reply {
	for _, r := range append([]postfixtest.Reply{tr.Mail}, append(tr.Rcpt, tr.Data, tr.Final)...) {
		if r.Code >= 400 {
			return r
		}
	}
	return postfixtest.Reply{}
}

// A connection on which Postfix sends nothing for milter.idle_timeout is
// closed.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	addr := startMilter(t, Config{Ingester: &recorder{}, IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	began := time.Now()
	expectClosed(t, c, 5*time.Second)
	if d := time.Since(began); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before the 200ms idle timeout", d)
	}
}

// A message that would pass milter.max_bytes_in_flight while another is
// being stored gets 451 4.3.2; once the first is stored, its retry is
// accepted, and the budget is all given back.
func TestBudgetTempfails(t *testing.T) {
	t.Parallel()
	rec := &recorder{gate: make(chan struct{}), seen: make(chan struct{}, 2)}
	reg := prometheus.NewRegistry()
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec, Registerer: reg, MaxMessageBytes: 100_000, MaxBytesInFlight: 200_000}))
	ctx := testCtx(t)
	msg := func(n int) postfixtest.Message {
		raw := fmt.Appendf(nil, "Subject: %d\r\nMessage-ID: <b%d@example.net>\r\n\r\n", n, n)
		raw = append(raw, bytes.Repeat([]byte(strings.Repeat("b", 78)+"\r\n"), 800)...) // 64 KB: 128 KB of budget
		return postfixtest.Message{From: "zoe@example.net", To: []string{"bob@example.org"}, Raw: raw}
	}
	first := make(chan postfixtest.Session, 1)
	go func() {
		s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{}, msg(1))
		if err != nil {
			t.Error(err)
		}
		first <- s
	}()
	<-rec.seen // the first is being stored, holding its budget
	s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{}, msg(2))
	if err != nil {
		t.Fatal(err)
	}
	if f := s.Transactions[0].Final; f.Code != 451 || !strings.HasPrefix(f.Text, "4.3.2 ") {
		t.Fatalf("second message while the first holds the budget: %v, want 451 4.3.2", f)
	}
	if v := metricValue(t, reg, "caliopen_milter_messages_total", "over_budget"); v != 1 {
		t.Errorf("over_budget metric = %v, want 1", v)
	}
	close(rec.gate)
	if s := <-first; len(s.Transactions) != 1 || !s.Transactions[0].Accepted() {
		t.Fatalf("first message: %+v", s.Transactions)
	}
	s, err = postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{}, msg(2))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Transactions[0].Accepted() {
		t.Fatalf("retry of the second message: %v", s.Transactions[0].Final)
	}
	if calls := rec.got(); len(calls) != 2 {
		t.Errorf("Ingest got %d messages, want 2", len(calls))
	}
	if v := metricValue(t, reg, "caliopen_milter_bytes_in_flight", ""); v != 0 {
		t.Errorf("bytes in flight after both messages = %v, want 0", v)
	}
}

// Only milter.allowed_clients may speak the milter protocol over TCP: a
// peer outside the list is closed at once, one inside it is served.
func TestAllowedClients(t *testing.T) {
	t.Parallel()
	addr := startMilter(t, Config{Ingester: &recorder{},
		AllowedClients: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	other, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	expectClosed(t, other, 5*time.Second)

	allowed, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer allowed.Close()
	_ = allowed.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := allowed.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("allowed client: read %d bytes, err %v; want the connection kept open, waiting for Postfix", n, err)
	}
}
