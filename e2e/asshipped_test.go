package e2e

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caliopen/caliopen/internal/cpustat"
	"github.com/caliopen/caliopen/internal/postfixtest"
)

// The as-shipped benchmark (issue 10): the real `caliopen serve`, configured
// by contrib/caliopen.toml, behind one private Postfix configured by
// contrib/postfix, against the two things an operator would run instead,
// switched in interleaved rounds on the same Postfix:
//
//	go test -run '^$' -bench AsShipped -benchtime 1x -timeout 60m ./e2e/
var (
	shipMessages = flag.Int("asshipped.messages", 2000, "messages per mode in BenchmarkAsShipped")
	shipRounds   = flag.Int("asshipped.rounds", 4, "interleaved rounds in BenchmarkAsShipped")
)

// shipMode is one configuration of the shared Postfix.
type shipMode string

const (
	// modePostfix: Postfix alone, hosted mailboxes from a static map, delivered to discard:.
	modePostfix shipMode = "postfix"
	// modeDovecot: the same, delivered by LMTP to a private Dovecot writing Maildir.
	modeDovecot shipMode = "dovecot"
	// modeCaliopen: contrib/postfix verbatim; lookupd and the milter of `caliopen serve`.
	modeCaliopen shipMode = "caliopen"
)

var shipModes = []shipMode{modePostfix, modeDovecot, modeCaliopen}

// shipConns is how many SMTP connections send at once.
const shipConns = 10

// shipBench is one deployment of all three modes.
type shipBench struct {
	tb        testing.TB
	pf        *postfixtest.Instance
	dns       *dnsServer
	dove      *dovecot
	serve     *proc
	node      *node
	op, api   string
	users     []string
	modeMain  map[shipMode][]string // main.cf parameters each mode sets
	delivered map[shipMode]int      // messages each mode must have delivered so far
	mode      shipMode
}

// newShipBench starts DNS, Postfix (contrib/postfix included), Dovecot and
// `caliopen serve` (contrib/caliopen.toml) with nUsers hosted users
// user0..@example.org.
func newShipBench(tb testing.TB, nUsers int) *shipBench {
	tb.Helper()
	requireE2E(tb)
	postfixtest.Require(tb)
	requireTool(tb, "dovecot")
	if _, err := os.Stat(dovecotLMTP); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("dovecot-lmtpd is required in CI: %v", err)
		}
		tb.Skipf("dovecot-lmtpd not installed: %v", err)
	}
	s := &shipBench{tb: tb, dns: startDNS(tb), op: freeAddr(tb), api: freeAddr(tb), delivered: map[shipMode]int{}}
	// contrib/postfix verbatim: the milter's and lookupd's sockets in the queue directory.
	s.pf = postfixtest.Start(tb, postfixtest.Options{Include: &postfixtest.Include{}})
	lookupd := "unix:" + s.pf.LookupdSocket()
	s.dove = startDovecot(tb)

	var inline []string
	for i := range nUsers {
		s.users = append(s.users, fmt.Sprintf("user%d@example.org", i))
		inline = append(inline, s.users[i]+"=ok")
	}
	// Without Caliopen an operator lists the mailboxes in a Postfix table.
	alone := []string{
		"smtpd_milters=", "non_smtpd_milters=",
		"virtual_mailbox_domains=example.org",
		"virtual_mailbox_maps=inline:{" + strings.Join(inline, ", ") + "}",
		"virtual_alias_maps=", "smtpd_sender_login_maps=",
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	contrib, err := s.pf.PostconfN(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var shipped []string
	for _, p := range alone {
		name, _, _ := strings.Cut(p, "=")
		shipped = append(shipped, name+"="+contrib[name])
	}
	s.modeMain = map[shipMode][]string{
		modePostfix:  append(append([]string(nil), alone...), "virtual_transport=discard:"),
		modeDovecot:  append(append([]string(nil), alone...), "virtual_transport=lmtp:unix:"+s.dove.lmtpSocket),
		modeCaliopen: append(shipped, "virtual_transport="+contrib["virtual_transport"]),
	}
	s.mode = modeCaliopen

	// contrib/caliopen.toml, with only what must change on a shared machine
	// overridden: the data directory, the milter socket (inside this
	// Postfix's queue directory), ports, and the DNS server.
	s.node = newNode(tb, map[string]string{
		"CALIOPEN_CONFIG":            filepath.Join(repoRoot(), "contrib", "caliopen.toml"),
		"CALIOPEN_DATA_DIR":          tb.TempDir(),
		"CALIOPEN_MILTER_LISTEN":     "unix:" + s.pf.MilterSocket(),
		"CALIOPEN_LOOKUPD_SOCKETMAP": lookupd,
		"CALIOPEN_API_LISTEN":        s.api,
		"CALIOPEN_OPERATOR_LISTEN":   s.op,
		"CALIOPEN_DNS_SERVER":        s.dns.Addr,
	})
	s.node.mustCLI("", "domain", "add", "example.org")
	for i, u := range s.users {
		s.node.mustCLI(password+"\n", "user", "add", "--address", u, fmt.Sprintf("user%d", i))
	}
	s.serve = s.node.start("serve")
	s.serve.waitHealthy(s.op, 60*time.Second)
	for _, a := range []string{"unix:" + s.pf.MilterSocket(), lookupd, s.api} {
		s.serve.waitListening(a, 10*time.Second)
	}
	return s
}

// setMode switches Postfix to mode and sends one message per connection,
// untimed, so the fresh smtpd processes are warm before a timed phase.
func (s *shipBench) setMode(ctx context.Context, mode shipMode, warm []workMsg) {
	s.tb.Helper()
	if err := s.pf.Reconfigure(ctx, s.modeMain[mode]...); err != nil {
		s.tb.Fatal(err)
	}
	s.mode = mode
	s.send(ctx, warm)
}

// send sends msgs over shipConns STARTTLS connections, requires a 250 for
// each, and waits until Postfix has delivered them all (its queue empty).
// It returns how long each sender waited for its transaction.
func (s *shipBench) send(ctx context.Context, msgs []workMsg) []time.Duration {
	s.tb.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		took []time.Duration
	)
	errs := make(chan error, shipConns)
	for c := range shipConns {
		var mine []postfixtest.Message
		for i := c; i < len(msgs); i += shipConns {
			mine = append(mine, postfixtest.Message{From: msgs[i].From, To: []string{msgs[i].To}, Raw: msgs[i].Raw})
		}
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess, err := postfixtest.SendMail(ctx, s.pf.SMTPAddr, postfixtest.SendOptions{TLS: s.pf.ClientTLSConfig()}, mine...)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", s.mode, err)
				return
			}
			for i, tr := range sess.Transactions {
				if !tr.Accepted() {
					errs <- fmt.Errorf("%s: message from %s not accepted: RCPT %v final %v", s.mode, mine[i].From, tr.Rcpt, tr.Final)
					return
				}
				mu.Lock()
				took = append(took, tr.Took)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		s.tb.Fatal(err)
	}
	if err := s.pf.WaitQueueEmpty(ctx); err != nil {
		s.tb.Fatalf("%s: %v", s.mode, err)
	}
	s.delivered[s.mode] += len(msgs)
	return took
}

