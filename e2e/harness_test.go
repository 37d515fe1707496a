// Package e2e runs the real caliopen binary against real Postfix instances,
// a real Cassandra, an in-process authoritative DNS server and GnuPG.
//
// The binary is built once per test process (without -race, for speed).
// Every role runs as a subprocess whose output is logged when a test fails.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/caliopen/caliopen/internal/postfixtest"
)

// binDir holds the caliopen binary, built once per test process on first
// use (without -race, for speed: -race instruments the tests only).
var (
	binDir    string
	binPath   string
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// caliopenBinary builds ./cmd/caliopen once and returns its path.
func caliopenBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caliopen-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "caliopen"), "./cmd/caliopen")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caliopen: %v\n%s", err, out)
			return
		}
		binPath = filepath.Join(dir, "caliopen")
		fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", binPath, time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// requireE2E skips end-to-end tests in -short mode.
func requireE2E(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped in -short mode")
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

// requireTool skips (or fails under CI) when an external program is missing.
func requireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI: %v", n, err)
			}
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

func freeAddr(t testing.TB) string { return postfixtest.FreeAddr(t) }

// baseEnv is the parent's environment without CALIOPEN_* variables: the
// binary refuses a CALIOPEN_ variable that names no key (such as the test
// suite's CALIOPEN_TEST_CASSANDRA).
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CALIOPEN_") {
			out = append(out, kv)
		}
	}
	return out
}

// node is one caliopen configuration: the environment every command and
// role of one deployment shares.
type node struct {
	t   testing.TB
	env []string // CALIOPEN_* settings
}

func newNode(t testing.TB, settings map[string]string) *node {
	caliopenBinary(t)
	n := &node{t: t}
	for k, v := range settings {
		n.env = append(n.env, k+"="+v)
	}
	return n
}

