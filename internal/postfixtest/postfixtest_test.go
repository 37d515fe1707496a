package postfixtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// discardDomain makes example.org a virtual mailbox domain delivered to
// discard:, so tests can send without any Caliopen service running.
var discardDomain = []string{
	"virtual_mailbox_domains = example.org",
	"virtual_mailbox_maps = static:ok",
	"virtual_transport = discard:",
}

func TestDeliverOverTLS(t *testing.T) {
	t.Parallel()
	pf := Start(t, Options{Main: discardDomain})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	raw := []byte("From: a@example.net\r\nTo: b@example.org\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n")
	s, err := SendMail(ctx, pf.SMTPAddr, SendOptions{TLS: pf.ClientTLSConfig()},
		Message{From: "a@example.net", To: []string{"b@example.org", "c@elsewhere.test"}, Raw: raw})
	if err != nil {
		t.Fatal(err)
	}
	if s.TLS == nil || s.TLS.Version != tls.VersionTLS13 {
		t.Fatalf("TLS state = %+v, want TLS 1.3", s.TLS)
	}
	tr := s.Transactions[0]
	if tr.Rcpt[0].Code != 250 {
		t.Errorf("hosted RCPT: %v", tr.Rcpt[0])
	}
	// The harness must not be an open relay, even from loopback.
	if tr.Rcpt[1].Code != 554 || !strings.Contains(tr.Rcpt[1].Text, "Relay access denied") {
		t.Errorf("foreign RCPT: %v, want 554 relay access denied", tr.Rcpt[1])
	}
	if !tr.Accepted() || tr.QueueID() == "" {
		t.Fatalf("final reply %v", tr.Final)
	}
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pf.WaitLog(ctx, tr.QueueID()+": to=<b@example.org>, relay=none, delay="); err != nil {
		t.Fatal(err)
	}
	if err := pf.WaitLog(ctx, "TLS connection established from"); err != nil {
		t.Fatal(err)
	}
}

