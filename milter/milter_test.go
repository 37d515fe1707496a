package milter

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/internal/postfixtest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// awkwardMessage has what tends to get lost between SMTP and a milter:
// 8-bit bytes (UTF-8 and a bare Latin-1 byte), a header without a space
// after the colon and one with two, a folded header, a 3000-byte header
// line and a 5000-byte body line (both past Postfix's 2048-byte
// line_length_limit), lines starting with a dot, and a body spanning several
// 64 KB milter chunks.
func awkwardMessage() []byte {
	var b bytes.Buffer
	b.WriteString("From: Zoë <zoe@example.net>\r\n")
	b.WriteString("To: bob@example.org\r\n")
	b.WriteString("Subject: =?utf-8?q?caf=C3=A9?= et caf\xc3\xa9 brut\r\n")
	b.WriteString("X-Tight:no-space\r\n")
	b.WriteString("X-Wide:  two spaces\r\n")
	b.WriteString("X-Folded: first\r\n\tsecond\r\n   third\r\n")
	b.WriteString("X-Long: " + strings.Repeat("h", 3000) + "\r\n")
	b.WriteString("Message-ID: <awkward@example.net>\r\n")
	b.WriteString("\r\n")
	b.WriteString("caf\xe9 latin-1, caf\xc3\xa9 utf-8\r\n")
	b.WriteString(".a line with a leading dot\r\n")
	b.WriteString("..and two\r\n")
	b.WriteString(strings.Repeat("L", 5000) + "\r\n")
	for i := 0; b.Len() < 200_000; i++ {
		fmt.Fprintf(&b, "line %06d %s\r\n", i, strings.Repeat("x", 60))
	}
	return b.Bytes()
}