// checkDelivered waits until every mode has delivered, by its own account,
// exactly what was sent in it: Postfix's log of discard: deliveries,
// Dovecot's Maildir files, the milter's count of stored messages. A message
// delivered by the wrong mode (a stale smtpd after a reload) fails it too.
func (s *shipBench) checkDelivered() {
	s.tb.Helper()
	waitFor(s.tb, 30*time.Second, "every mode delivered what it was sent", func() (bool, string) {
		got := map[shipMode]int{
			modePostfix:  strings.Count(s.pf.Log(), ", relay=none, "),
			modeDovecot:  s.dove.delivered(s.tb),
			modeCaliopen: s.milterStored(),
		}
		for _, m := range shipModes {
			if got[m] != s.delivered[m] {
				return false, fmt.Sprintf("delivered %v, sent %v", got, s.delivered)
			}
		}
		return true, ""
	})
}

// milterStored reads caliopen_milter_messages_total{outcome="accepted"}.
func (s *shipBench) milterStored() int {
	resp, err := httpClient.Get("http://" + s.op + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `caliopen_milter_messages_total{outcome="accepted"} `); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return int(n)
		}
	}
	return 0
}

// shipResult is one mode's totals over the timed phases.
type shipResult struct {
	msgs    int
	dur     time.Duration
	busy    time.Duration // machine CPU time
	queries int64         // DNS questions the test's server answered
	took    []time.Duration
}