// cli runs one administration command to completion.
func (n *node) cli(stdin string, args ...string) (string, error) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(baseEnv(), n.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

func (n *node) mustCLI(stdin string, args ...string) string {
	n.t.Helper()
	out, err := n.cli(stdin, args...)
	if err != nil {
		n.t.Fatalf("caliopen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// syncBuffer collects a subprocess's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one running role.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	err    error
	stopMu sync.Mutex
}

// start runs `caliopen ARGS` in the background until stop or the test's end.
func (n *node) start(args ...string) *proc {
	n.t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(baseEnv(), n.env...)
	return startProc(n.t, strings.Join(args, " "), cmd)
}

// startProc runs cmd (a caliopen role) in the background until stop or the
// test's end, and logs its output if the test fails.
func startProc(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start caliopen %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("caliopen %s (pid %d) output:\n%s", p.name, p.cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits (SIGKILL after 15 s). Safe to call twice.
func (p *proc) stop() {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	start := time.Now()
	select {
	case <-p.done:
		p.t.Logf("caliopen %s stopped %s after SIGTERM (%v)", p.name, time.Since(start).Round(time.Millisecond), p.err)
	case <-time.After(15 * time.Second):
		p.t.Errorf("caliopen %s ignored SIGTERM for 15s: killing", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitHealthy waits for GET http://opAddr/healthz to answer 200.
func (p *proc) waitHealthy(opAddr string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		if p.exited() {
			p.t.Fatalf("caliopen %s exited before it was healthy (%v):\n%s", p.name, p.err, p.out.String())
		}
		resp, err := http.Get("http://" + opAddr + "/healthz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("caliopen %s not healthy on %s after %s (last: %s):\n%s", p.name, opAddr, timeout, last, p.out.String())
}

// waitListening waits until addr (host:port, or unix:/path) accepts
// connections.
func (p *proc) waitListening(addr string, timeout time.Duration) {
	p.t.Helper()
	network, dial := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, dial = "unix", path
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			p.t.Fatalf("caliopen %s exited (%v):\n%s", p.name, p.err, p.out.String())
		}
		c, err := net.DialTimeout(network, dial, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("caliopen %s: nothing listens on %s after %s:\n%s", p.name, addr, timeout, p.out.String())
}

// waitFor polls cond until it holds or the timeout expires.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s (last: %s)", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- DNS

// dnsServer is an authoritative DNS server for every name: what it holds it
// answers, the rest is NXDOMAIN.
type dnsServer struct {
	Addr string
	// down: read every query and answer none, as a resolver that is
	// overloaded or cut off.
	down atomic.Bool
	mu   sync.Mutex
	rrs  map[string][]dns.RR // by lowercased FQDN
	srvs []*dns.Server
	// queries counts the questions answered, for benchmarks.
	queries atomic.Int64
}

func startDNS(t testing.TB) *dnsServer {
	t.Helper()
	d := &dnsServer{rrs: map[string][]dns.RR{}}
	// UDP and TCP on the same port.
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; i < 20; i++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc, ln = nil, nil
	}
	if ln == nil {
		t.Fatal("dns: no port free for both UDP and TCP")
	}
	d.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(d.serve)
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	d.srvs = []*dns.Server{udp, tcp}
	for _, s := range d.srvs {
		s := s
		go func() { _ = s.ActivateAndServe() }()
	}
	t.Cleanup(func() {
		for _, s := range d.srvs {
			_ = s.Shutdown()
		}
	})
	return d
}

// addTXT adds one TXT record, splitting long text in 255-byte strings.
func (d *dnsServer) addTXT(t testing.TB, name, text string) {
	t.Helper()
	var parts []string
	for len(text) > 255 {
		parts = append(parts, text[:255])
		text = text[255:]
	}
	parts = append(parts, text)
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(strings.ToLower(name)), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: parts}
	d.mu.Lock()
	d.rrs[rr.Hdr.Name] = append(d.rrs[rr.Hdr.Name], rr)
	d.mu.Unlock()
}

func (d *dnsServer) serve(w dns.ResponseWriter, r *dns.Msg) {
	if d.down.Load() {
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	d.queries.Add(1)
	if len(r.Question) == 1 {
		q := r.Question[0]
		d.mu.Lock()
		rrs := d.rrs[strings.ToLower(q.Name)]
		d.mu.Unlock()
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		if len(rrs) == 0 {
			m.Rcode = dns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m)
}

// ---------------------------------------------------------------- API client

type apiClient struct {
	t     testing.TB
	base  string
	token string
	user  string
}

type apiError struct {
	Status int
	Body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

// do sends a JSON request and decodes a 2xx JSON answer into out.
func (c *apiClient) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+"/api/v1"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	cl := &http.Client{Timeout: 60 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &apiError{Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		if p, ok := out.(*[]byte); ok {
			*p = b
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode %s: %w", method, path, b, err)
		}
	}
	return nil
}

func (c *apiClient) must(method, path string, in, out any) {
	c.t.Helper()
	if err := c.do(method, path, in, out); err != nil {
		c.t.Fatalf("%s %s as %s: %v", method, path, c.user, err)
	}
}

// login returns a client holding a bearer token for user.
func login(t testing.TB, apiAddr, user, password string) *apiClient {
	t.Helper()
	c := &apiClient{t: t, base: "http://" + apiAddr, user: user}
	var resp struct {
		Token     string `json:"token"`
		TokenType string `json:"token_type"`
	}
	c.must("POST", "/login", map[string]string{"username": user, "password": password}, &resp)
	if resp.Token == "" || !strings.EqualFold(resp.TokenType, "bearer") {
		t.Fatalf("login %s: token %q type %q", user, resp.Token, resp.TokenType)
	}
	c.token = resp.Token
	return c
}

// Views of the API's JSON, only what the tests look at.

type participant struct {
	Role    string `json:"role"`
	Address string `json:"address"`
	Name    string `json:"name"`
}

type storedPI struct {
	Version int             `json:"version"`
	Score   int             `json:"score"`
	Band    string          `json:"band"`
	Warning bool            `json:"warning"`
	Details json.RawMessage `json:"details"`
}

type conversation struct {
	ID           string        `json:"id"`
	Subject      string        `json:"subject"`
	Participants []participant `json:"participants"`
	MessageCount int           `json:"message_count"`
}

type message struct {
	ID             string          `json:"id"`
	ConversationID string          `json:"conversation_id"`
	Inbound        bool            `json:"inbound"`
	Subject        string          `json:"subject"`
	Participants   []participant   `json:"participants"`
	Excerpt        string          `json:"excerpt"`
	PI             storedPI        `json:"pi"`
	MessageID      string          `json:"message_id"`
	TextBody       string          `json:"text_body"`
	HTMLBody       string          `json:"html_body"`
	Security       json.RawMessage `json:"security"`
	RawSize        int64           `json:"raw_size"`
}

type pageOf[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

func (m message) from() string {
	for _, p := range m.Participants {
		if p.Role == "from" {
			return p.Address
		}
	}
	return ""
}

// messages lists every message of the user (all conversations, all pages),
// without bodies.
func (c *apiClient) messages() []message {
	c.t.Helper()
	var out []message
	cursor := ""
	for {
		var convs pageOf[conversation]
		path := "/conversations?limit=100"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		c.must("GET", path, nil, &convs)
		for _, cv := range convs.Items {
			mc := ""
			for {
				var ms pageOf[message]
				p := "/conversations/" + cv.ID + "/messages?limit=100"
				if mc != "" {
					p += "&cursor=" + url.QueryEscape(mc)
				}
				c.must("GET", p, nil, &ms)
				out = append(out, ms.Items...)
				if ms.NextCursor == "" {
					break
				}
				mc = ms.NextCursor
			}
		}
		if convs.NextCursor == "" {
			return out
		}
		cursor = convs.NextCursor
	}
}

// bySubject returns the user's messages with that subject.
func (c *apiClient) bySubject(subject string) []message {
	c.t.Helper()
	var out []message
	for _, m := range c.messages() {
		if m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

// waitMessage waits until the user has a message with that subject and
// returns it in full.
func (c *apiClient) waitMessage(subject string, timeout time.Duration) message {
	c.t.Helper()
	var found []message
	waitFor(c.t, timeout, fmt.Sprintf("%s has a message %q", c.user, subject), func() (bool, string) {
		found = c.bySubject(subject)
		return len(found) > 0, fmt.Sprintf("%d found", len(found))
	})
	return c.message(found[0].ID)
}

func (c *apiClient) message(id string) message {
	c.t.Helper()
	var m message
	c.must("GET", "/messages/"+id, nil, &m)
	return m
}

// ---------------------------------------------------------------- mail

// msg builds a simple RFC 5322 message with CRLF line ends.
func msg(from, to, subject, msgID, body string, extra ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n",
		from, to, subject, time.Now().UTC().Format(time.RFC1123Z), msgID)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	if !strings.HasSuffix(body, "\n") {
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}

// sendOne sends one message over one SMTP connection and returns its transaction.
func sendOne(t *testing.T, pf *postfixtest.Instance, useTLS bool, from string, to []string, raw []byte) postfixtest.Transaction {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := postfixtest.SendOptions{}
	if useTLS {
		opts.TLS = pf.ClientTLSConfig()
	}
	s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, opts, postfixtest.Message{From: from, To: to, Raw: raw})
	if err != nil {
		t.Fatalf("smtp to %s: %v (session %+v)", pf.SMTPAddr, err, s)
	}
	if useTLS && (s.TLS == nil || s.TLS.Version != 0x0304) {
		t.Fatalf("STARTTLS did not negotiate TLS 1.3: %+v", s.TLS)
	}
	if len(s.Transactions) != 1 {
		t.Fatalf("want 1 transaction, got %+v", s.Transactions)
	}
	return s.Transactions[0]
}

// mustDeliver sends and requires a 250 at the end of DATA.
func mustDeliver(t *testing.T, pf *postfixtest.Instance, useTLS bool, from string, to []string, raw []byte) postfixtest.Transaction {
	t.Helper()
	tr := sendOne(t, pf, useTLS, from, to, raw)
	if !tr.Accepted() {
		t.Fatalf("message from %s to %v not accepted: MAIL %v RCPT %v DATA %v final %v", from, to, tr.Mail, tr.Rcpt, tr.Data, tr.Final)
	}
	return tr
}

// startRelay starts a second Postfix playing the sender's MTA: it accepts
// mail from loopback and relays everything to target, queueing and
// retrying on 4xx like any real MTA.
func startRelay(t *testing.T, target string) *postfixtest.Instance {
	t.Helper()
	return postfixtest.Start(t, postfixtest.Options{
		TLS: postfixtest.TLSOff,
		Main: []string{
			"myhostname = relay.sender.invalid",
			"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
			"default_transport = smtp",
			"relayhost = [" + strings.Replace(target, ":", "]:", 1),
			"smtp_tls_security_level = may",
			"smtp_helo_name = relay.sender.invalid",
			// Retry when the test flushes, not every second.
			"queue_run_delay = 30s",
			"minimal_backoff_time = 30s",
			"maximal_backoff_time = 60s",
		},
	})
}

// securityFacts decodes the parts of a message's security JSON the tests check.
type securityFacts struct {
	Features struct {
		Encryption int
		Strength   int
		TLSVersion string
		TLSCipher  string
		DKIM       string
		SPF        string
		DMARC      string
		Signature  int
		Key        int
	} `json:"features"`
	Envelope struct {
		TLSVersion string `json:"tls_version"`
		MailFrom   string `json:"mail_from"`
	} `json:"envelope"`
	Verification struct {
		DKIM struct {
			Result  string `json:"result"`
			Aligned bool   `json:"aligned"`
		} `json:"dkim"`
		SPF struct {
			Result string `json:"result"`
		} `json:"spf"`
		DMARC struct {
			Result string `json:"result"`
			Policy string `json:"policy"`
		} `json:"dmarc"`
		PGP struct {
			Decrypted         bool   `json:"decrypted"`
			SignerFingerprint string `json:"signer_fingerprint"`
			SignerKnown       bool   `json:"signer_known"`
		} `json:"pgp"`
		KeyState string `json:"key_state"`
	} `json:"verification"`
	VerifyError   string   `json:"verify_error"`
	ParseProblems []string `json:"parse_problems"`
}

func decodeSecurity(t *testing.T, m message) securityFacts {
	t.Helper()
	var s securityFacts
	if err := json.Unmarshal(m.Security, &s); err != nil {
		t.Fatalf("message %s security %s: %v", m.ID, m.Security, err)
	}
	return s
}

// expectPI checks a message's stored PI.
func expectPI(t *testing.T, m message, score int, band string) {
	t.Helper()
	if m.PI.Score != score || m.PI.Band != band {
		t.Errorf("message %q PI = %d %s, want %d %s\nPI details: %s\nsecurity: %s", m.Subject, m.PI.Score, m.PI.Band, score, band, m.PI.Details, m.Security)
	}
}

// httpClient bounds operator-endpoint probes.
var httpClient = http.Client{Timeout: 10 * time.Second}

// expectFacts checks the points of named facts in a message's PI details
// (e.g. "T1": 15).
func expectFacts(t *testing.T, m message, want map[string]float64) {
	t.Helper()
	var d struct {
		Facts []struct {
			ID     string  `json:"id"`
			Points float64 `json:"points"`
		} `json:"facts"`
	}
	if err := json.Unmarshal(m.PI.Details, &d); err != nil {
		t.Errorf("message %q PI details %s: %v", m.Subject, m.PI.Details, err)
		return
	}
	got := map[string]float64{}
	for _, f := range d.Facts {
		got[f.ID] = f.Points
	}
	for id, p := range want {
		if v, ok := got[id]; !ok || v != p {
			t.Errorf("message %q PI fact %s = %v points, want %v (details %s)", m.Subject, id, got[id], p, m.PI.Details)
		}
	}
}

// pendingTx is an SMTP transaction left open after RCPT, so a test can
// break something before the message is sent.
type pendingTx struct {
	t    *testing.T
	conn net.Conn
	text *textproto.Conn
	Rcpt postfixtest.Reply
}

func (p *pendingTx) cmd(format string, args ...any) postfixtest.Reply {
	p.t.Helper()
	_ = p.conn.SetDeadline(time.Now().Add(3 * time.Minute))
	if format != "" {
		if err := p.text.PrintfLine(format, args...); err != nil {
			p.t.Fatalf("smtp write: %v", err)
		}
	}
	code, text, err := p.text.ReadResponse(0)
	var perr *textproto.Error
	if errors.As(err, &perr) {
		return postfixtest.Reply{Code: perr.Code, Text: perr.Msg}
	}
	if err != nil {
		p.t.Fatalf("smtp read: %v", err)
	}
	return postfixtest.Reply{Code: code, Text: text}
}

// openTx connects without TLS and runs EHLO, MAIL and RCPT.
func openTx(t *testing.T, addr, from, rcpt string) *pendingTx {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := &pendingTx{t: t, conn: c, text: textproto.NewConn(c)}
	t.Cleanup(func() { c.Close() })
	for _, step := range []struct {
		line string
		want int
	}{{"", 220}, {"EHLO client.postfixtest.invalid", 250}, {"MAIL FROM:<" + from + ">", 250}} {
		var r postfixtest.Reply
		if step.line == "" {
			r = p.cmd("")
		} else {
			r = p.cmd("%s", step.line)
		}
		if r.Code != step.want {
			t.Fatalf("smtp %q: %v", step.line, r)
		}
	}
	p.Rcpt = p.cmd("RCPT TO:<%s>", rcpt)
	return p
}

// finish sends DATA and the message; it returns the reply to DATA and the
// final reply (zero when DATA was refused).
func (p *pendingTx) finish(raw []byte) (data, final postfixtest.Reply) {
	p.t.Helper()
	data = p.cmd("DATA")
	if data.Code != 354 {
		return data, final
	}
	_ = p.conn.SetDeadline(time.Now().Add(3 * time.Minute))
	w := p.text.DotWriter()
	if _, err := w.Write(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))); err != nil {
		p.t.Fatalf("smtp data: %v", err)
	}
	if err := w.Close(); err != nil {
		p.t.Fatalf("smtp data: %v", err)
	}
	final = p.cmd("")
	_ = p.text.PrintfLine("QUIT")
	return data, final
}