func TestRawBytesAndEnvelope(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec, Registerer: reg}))
	ctx := testCtx(t)

	raw := awkwardMessage()
	to := []string{"bob@example.org", "Carol+tag@example.org"}
	s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{Helo: "sender.example.net"},
		postfixtest.Message{From: "zoe@example.net", To: to, Raw: raw})
	if err != nil {
		t.Fatal(err)
	}
	tr := s.Transactions[0]
	if !tr.Accepted() {
		t.Fatalf("not accepted: %+v", tr)
	}
	calls := rec.got()
	if len(calls) != 1 {
		t.Fatalf("Ingest called %d times, want 1", len(calls))
	}
	got := calls[0]
	if !bytes.Equal(got.raw, raw) {
		t.Errorf("raw differs: got %d bytes, want %d; first difference at %d:\n got %q\nwant %q",
			len(got.raw), len(raw), firstDiff(got.raw, raw), excerpt(got.raw, firstDiff(got.raw, raw)), excerpt(raw, firstDiff(got.raw, raw)))
	}
	e := got.env
	if e.MailFrom != "zoe@example.net" || !slices.Equal(e.Recipients, to) {
		t.Errorf("envelope from %q to %q, want %q to %q", e.MailFrom, e.Recipients, "zoe@example.net", to)
	}
	if e.ClientAddr != "127.0.0.1" || e.Helo != "sender.example.net" || e.ClientName != "unknown" {
		t.Errorf("client %q name %q helo %q", e.ClientAddr, e.ClientName, e.Helo)
	}
	if e.QueueID == "" || e.QueueID != tr.QueueID() {
		t.Errorf("queue id %q, Postfix said %q", e.QueueID, tr.QueueID())
	}
	if e.TLSVersion != "" || e.TLSCipher != "" || e.TLSBits != 0 {
		t.Errorf("clear-text hop recorded TLS %q %q %d", e.TLSVersion, e.TLSCipher, e.TLSBits)
	}
	if e.ReceivedAt.IsZero() || e.Protocol != "email" {
		t.Errorf("received at %v protocol %q", e.ReceivedAt, e.Protocol)
	}
	// Postfix goes on to deliver (to discard:, as contrib/postfix says).
	if err := pf.WaitLog(ctx, tr.QueueID()+": to=<bob@example.org>, relay=none"); err != nil {
		t.Error(err)
	}
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Error(err)
	}
	if v := metricValue(t, reg, "caliopen_milter_messages_total", "accepted"); v != 1 {
		t.Errorf("accepted metric = %v, want 1", v)
	}
	if v := metricValue(t, reg, "caliopen_milter_accepted_bytes_total", ""); v != float64(len(raw)) {
		t.Errorf("bytes metric = %v, want %d", v, len(raw))
	}
	if v := metricValue(t, reg, "caliopen_milter_ingest_duration_seconds", ""); v != 1 {
		t.Errorf("latency observations = %v, want 1", v)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func excerpt(b []byte, at int) []byte {
	return b[max(0, at-40):min(len(b), at+40)]
}

func TestTLSAndTwoMessagesOnOneConnection(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec}))
	ctx := testCtx(t)

	msg := func(n int) postfixtest.Message {
		return postfixtest.Message{
			From: "zoe@example.net", To: []string{fmt.Sprintf("u%d@example.org", n)},
			Raw: []byte(fmt.Sprintf("Subject: %d\r\nMessage-ID: <%d@example.net>\r\n\r\nbody %d\r\n", n, n, n)),
		}
	}
	s, err := postfixtest.SendMail(ctx, pf.SMTPAddr,
		postfixtest.SendOptions{Helo: "tls.example.net", TLS: pf.ClientTLSConfig()}, msg(1), msg(2))
	if err != nil {
		t.Fatal(err)
	}
	calls := rec.got()
	if len(calls) != 2 {
		t.Fatalf("Ingest called %d times, want 2 (session %+v)", len(calls), s)
	}
	for i, c := range calls {
		if !s.Transactions[i].Accepted() {
			t.Errorf("message %d: %v", i+1, s.Transactions[i].Final)
		}
		e := c.env
		if e.TLSVersion != "TLSv1.3" || e.TLSCipher == "" || e.TLSBits < 128 {
			t.Errorf("message %d: TLS %q %q %d, want TLSv1.3 with a cipher", i+1, e.TLSVersion, e.TLSCipher, e.TLSBits)
		}
		if e.ClientAddr != "127.0.0.1" || e.Helo != "tls.example.net" {
			t.Errorf("message %d: client %q helo %q", i+1, e.ClientAddr, e.Helo)
		}
		if want := fmt.Sprintf("u%d@example.org", i+1); !slices.Equal(e.Recipients, []string{want}) {
			t.Errorf("message %d: recipients %q, want only %q", i+1, e.Recipients, want)
		}
		if e.QueueID != s.Transactions[i].QueueID() {
			t.Errorf("message %d: queue id %q, Postfix said %q", i+1, e.QueueID, s.Transactions[i].QueueID())
		}
	}
	if calls[0].env.QueueID == calls[1].env.QueueID {
		t.Errorf("both messages have queue id %q", calls[0].env.QueueID)
	}
}

func TestIngestErrorTempfails(t *testing.T) {
	t.Parallel()
	rec := &recorder{err: errors.New("store unavailable: test")}
	reg := prometheus.NewRegistry()
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec, Registerer: reg}))
	ctx := testCtx(t)

	c, err := postfixtest.Dial(ctx, pf.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Hello("retry.example.net"); err != nil {
		t.Fatal(err)
	}
	raw := []byte("Subject: fails\r\n\r\nbody\r\n")
	tr, err := c.Send("zoe@example.net", []string{"bob@example.org"}, raw)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Data.Code != 354 || tr.Final.Code != 451 || !strings.HasPrefix(tr.Final.Text, "4.3.0 ") {
		t.Fatalf("DATA %v, end of data %v; want 354 then 451 4.3.0", tr.Data, tr.Final)
	}
	// Not queued: Postfix logs the milter's verdict and never "queued as".
	if err := pf.WaitLog(ctx, "milter-reject: END-OF-MESSAGE"); err != nil {
		t.Error(err)
	}
	if n, err := pf.QueueCount(); err != nil || n != 0 {
		t.Errorf("queue holds %d messages (%v), want 0", n, err)
	}
	if strings.Contains(pf.Log(), "status=sent") {
		t.Error("a tempfailed message was delivered")
	}

	// The sender retries on the same connection; the facts are still there.
	rec.setErr(nil)
	tr, err = c.Send("zoe@example.net", []string{"bob@example.org"}, raw)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Accepted() {
		t.Fatalf("retry: %v", tr.Final)
	}
	calls := rec.got()
	if len(calls) != 2 || calls[1].env.Helo != "retry.example.net" || calls[1].env.ClientAddr != "127.0.0.1" {
		t.Fatalf("after a 451, calls %d, last envelope %+v", len(calls), calls[len(calls)-1].env)
	}
	if v := metricValue(t, reg, "caliopen_milter_messages_total", "tempfailed"); v != 1 {
		t.Errorf("tempfailed metric = %v, want 1", v)
	}
	if err := c.Quit(); err != nil {
		t.Error(err)
	}
}