// latency returns the q-quantile of how long senders waited for a transaction.
func (r shipResult) latency(q float64) time.Duration {
	if len(r.took) == 0 {
		return 0
	}
	sorted := slices.Clone(r.took)
	slices.Sort(sorted)
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

func (r shipResult) rate() float64 { return float64(r.msgs) / r.dur.Seconds() }
func (r shipResult) cpuPerMsg() time.Duration {
	return r.busy / time.Duration(max(r.msgs, 1))
}

// run sends w in rounds: in each round every mode gets the same slice of
// the workload (its first shipConns messages untimed, to warm the mode up),
// the order of modes rotating from round to round so load from elsewhere
// hits all of them alike.
func (s *shipBench) run(ctx context.Context, w *workload, rounds int) map[shipMode]*shipResult {
	s.tb.Helper()
	res := map[shipMode]*shipResult{}
	for _, m := range shipModes {
		res[m] = &shipResult{}
	}
	n := len(w.Msgs)
	for r := range rounds {
		part := w.Msgs[r*n/rounds : (r+1)*n/rounds]
		warm, timed := part[:min(shipConns, len(part))], part[min(shipConns, len(part)):]
		for i := range shipModes {
			mode := shipModes[(i+r)%len(shipModes)]
			s.setMode(ctx, mode, warm)
			start, busy, queries := time.Now(), machineBusy(s.tb), s.dns.queries.Load()
			took := s.send(ctx, timed)
			res[mode].dur += time.Since(start)
			res[mode].took = append(res[mode].took, took...)
			res[mode].busy += machineBusy(s.tb) - busy
			res[mode].queries += s.dns.queries.Load() - queries
			res[mode].msgs += len(timed)
			s.checkDelivered()
		}
	}
	return res
}

func machineBusy(tb testing.TB) time.Duration {
	d, err := cpustat.Busy()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// ---------------------------------------------------------------- Dovecot

// dovecotLMTP is where Debian's dovecot-lmtpd installs the LMTP server.
const dovecotLMTP = "/usr/lib/dovecot/lmtp"

// dovecot is a private Dovecot instance (dovecot -F -c FILE) taking LMTP on
// a Unix socket and writing Maildir, fsync on (mail_fsync = optimized
// fsyncs each message before LMTP's 250, as the milter's store does before
// the sender's).
type dovecot struct {
	dir, lmtpSocket string
	cmd             *exec.Cmd
	log             string
}

func startDovecot(tb testing.TB) *dovecot {
	tb.Helper()
	// Not tb.TempDir: its parent is 0700, and Dovecot's mail processes run
	// as nobody; Postfix's lmtp client, as postfix, reaches the socket.
	dir, err := os.MkdirTemp("", "dovecot-bench-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	mail := filepath.Join(dir, "mail")
	if err := os.Mkdir(mail, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chown(mail, 65534, 65534); err != nil { // nobody:nogroup
		tb.Fatal(err)
	}
	d := &dovecot{dir: dir, lmtpSocket: filepath.Join(dir, "run", "lmtp"), log: filepath.Join(dir, "dovecot.log")}
	conf := fmt.Sprintf(`instance_name = %s
base_dir = %s/run
state_dir = %s/state
log_path = %s
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:%s/%%n
mail_fsync = optimized
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=%s/%%n allow_all_users=yes
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
`, filepath.Base(dir), dir, dir, d.log, mail, mail)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	d.cmd = exec.Command("dovecot", "-F", "-c", confPath)
	out := &syncBuffer{}
	d.cmd.Stdout, d.cmd.Stderr = out, out
	// Dovecot's master stays root, so it dies with this process even when
	// cleanups do not run.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		tb.Fatalf("dovecot: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = d.cmd.Process.Kill()
			<-done
		}
		if tb.Failed() {
			b, _ := os.ReadFile(d.log)
			tb.Logf("dovecot output:\n%s\nlog:\n%s", out.String(), b)
		}
	})
	waitFor(tb, 20*time.Second, "dovecot listens on "+d.lmtpSocket, func() (bool, string) {
		select {
		case <-done:
			b, _ := os.ReadFile(d.log)
			tb.Fatalf("dovecot exited: %s\n%s", out.String(), b)
		default:
		}
		_, err := os.Stat(d.lmtpSocket)
		return err == nil, fmt.Sprint(err)
	})
	return d
}

// delivered counts the messages in every user's Maildir.
func (d *dovecot) delivered(tb testing.TB) int {
	n := 0
	for _, sub := range []string{"new", "cur"} {
		files, err := filepath.Glob(filepath.Join(d.dir, "mail", "*", sub, "*"))
		if err != nil {
			tb.Fatal(err)
		}
		n += len(files)
	}
	return n
}

// ---------------------------------------------------------------- the benchmark and its test

// defaultShape is the workload of BenchmarkAsShipped: 20 hosted users, 300
// correspondents at 40 domains, 60% of them signing.
func defaultShape(users []string, n int) workloadShape {
	return workloadShape{Seed: 10, Messages: n, Users: users, Correspondents: 300, Domains: 40, SignedShare: 0.6}
}

// BenchmarkAsShipped is the figure the README and docs/benchmarks.md quote
// as "as shipped" (see docs/benchmarks.md). -asshipped.messages and
// -asshipped.rounds change its size.
func BenchmarkAsShipped(b *testing.B) {
	s := newShipBench(b, 20)
	w := generateWorkload(b, s.dns, defaultShape(s.users, *shipMessages))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	b.ResetTimer()
	var res map[shipMode]*shipResult
	for range b.N {
		res = s.run(ctx, w, *shipRounds)
	}
	b.StopTimer()
	pf, dv, cal := res[modePostfix], res[modeDovecot], res[modeCaliopen]
	for _, m := range shipModes {
		b.ReportMetric(res[m].rate(), string(m)+"-msg/s")
		b.ReportMetric(float64(res[m].cpuPerMsg().Microseconds())/1000, string(m)+"-CPU-ms/msg")
		b.ReportMetric(float64(res[m].latency(0.99).Microseconds())/1000, string(m)+"-p99-ms")
	}
	b.ReportMetric(cal.rate()/pf.rate(), "caliopen/postfix")
	b.ReportMetric(cal.rate()/dv.rate(), "caliopen/dovecot")
	b.ReportMetric(dv.rate()/pf.rate(), "dovecot/postfix")
	b.ReportMetric(float64(cal.cpuPerMsg())/float64(pf.cpuPerMsg()), "caliopen/postfix-CPU")
	// How much DNS the milter's verification asks per message (a cache lowers it).
	b.ReportMetric(float64(cal.queries)/float64(max(cal.msgs, 1)), "caliopen-DNS-queries/msg")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d messages (%.1f KB on average, %d%% DKIM-signed, %d with attachments, %d distinct senders), %d rounds, %d connections",
		len(w.Msgs), float64(w.Bytes)/float64(len(w.Msgs))/1024, 100*w.Signed/len(w.Msgs), w.Attachments, w.DistinctFroms, *shipRounds, shipConns)
	b.Logf("| mode | msg/s | vs Postfix alone | vs Dovecot LMTP | machine CPU per message | sender waits p50 / p99 |")
	for _, m := range shipModes {
		b.Logf("| %s | %.1f | %.2f | %.2f | %.1f ms | %s / %s |", m, res[m].rate(), res[m].rate()/pf.rate(), res[m].rate()/dv.rate(),
			float64(res[m].cpuPerMsg().Microseconds())/1000,
			res[m].latency(0.5).Round(time.Millisecond), res[m].latency(0.99).Round(time.Millisecond))
	}
}