func TestTwoInstancesAtOnce(t *testing.T) {
	t.Parallel()
	a := Start(t, Options{Main: discardDomain})
	b := Start(t, Options{Main: discardDomain, TLS: TLSOff})
	if a.SMTPAddr == b.SMTPAddr || a.QueueDir == b.QueueDir {
		t.Fatalf("instances share %s / %s", a.SMTPAddr, a.QueueDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Dial(ctx, b.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Hello("x.test")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.Text, "STARTTLS") {
		t.Errorf("TLSOff instance offers STARTTLS: %v", r)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	// Stopping one must leave the other serving.
	if _, err := SendMail(ctx, a.SMTPAddr, SendOptions{}, Message{From: "x@example.net", To: []string{"y@example.org"}, Raw: []byte("Subject: x\r\n\r\nx\r\n")}); err != nil {
		t.Fatal(err)
	}
}

func TestDeferredThenFlush(t *testing.T) {
	t.Parallel()
	// Relaying to a closed port defers: the message stays queued.
	pf := Start(t, Options{Main: append(discardDomain[:2:2], "virtual_transport = smtp:[127.0.0.1]:1")})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := SendMail(ctx, pf.SMTPAddr, SendOptions{}, Message{From: "x@example.net", To: []string{"y@example.org"}, Raw: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Transactions[0].Accepted() {
		t.Fatalf("final %v", s.Transactions[0].Final)
	}
	if err := pf.WaitLog(ctx, "status=deferred"); err != nil {
		t.Fatal(err)
	}
	if empty, err := pf.QueueEmpty(); err != nil || empty {
		t.Fatalf("QueueEmpty = %v, %v; want a deferred message", empty, err)
	}
	if err := pf.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDotStuff(t *testing.T) {
	got := string(dotStuff([]byte(".a\r\nb\r\n..c\r\nd")))
	want := "..a\r\nb\r\n...c\r\nd\r\n.\r\n"
	if got != want {
		t.Fatalf("dotStuff = %q, want %q", got, want)
	}
}

func TestIncludeContrib(t *testing.T) {
	t.Parallel()
	Require(t)
	milter, lookupd := FreeAddr(t), FreeAddr(t)
	pf := Start(t, Options{
		Include: &Include{MilterAddr: milter, LookupdAddr: lookupd},
		// Later sources win over the fragment.
		Main: []string{"milter_content_timeout = 7s"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := pf.PostconfN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"smtpd_milters":           "inet:" + milter,
		"virtual_mailbox_domains": "socketmap:inet:" + lookupd + ":domains",
		"virtual_transport":       "discard:",
		"milter_default_action":   "tempfail",
		"milter_content_timeout":  "7s",
		"in_flow_delay":           "0s",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	mainCF, err := os.ReadFile(filepath.Join(pf.ConfigDir, "main.cf"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mainCF), DefaultMilter) || strings.Contains(string(mainCF), DefaultLookupd) {
		t.Errorf("a default address survived substitution:\n%s", mainCF)
	}
	masterCF, err := os.ReadFile(filepath.Join(pf.ConfigDir, "master.cf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(masterCF), "\ncaliopen  unix") {
		t.Errorf("master.cf lacks the fragment's service:\n%s", masterCF)
	}
}

// A test binary that dies without its cleanups leaves no Postfix running
// and no directory behind: the watchdog sees its stdin close.
func TestNoOrphanWhenTestBinaryDies(t *testing.T) {
	if os.Getenv("POSTFIXTEST_CHILD") != "" {
		pf := Start(t, Options{TLS: TLSOff})
		fmt.Printf("INSTANCE %s %s\n", pf.SMTPAddr, pf.root)
		os.Exit(3) // no cleanups
	}
	t.Parallel()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNoOrphanWhenTestBinaryDies$")
	cmd.Env = append(os.Environ(), "POSTFIXTEST_CHILD=1")
	out, _ := cmd.Output()
	_, line, ok := strings.Cut(string(out), "INSTANCE ")
	if !ok {
		t.Fatalf("child said %q", out)
	}
	var addr, root string
	if _, err := fmt.Sscan(line, &addr, &root); err != nil {
		t.Fatal(err)
	}
	for {
		_, statErr := os.Stat(root)
		c, dialErr := net.DialTimeout("tcp", addr, time.Second)
		if dialErr == nil {
			c.Close()
		}
		if os.IsNotExist(statErr) && dialErr != nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after the child died: dir %s stat %v, smtpd %s dial %v", root, statErr, addr, dialErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestReconfigure: after Reconfigure, a new connection sees the new
// main.cf (here a mailbox map without b@example.org: 550 at RCPT).
func TestReconfigure(t *testing.T) {
	t.Parallel()
	pf := Start(t, Options{Main: discardDomain})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rcpt := func() Reply {
		t.Helper()
		s, err := SendMail(ctx, pf.SMTPAddr, SendOptions{},
			Message{From: "a@example.net", To: []string{"b@example.org"}, Raw: []byte("Subject: hi\r\n\r\nbody\r\n")})
		if err != nil {
			t.Fatal(err)
		}
		return s.Transactions[0].Rcpt[0]
	}
	if r := rcpt(); r.Code != 250 {
		t.Fatalf("before: RCPT %v, want 250", r)
	}
	if err := pf.Reconfigure(ctx, "virtual_mailbox_maps=inline:{only@example.org=ok}"); err != nil {
		t.Fatal(err)
	}
	pc, err := pf.PostconfN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := pc["virtual_mailbox_maps"]; got != "inline:{only@example.org=ok}" {
		t.Fatalf("virtual_mailbox_maps = %q after Reconfigure", got)
	}
	if r := rcpt(); r.Code != 550 {
		t.Fatalf("after: RCPT %v, want 550 (unknown in the new map)", r)
	}
}

// Include replaces lookupd's socket in the socketmap references only, with
// a TCP or Unix address written as Postfix names it; empty keeps the
// fragment's queue-relative socket (Instance.LookupdSocket).
func TestIncludeLookupdAddr(t *testing.T) {
	for addr, want := range map[string]string{
		"":                 "socketmap:unix:caliopen/lookupd.sock:domains",
		"127.0.0.1:10999":  "socketmap:inet:127.0.0.1:10999:domains",
		"unix:/run/x.sock": "socketmap:unix:/run/x.sock:domains",
	} {
		mainCF, _, err := readFragments(&Include{LookupdAddr: addr})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(mainCF, "\nvirtual_mailbox_domains = "+want+"\n") {
			t.Errorf("LookupdAddr %q: main.cf lacks %q:\n%s", addr, want, mainCF)
		}
		if n := strings.Count(mainCF, "socketmap:"); n != 5 {
			t.Errorf("LookupdAddr %q: %d socketmap references, want 5", addr, n)
		}
	}
}