func TestIngestPanicTempfails(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, startMilter(t, Config{Ingester: panicker{}}))
	s, err := postfixtest.SendMail(testCtx(t), pf.SMTPAddr, postfixtest.SendOptions{},
		postfixtest.Message{From: "zoe@example.net", To: []string{"bob@example.org"}, Raw: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if f := s.Transactions[0].Final; f.Code != 451 || !strings.HasPrefix(f.Text, "4.3.0 ") {
		t.Fatalf("end of data %v, want 451 4.3.0", f)
	}
}

type panicker struct{}

func (panicker) Ingest(context.Context, ingest.Envelope, []byte) (ingest.Result, error) {
	panic("ingester bug")
}

func TestTooBig(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	// Postfix's own limit is higher, so the milter's limit is what trips.
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec, MaxMessageBytes: 100_000, Registerer: reg}))
	ctx := testCtx(t)
	big := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("y", 98)+"\r\n"), 3000)...)
	small := []byte("Subject: small\r\n\r\nsmall\r\n")
	s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{},
		postfixtest.Message{From: "zoe@example.net", To: []string{"bob@example.org"}, Raw: big},
		postfixtest.Message{From: "zoe@example.net", To: []string{"bob@example.org"}, Raw: small})
	if err != nil {
		t.Fatal(err)
	}
	if f := s.Transactions[0].Final; f.Code != 552 || !strings.HasPrefix(f.Text, "5.3.4 ") {
		t.Fatalf("oversized: end of data %v, want 552 5.3.4", f)
	}
	if !s.Transactions[1].Accepted() {
		t.Fatalf("next message on the connection: %v", s.Transactions[1].Final)
	}
	calls := rec.got()
	if len(calls) != 1 || !bytes.Equal(calls[0].raw, small) {
		t.Fatalf("Ingest got %d calls, want only the small message", len(calls))
	}
	if v := metricValue(t, reg, "caliopen_milter_messages_total", "rejected"); v != 1 {
		t.Errorf("rejected metric = %v, want 1", v)
	}
}

