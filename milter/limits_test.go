package milter

import (
	"errors"
	"net"
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