// TestAsShipped runs the benchmark's harness on a handful of messages so it
// cannot rot: every mode delivers every message, and the milter really
// verified them against the DNS server (a signed message passes DKIM, SPF
// and DMARC).
func TestAsShipped(t *testing.T) {
	t.Parallel()
	s := newShipBench(t, 3)
	shape := defaultShape(s.users, 2*(shipConns+6))
	shape.Correspondents, shape.Domains = 12, 4
	w := generateWorkload(t, s.dns, shape)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res := s.run(ctx, w, 2)
	if s.dns.queries.Load() == 0 {
		t.Errorf("the milter asked the DNS server nothing: verification is off")
	}
	for _, m := range shipModes {
		if res[m].msgs != 2*6 || res[m].dur <= 0 {
			t.Errorf("%s: %d timed messages in %s, want 12", m, res[m].msgs, res[m].dur)
		}
		if len(res[m].took) != res[m].msgs || res[m].latency(0.5) <= 0 {
			t.Errorf("%s: %d transaction times for %d messages, median %s", m, len(res[m].took), res[m].msgs, res[m].latency(0.5))
		}
		if s.delivered[m] != len(w.Msgs) {
			t.Errorf("%s delivered %d messages, want %d", m, s.delivered[m], len(w.Msgs))
		}
	}
	if w.Signed == 0 || w.Signed == len(w.Msgs) {
		t.Fatalf("%d of %d messages signed: the workload must mix signed and unsigned", w.Signed, len(w.Msgs))
	}
	var signed workMsg
	for _, m := range w.Msgs {
		if m.Signed {
			signed = m
			break
		}
	}
	user := strings.TrimSuffix(signed.To, "@example.org")
	api := login(t, s.api, user, password)
	var found *message
	for _, m := range api.messages() { // listed without their Message-ID
		if full := api.message(m.ID); full.MessageID == signed.MessageID {
			found = &full
		}
	}
	if found == nil {
		t.Fatalf("%s has no message %s", user, signed.MessageID)
	}
	sec := decodeSecurity(t, *found)
	if sec.Verification.DKIM.Result != "pass" || sec.Verification.SPF.Result != "pass" || sec.Verification.DMARC.Result != "pass" {
		t.Errorf("signed message verification %+v, want DKIM, SPF and DMARC pass (security %s)", sec.Verification, found.Security)
	}
}