func TestMilterDownTempfails(t *testing.T) {
	t.Parallel()
	// Nothing listens there: milter_default_action = tempfail must hold mail back.
	pf := startPostfix(t, postfixtest.FreeAddr(t))
	s, err := postfixtest.SendMail(testCtx(t), pf.SMTPAddr, postfixtest.SendOptions{},
		postfixtest.Message{From: "zoe@example.net", To: []string{"bob@example.org"}, Raw: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	tr := s.Transactions[0]
	var first postfixtest.Reply
	for _, r := range append([]postfixtest.Reply{tr.Mail}, append(tr.Rcpt, tr.Data, tr.Final)...) {
		if r.Code >= 400 {
			first = r
			break
		}
	}
	if first.Code < 400 || first.Code >= 500 {
		t.Fatalf("transaction %+v: want a 4xx, got first refusal %v", tr, first)
	}
	if tr.Accepted() {
		t.Fatal("accepted without a milter")
	}
	if n, err := pf.QueueCount(); err != nil || n != 0 {
		t.Errorf("queue holds %d (%v)", n, err)
	}
}

// A shutdown while a message is being stored lets it finish and get its 250.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	rec := &recorder{gate: make(chan struct{}), seen: make(chan struct{}, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- mustNew(t, Config{Ingester: rec}).Serve(ctx, ln) }()
	pf := startPostfix(t, addr)

	sent := make(chan postfixtest.Session, 1)
	go func() {
		s, err := postfixtest.SendMail(testCtx(t), pf.SMTPAddr, postfixtest.SendOptions{},
			postfixtest.Message{From: "zoe@example.net", To: []string{"bob@example.org"}, Raw: []byte("Subject: x\r\n\r\nx\r\n")})
		if err != nil {
			t.Error(err)
		}
		sent <- s
	}()
	select {
	case <-rec.seen:
	case <-time.After(time.Minute):
		t.Fatal("Ingest never called")
	}
	cancel()
	// Serve must wait for the message in flight.
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v with a message in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(rec.gate)
	s := <-sent
	if len(s.Transactions) != 1 || !s.Transactions[0].Accepted() {
		t.Fatalf("in-flight message: %+v", s.Transactions)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Serve did not return")
	}
}

// Mail that does not come over SMTP (sendmail, pickup) goes through the
// milter too (non_smtpd_milters in contrib/postfix), else discard: would
// drop it unstored.
func TestNonSMTPMail(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec}))
	ctx := testCtx(t)
	raw := []byte("From: root@example.net\r\nSubject: local\r\nMessage-ID: <local@example.net>\r\nDate: Thu, 26 Nov 2026 06:00:00 +0000\r\n\r\nlocal\r\n")
	if err := pf.Sendmail(ctx, "root@example.net", []string{"bob@example.org"}, raw); err != nil {
		t.Fatal(err)
	}
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pf.WaitLog(ctx, "to=<bob@example.org>, relay=none"); err != nil {
		t.Fatal(err)
	}
	calls := rec.got()
	if len(calls) != 1 {
		t.Fatalf("Ingest called %d times, want 1", len(calls))
	}
	e := calls[0].env
	if e.MailFrom != "root@example.net" || !slices.Equal(e.Recipients, []string{"bob@example.org"}) || e.QueueID == "" {
		t.Fatalf("envelope %+v", e)
	}
	// Postfix makes up "localhost [127.0.0.1]" for mail without an SMTP
	// client; the envelope must say "no client", not "loopback client".
	if e.ClientAddr != "" || e.ClientName != "" || e.Helo != "" {
		t.Errorf("local submission recorded client %q name %q helo %q", e.ClientAddr, e.ClientName, e.Helo)
	}
	if !bytes.Contains(calls[0].raw, []byte("Subject: local\r\n")) || !bytes.HasSuffix(calls[0].raw, []byte("\r\n\r\nlocal\r\n")) {
		t.Fatalf("raw %q", calls[0].raw)
	}
}

// Unknown mailboxes are refused at RCPT by Postfix (lookupd says so), before
// the milter is involved; hosted ones in the same transaction go on.
func TestUnknownMailboxRejectedAtRcpt(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec}))
	s, err := postfixtest.SendMail(testCtx(t), pf.SMTPAddr, postfixtest.SendOptions{},
		postfixtest.Message{From: "zoe@example.net", To: []string{"nobody@example.org", "bob@example.org"}, Raw: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	tr := s.Transactions[0]
	if tr.Rcpt[0].Code != 550 || !strings.HasPrefix(tr.Rcpt[0].Text, "5.1.1 ") {
		t.Errorf("unknown mailbox: %v, want 550 5.1.1", tr.Rcpt[0])
	}
	if !tr.Accepted() {
		t.Fatalf("final %v", tr.Final)
	}
	if calls := rec.got(); len(calls) != 1 || !slices.Equal(calls[0].env.Recipients, []string{"bob@example.org"}) {
		t.Fatalf("calls %+v", calls)
	}
}

// The SASL login reaches ingest ({auth_authen} at MAIL FROM).
func TestAuthenticatedSender(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec}),
		"smtpd_sasl_auth_enable = yes",
		"smtpd_sasl_type = dovecot",
		"smtpd_sasl_path = inet:"+startSASL(t))
	ctx := testCtx(t)
	c, err := postfixtest.Dial(ctx, pf.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Hello("client.example.net"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartTLS(pf.ClientTLSConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello("client.example.net"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")))
	if err != nil || r.Code != 235 {
		t.Fatalf("AUTH: %v %v", r, err)
	}
	tr, err := c.Send("alice@example.org", []string{"bob@example.org"}, []byte("Subject: x\r\n\r\nx\r\n"))
	if err != nil || !tr.Accepted() {
		t.Fatalf("send: %+v %v", tr, err)
	}
	calls := rec.got()
	if len(calls) != 1 || calls[0].env.AuthUser != "alice" || calls[0].env.TLSVersion != "TLSv1.3" {
		t.Fatalf("calls %+v", calls)
	}
	if err := c.Quit(); err != nil {
		t.Error(err)
	}
}

// completeFor answers like ingest: the message is stored for every
// recipient (Result.Complete) unless one of them is in elsewhere, standing
// for an alias that also forwards off this host.
type completeFor struct {
	recorder
	elsewhere map[string]bool
}

func (c *completeFor) Ingest(ctx context.Context, env ingest.Envelope, raw []byte) (ingest.Result, error) {
	res, err := c.recorder.Ingest(ctx, env, raw)
	res.Complete = true
	for _, r := range env.Recipients {
		res.Complete = res.Complete && !c.elsewhere[r]
	}
	return res, err
}

// TestDiscardStored: with DiscardStored, a message stored for all its
// recipients is accepted and Postfix drops its copy (no delivery, not even
// to discard:); one with a recipient left to Postfix is delivered as
// before. Several messages on one connection, after a DISCARD, keep the
// connection's facts. The milter listens on the Unix socket contrib/postfix
// names, verbatim.
func TestDiscardStored(t *testing.T) {
	t.Parallel()
	ing := &completeFor{elsewhere: map[string]bool{"fwd@example.org": true}}
	reg := prometheus.NewRegistry()
	pf := postfixtest.Start(t, postfixtest.Options{
		Include: &postfixtest.Include{LookupdAddr: startSocketmap(t)},
	})
	startMilterOn(t, Config{Ingester: ing, Registerer: reg, DiscardStored: true}, listenUnix(t, pf.MilterSocket()))
	ctx := testCtx(t)

	msg := func(n int, to ...string) postfixtest.Message {
		return postfixtest.Message{
			From: "zoe@example.net", To: to,
			Raw: []byte(fmt.Sprintf("Subject: %d\r\nMessage-ID: <d%d@example.net>\r\n\r\nbody %d\r\n", n, n, n)),
		}
	}
	s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{Helo: "d.example.net", TLS: pf.ClientTLSConfig()},
		msg(1, "bob@example.org"), msg(2, "bob@example.org", "fwd@example.org"), msg(3, "carol@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	for i, tr := range s.Transactions {
		if !tr.Accepted() {
			t.Fatalf("message %d: %+v", i+1, tr)
		}
	}
	calls := ing.got()
	if len(calls) != 3 {
		t.Fatalf("Ingest called %d times, want 3", len(calls))
	}
	for i, c := range calls {
		if c.env.TLSVersion != "TLSv1.3" || c.env.Helo != "d.example.net" {
			t.Errorf("message %d: TLS %q helo %q: connection facts lost", i+1, c.env.TLSVersion, c.env.Helo)
		}
	}
	// Message 2 goes on to discard: for both recipients; 1 and 3 are dropped
	// at end of data and never delivered.
	id := func(i int) string { return s.Transactions[i].QueueID() }
	for _, want := range []string{
		id(0) + ": milter-discard: END-OF-MESSAGE",
		id(2) + ": milter-discard: END-OF-MESSAGE",
		id(1) + ": to=<bob@example.org>, relay=none",
		id(1) + ": to=<fwd@example.org>, relay=none",
	} {
		if err := pf.WaitLog(ctx, want); err != nil {
			t.Error(err)
		}
	}
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Error(err)
	}
	log := pf.Log()
	for _, i := range []int{0, 2} {
		if strings.Contains(log, id(i)+": to=") {
			t.Errorf("message %d was discarded yet delivered:\n%s", i+1, log)
		}
	}
	if v := metricValue(t, reg, "caliopen_milter_discarded_total", ""); v != 2 {
		t.Errorf("discarded metric = %v, want 2", v)
	}
	if v := metricValue(t, reg, "caliopen_milter_messages_total", "accepted"); v != 3 {
		t.Errorf("accepted metric = %v, want 3", v)
	}
}
