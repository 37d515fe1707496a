// Package postfixtest runs private Postfix instances for tests.
//
// Each Instance has its own config_directory, queue_directory and
// data_directory under t.TempDir(), listens for SMTP on a free loopback port
// and logs to its own maillog_file, so several instances (and several test
// binaries) can run side by side on one machine without touching the system
// Postfix. An instance offers STARTTLS with a self-signed certificate made at
// start, so tests can check what a TLS hop records.
//
// The operator fragments in contrib/postfix can be included (Options.Include),
// with only their addresses substituted (or none: see MilterSocket), so
// end-to-end tests prove the configuration we ship. Typical use:
//
//	pf := postfixtest.Start(t, postfixtest.Options{
//		Include: &postfixtest.Include{MilterAddr: milterAddr, LookupdAddr: lookupdAddr},
//		Main:    []string{"milter_content_timeout = 10s"}, // wins over the fragment
//	})
//	s, err := postfixtest.SendMail(ctx, pf.SMTPAddr,
//		postfixtest.SendOptions{TLS: pf.ClientTLSConfig()},
//		postfixtest.Message{From: "a@example.net", To: []string{"b@example.org"}, Raw: raw})
//	// s.Transactions[0].Final is the reply after DATA, e.g. 250 or 451 4.3.0;
//	// pf.WaitQueueEmpty(ctx) waits for delivery, pf.Log() is the maillog.
//
// Instances need root and /usr/sbin/postfix (see Require). Each one is
// stopped at t.Cleanup, and also if the test binary dies without cleanups.
package postfixtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PostfixBinary is where Debian installs the postfix control command.
const PostfixBinary = "/usr/sbin/postfix"

// The addresses written in contrib/postfix. Include replaces these strings,
// and nothing else, with the test's own addresses.
const (
	// DefaultMilter is the milter as Postfix names it: a Unix socket
	// relative to the queue directory (Instance.MilterSocket).
	DefaultMilter = "unix:caliopen/milter.sock"
	// DefaultLookupd is lookupd's socketmap as Postfix names it, after
	// "socketmap:" and before ":MAP": a Unix socket relative to the queue
	// directory (Instance.LookupdSocket).
	DefaultLookupd = "unix:caliopen/lookupd.sock"
)

// Options shape an instance. Later sources win: the harness's base
// configuration, then Include, then Main.
type Options struct {
	// Main holds extra main.cf lines, "name = value" (continuation lines
	// starting with white space are allowed within one element).
	Main []string
	// Master holds extra master.cf lines (one service per element; "-o"
	// continuation lines may follow in the same element after a newline).
	Master []string
	// Include, when set, merges the operator fragments of contrib/postfix.
	Include *Include
	// TLS turns off STARTTLS when set to TLSOff; on by default.
	TLS TLSMode
	// Chroot runs smtpd, cleanup and trivial-rewrite (the daemons that ask
	// the milter and the lookup tables) chrooted to the queue directory, as
	// Debian's master.cf does.
	Chroot bool
	// Fresh leaves out of the harness's own main.cf lines the parameters
	// contrib/postfix/main.cf sets, as a fresh Postfix's main.cf does not set
	// them: for a test that appends the fragments itself, as an operator
	// does. Duplicate names are not only noise: every process logs a warning
	// for each, and with maillog_file (postlogd) and Linux's default
	// net.unix.max_dgram_qlen of 10 a burst of them after a reload filled
	// the log socket and deadlocked postlogd, and with it every daemon.
	Fresh bool
}

// TLSMode says whether smtpd offers STARTTLS.
type TLSMode int

const (
	TLSMay TLSMode = iota // smtpd_tls_security_level = may (default)
	TLSOff                // no STARTTLS
)

// Include names the operator fragments to merge and the addresses that
// replace their default ports.
type Include struct {
	// Dir holds main.cf and master.cf; empty means the repository's contrib/postfix.
	Dir string
	// MilterAddr, host:port or unix:/path, replaces DefaultMilter; empty
	// keeps it, and the milter must then listen on Instance.MilterSocket.
	MilterAddr string
	// LookupdAddr, host:port or unix:/path, replaces DefaultLookupd; empty
	// keeps it, and lookupd must then listen on Instance.LookupdSocket.
	LookupdAddr string
}

// Instance is one running private Postfix.
type Instance struct {
	// SMTPAddr is smtpd's loopback address, "127.0.0.1:PORT".
	SMTPAddr string
	// ConfigDir holds main.cf and master.cf (postfix -c ConfigDir).
	ConfigDir string
	// QueueDir is queue_directory.
	QueueDir string
	// LogFile is the maillog_file.
	LogFile string
	// CertPEM is smtpd's self-signed certificate (for "localhost" and 127.0.0.1).
	CertPEM []byte

	tb       testing.TB
	stopOnce sync.Once
	stopErr  error
	root     string         // holds everything of this instance
	watchdog *exec.Cmd      // runs `postfix stop` when watchIn closes
	watchIn  io.WriteCloser // never written; closed by Stop or by our death
	watchOut bytes.Buffer   // the watchdog's output, read after it exits
}

// Require skips the test when Postfix is not installed, or fails it when the
// CI environment variable is set (CI must not silently skip these tests).
func Require(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(PostfixBinary); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("postfix is required in CI: %v", err)
		}
		tb.Skipf("postfix not installed: %v", err)
	}
	if os.Geteuid() != 0 {
		// A private master must run as root to bind, chown and drop privileges.
		if os.Getenv("CI") != "" {
			tb.Fatal("postfix tests must run as root in CI")
		}
		tb.Skip("postfix tests need root")
	}
}

// FreeAddr returns a loopback "127.0.0.1:PORT" that was free a moment ago.
// Another process may take it before the caller binds it; collisions are
// rare enough on loopback for tests.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("postfixtest: free port: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		tb.Fatalf("postfixtest: free port: %v", err)
	}
	return addr
}

// Start configures and starts a private Postfix and stops it at t.Cleanup.
// It fails the test on any error, and skips it when Postfix is missing
// (see Require).
func Start(tb testing.TB, opts Options) *Instance {
	tb.Helper()
	Require(tb)
	in, err := start(tb, opts)
	if err != nil {
		tb.Fatalf("postfixtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := in.Stop(); err != nil {
			tb.Errorf("postfixtest: stop: %v", err)
		}
		if tb.Failed() {
			tb.Logf("postfix maillog (%s):\n%s", in.LogFile, in.Log())
		}
	})
	return in
}

func start(tb testing.TB, opts Options) (*Instance, error) {
	// Not tb.TempDir: its parent is 0700, and master opens files in
	// data_directory after dropping to the postfix user.
	root, err := os.MkdirTemp("", "postfixtest-")
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		// Registered first, so it runs after Stop (cleanups run last-in first-out).
		if err := os.RemoveAll(root); err != nil {
			tb.Errorf("postfixtest: %v", err)
		}
	})
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	in := &Instance{
		SMTPAddr:  FreeAddr(tb),
		ConfigDir: filepath.Join(root, "etc"),
		QueueDir:  filepath.Join(root, "queue"),
		LogFile:   filepath.Join(root, "log", "maillog"),
		tb:        tb,
		root:      root,
	}
	dataDir := filepath.Join(root, "data")
	tlsDir := filepath.Join(root, "tls")
	for _, d := range []string{in.ConfigDir, in.QueueDir, dataDir, tlsDir, filepath.Dir(in.LogFile), filepath.Dir(in.MilterSocket())} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		return nil, fmt.Errorf("postfix user: %w", err)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pf.Gid)
	// data_directory must belong to mail_owner, else master refuses to start.
	if err := os.Chown(dataDir, uid, gid); err != nil {
		return nil, err
	}
	// The milter's socket directory, made as contrib/postfix/README.md says:
	// set-group-ID postfix, so a socket made there is Postfix's to reach.
	if err := os.Chown(filepath.Dir(in.MilterSocket()), 0, gid); err != nil {
		return nil, err
	}
	if err := os.Chmod(filepath.Dir(in.MilterSocket()), 0o750|os.ModeSetgid); err != nil {
		return nil, err
	}

	certFile, keyFile := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	if in.CertPEM, err = writeSelfSigned(certFile, keyFile); err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}

	main := newParams()
	main.set("base", baseMain(in, dataDir, root))
	if opts.TLS == TLSMay {
		main.set("base", []string{
			"smtpd_tls_cert_file = " + certFile,
			"smtpd_tls_key_file = " + keyFile,
			"smtpd_tls_security_level = may",
			"smtpd_tls_loglevel = 1",
			"smtpd_tls_received_header = yes",
		})
	}
	master := baseMaster(in.SMTPAddr, opts.Chroot)
	if opts.Include != nil {
		mainFrag, masterFrag, err := readFragments(opts.Include)
		if err != nil {
			return nil, err
		}
		main.set("contrib/postfix/main.cf", splitEntries(mainFrag))
		master = append(master, "# --- contrib/postfix/master.cf ---", masterFrag)
	}
	main.set("test", opts.Main)
	master = append(master, opts.Master...)
	if opts.Fresh {
		names, err := FragmentNames()
		if err != nil {
			return nil, err
		}
		main.omit(names)
	}

	if err := os.WriteFile(filepath.Join(in.ConfigDir, "main.cf"), main.render(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(in.ConfigDir, "master.cf"), []byte(strings.Join(master, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	// An empty log file owned by root is fine: postlogd opens it as root.
	if err := os.WriteFile(in.LogFile, nil, 0o644); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// check creates the queue subdirectories with the right owners.
	if err := in.postfix(ctx, "check"); err != nil {
		return nil, err
	}
	if err := in.startMaster(ctx); err != nil {
		return nil, err
	}
	if err := waitListening(ctx, in.SMTPAddr); err != nil {
		_ = in.Stop()
		return nil, fmt.Errorf("smtpd on %s: %w\n%s", in.SMTPAddr, err, in.Log())
	}
	return in, nil
}

func baseMain(in *Instance, dataDir, root string) []string {
	return []string{
		"compatibility_level = 3.6",
		"queue_directory = " + in.QueueDir,
		"data_directory = " + dataDir,
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"myhostname = mx.postfixtest.invalid",
		"mydomain = postfixtest.invalid",
		"myorigin = $myhostname",
		"mydestination =",
		"mynetworks = 127.0.0.0/8",
		"relay_domains =",
		"alias_maps =",
		"alias_database =",
		"biff = no",
		"notify_classes =",
		// Else Postfix adds Date/Message-Id/From to mail from loopback and
		// tests could not compare bytes.
		"local_header_rewrite_clients =",
		// No permit_mynetworks: loopback must not be an open relay in tests.
		"smtpd_relay_restrictions = reject_unauth_destination",
		"smtpd_recipient_restrictions =",
		"smtputf8_enable = yes",
		// Postfix otherwise throttles a client that outpaces delivery.
		"in_flow_delay = 0s",
		"default_transport = error:5.1.1 postfixtest delivers nowhere",
		"maillog_file = " + in.LogFile,
		"maillog_file_prefixes = " + root,
		"milter_default_action = tempfail",
		"milter_connect_timeout = 5s",
		"milter_command_timeout = 10s",
		"milter_content_timeout = 60s",
		"smtpd_error_sleep_time = 0s",
		"smtpd_soft_error_limit = 1000",
		"smtpd_hard_error_limit = 1000",
		"smtpd_client_connection_count_limit = 0",
		"smtpd_client_connection_rate_limit = 0",
		"smtpd_client_message_rate_limit = 0",
		"default_process_limit = 100",
		"smtpd_peername_lookup = no",
		"smtp_dns_support_level = disabled",
		"queue_run_delay = 1s",
		"minimal_backoff_time = 1s",
		"maximal_backoff_time = 2s",
	}
}

// baseMaster lists every service the tests reach, with chroot n but for
// the daemons that Options.Chroot names: a chroot for the others would need
// copies of /etc files inside each temporary queue dir.
func baseMaster(smtpAddr string, chroot bool) []string {
	c := "n"
	if chroot {
		c = "y"
	}
	return []string{
		"# service type  private unpriv  chroot  wakeup  maxproc command",
		smtpAddr + " inet n - " + c + " - - smtpd",
		"pickup    unix  n       -       n       60      1       pickup",
		"cleanup   unix  n       -       " + c + "       -       0       cleanup",
		"qmgr      unix  n       -       n       300     1       qmgr",
		"tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
		"rewrite   unix  -       -       " + c + "       -       -       trivial-rewrite",
		"bounce    unix  -       -       n       -       0       bounce",
		"defer     unix  -       -       n       -       0       bounce",
		"trace     unix  -       -       n       -       0       bounce",
		"verify    unix  -       -       n       -       1       verify",
		"flush     unix  n       -       n       1000?   0       flush",
		"proxymap  unix  -       -       n       -       -       proxymap",
		"proxywrite unix -       -       n       -       1       proxymap",
		"smtp      unix  -       -       n       -       -       smtp",
		"relay     unix  -       -       n       -       -       smtp",
		"showq     unix  n       -       n       -       -       showq",
		"error     unix  -       -       n       -       -       error",
		"retry     unix  -       -       n       -       -       error",
		"discard   unix  -       -       n       -       -       discard",
		"local     unix  -       n       n       -       -       local",
		"virtual   unix  -       n       n       -       -       virtual",
		"lmtp      unix  -       -       n       -       -       lmtp",
		"anvil     unix  -       -       n       -       1       anvil",
		"scache    unix  -       -       n       -       1       scache",
		"postlog   unix-dgram n  -       n       -       1       postlogd",
	}
}

// ContribDir returns the repository's contrib/postfix directory, found from
// this source file so tests of any package can include it.
func ContribDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate postfixtest source")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "contrib", "postfix")
	if _, err := os.Stat(filepath.Join(dir, "main.cf")); err != nil {
		return "", fmt.Errorf("contrib fragments: %w", err)
	}
	return dir, nil
}

func readFragments(inc *Include) (mainCF, masterCF string, err error) {
	dir := inc.Dir
	if dir == "" {
		if dir, err = ContribDir(); err != nil {
			return "", "", err
		}
	}
	m, err := os.ReadFile(filepath.Join(dir, "main.cf"))
	if err != nil {
		return "", "", fmt.Errorf("read fragment: %w", err)
	}
	ms, err := os.ReadFile(filepath.Join(dir, "master.cf"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("read fragment: %w", err)
	}
	r := strings.NewReplacer(
		DefaultMilter, orDefault(postfixAddr(inc.MilterAddr), DefaultMilter),
		// With its prefix, so that only socketmap references change.
		"socketmap:"+DefaultLookupd+":", "socketmap:"+orDefault(postfixAddr(inc.LookupdAddr), DefaultLookupd)+":",
	)
	return r.Replace(string(m)), r.Replace(string(ms)), nil
}

// postfixAddr writes a Caliopen listen address (host:port or unix:/path) as
// Postfix names a client endpoint (inet:host:port or unix:/path).
func postfixAddr(addr string) string {
	if addr != "" && !strings.HasPrefix(addr, "unix:") {
		return "inet:" + addr
	}
	return addr
}

// MilterSocket is where contrib/postfix's milter line points in this
// instance: caliopen/milter.sock in its queue directory.
func (in *Instance) MilterSocket() string {
	return filepath.Join(in.QueueDir, "caliopen", "milter.sock")
}

// LookupdSocket is where contrib/postfix's socketmap lines point in this
// instance: caliopen/lookupd.sock in its queue directory.
func (in *Instance) LookupdSocket() string {
	return filepath.Join(in.QueueDir, "caliopen", "lookupd.sock")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// params is main.cf as an ordered set: a later set of a name replaces the
// earlier value in place, so the written file defines each name once (Postfix
// warns about duplicates) while keeping the source of each value visible.
type params struct {
	order []string
	val   map[string]string
	src   map[string]string
}

func newParams() *params {
	return &params{val: map[string]string{}, src: map[string]string{}}
}

// splitEntries groups a main.cf text into entries, keeping continuation
// lines with their parameter and dropping comments and blank lines.
func splitEntries(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " \t\r")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case (line[0] == ' ' || line[0] == '\t') && len(out) > 0:
			out[len(out)-1] += "\n" + line
		default:
			out = append(out, line)
		}
	}
	return out
}

func (p *params) set(src string, entries []string) {
	for _, e := range entries {
		name, value, ok := strings.Cut(e, "=")
		if !ok {
			// Let postfix check report it rather than hide it.
			name, value = e, ""
		}
		name = strings.TrimSpace(name)
		if _, seen := p.val[name]; !seen {
			p.order = append(p.order, name)
		}
		p.val[name] = strings.TrimSpace(value)
		p.src[name] = src
	}
}

// omit drops the named parameters.
func (p *params) omit(names []string) {
	for _, name := range names {
		delete(p.val, name)
	}
	p.order = slices.DeleteFunc(p.order, func(name string) bool { _, ok := p.val[name]; return !ok })
}

// FragmentNames lists the parameters contrib/postfix/main.cf sets.
func FragmentNames() ([]string, error) {
	mainCF, _, err := readFragments(&Include{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range splitEntries(mainCF) {
		name, _, _ := strings.Cut(e, "=")
		names = append(names, strings.TrimSpace(name))
	}
	return names, nil
}

func (p *params) render() []byte {
	var b bytes.Buffer
	b.WriteString("# Written by internal/postfixtest; the comment above each line names its source.\n")
	for _, name := range p.order {
		fmt.Fprintf(&b, "# %s\n%s = %s\n", p.src[name], name, p.val[name])
	}
	return b.Bytes()
}

func (in *Instance) postfix(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, PostfixBinary, append([]string{"-c", in.ConfigDir}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("postfix %s: %w\n%s\n%s", strings.Join(args, " "), err, out, in.Log())
	}
	return nil
}

func waitListening(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Log returns the instance's maillog so far ("" if unreadable).
func (in *Instance) Log() string {
	b, err := os.ReadFile(in.LogFile)
	if err != nil {
		return ""
	}
	return string(b)
}

// WaitLog waits until the maillog contains substr. postlogd writes
// asynchronously, so a log line may trail the SMTP reply it explains.
func (in *Instance) WaitLog(ctx context.Context, substr string) error {
	for {
		if strings.Contains(in.Log(), substr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("maillog never contained %q: %w", substr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PostconfN returns `postconf -n` for the instance: the settings in force.
func (in *Instance) PostconfN(ctx context.Context) (map[string]string, error) {
	out, err := exec.CommandContext(ctx, "/usr/sbin/postconf", "-c", in.ConfigDir, "-n").Output()
	if err != nil {
		return nil, fmt.Errorf("postconf -n: %w", err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " = "); ok {
			m[k] = v
		}
	}
	return m, sc.Err()
}

// Reconfigure sets main.cf parameters ("name=value"; an empty value clears
// one) with postconf -e, reloads Postfix, and waits until every process
// started before the reload has exited: an idle smtpd of the old
// configuration could otherwise still take the next client (it notices the
// reload only when next scheduled, which on a busy machine takes seconds).
// For benchmarks that switch one instance between configurations in rounds.
func (in *Instance) Reconfigure(ctx context.Context, params ...string) error {
	old, err := in.children()
	if err != nil {
		return err
	}
	args := append([]string{"-c", in.ConfigDir, "-e"}, params...)
	if out, err := exec.CommandContext(ctx, "/usr/sbin/postconf", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("postconf -e: %w: %s", err, out)
	}
	if err := in.postfix(ctx, "reload"); err != nil {
		return err
	}
	for {
		now, err := in.children()
		if err != nil {
			return err
		}
		var left []string
		for pid, name := range now {
			if old[pid] == name {
				left = append(left, fmt.Sprintf("%s[%d]", name, pid))
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postfix reload: still running after %v: %s", ctx.Err(), strings.Join(left, " "))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// children returns the master's child processes, by pid, with their names.
func (in *Instance) children() (map[int]string, error) {
	b, err := os.ReadFile(filepath.Join(in.QueueDir, "pid", "master.pid"))
	if err != nil {
		return nil, fmt.Errorf("master pid: %w", err)
	}
	master, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("master pid: %w", err)
	}
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid ...": comm may hold anything but ends at the last ')'.
		st := string(b)
		lp, rp := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if lp < 0 || rp < lp {
			continue
		}
		fields := strings.Fields(st[rp+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid != master {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(st[:lp]))
		out[pid] = st[lp+1 : rp]
	}
	return out, nil
}

// Reload makes Postfix read its configuration again (postfix reload).
func (in *Instance) Reload(ctx context.Context) error {
	return in.postfix(ctx, "reload")
}

// Flush asks Postfix to retry deferred mail now (postqueue -f).
func (in *Instance) Flush(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "/usr/sbin/postqueue", "-c", in.ConfigDir, "-f").CombinedOutput()
	if err != nil {
		return fmt.Errorf("postqueue -f: %w: %s", err, out)
	}
	return nil
}

// queueSubdirs hold messages not yet delivered; counting their files is
// faster than postqueue -p and needs no running showq.
var queueSubdirs = []string{"maildrop", "incoming", "active", "deferred", "hold"}

// QueueCount returns how many messages wait in the queue, not yet delivered.
func (in *Instance) QueueCount() (int, error) {
	n := 0
	for _, sub := range queueSubdirs {
		err := filepath.WalkDir(filepath.Join(in.QueueDir, sub), func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				// Postfix removes files as we walk: a vanished one is delivered.
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.Type().IsRegular() {
				n++
			}
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("count queue: %w", err)
		}
	}
	return n, nil
}

// QueueEmpty reports whether no message waits in the queue.
func (in *Instance) QueueEmpty() (bool, error) {
	n, err := in.QueueCount()
	return n == 0, err
}

// WaitQueueEmpty waits until every queued message has left the queue.
func (in *Instance) WaitQueueEmpty(ctx context.Context) error {
	for {
		n, err := in.QueueCount()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("queue still holds %d messages: %w", n, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// startMaster starts Postfix (`postfix start`, which detaches master) and
// a watchdog shell that stops it once its standard input closes: at Stop,
// or when the test binary dies without running its cleanups (a panic, a
// -timeout kill, os.Exit), so no orphaned Postfix keeps running on a
// machine shared by many test runs. (Pdeathsig on master cannot do this:
// master changes its effective uid, which clears it.)
func (in *Instance) startMaster(ctx context.Context) error {
	if err := in.postfix(ctx, "start"); err != nil {
		return err
	}
	// Stop writes "keep": the test's cleanups remove the directory after
	// dumping the log. EOF without it means the test binary died, so the
	// watchdog removes the directory too.
	w := exec.Command("/bin/sh", "-c", `read -r how; "$0" -c "$1" stop; st=$?; [ "$how" = keep ] || rm -rf "$2"; exit $st`,
		PostfixBinary, in.ConfigDir, in.root)
	// Its own process group: a ^C to the test must not kill the watchdog
	// before it has stopped Postfix.
	w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w.Stdout, w.Stderr = &in.watchOut, &in.watchOut
	stdin, err := w.StdinPipe()
	if err != nil {
		return errors.Join(err, in.postfix(ctx, "stop"))
	}
	if err := w.Start(); err != nil {
		return errors.Join(fmt.Errorf("start watchdog: %w", err), in.postfix(ctx, "stop"))
	}
	in.watchdog, in.watchIn = w, stdin
	return nil
}

// Stop stops Postfix (postfix stop, run by the watchdog) and waits for it.
// It is safe to call more than once; Start arranges a call at cleanup.
func (in *Instance) Stop() error {
	in.stopOnce.Do(func() {
		if in.watchdog == nil {
			return
		}
		_, _ = io.WriteString(in.watchIn, "keep\n")
		in.watchIn.Close()
		done := make(chan error, 1)
		go func() { done <- in.watchdog.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				in.stopErr = fmt.Errorf("postfix stop: %w\n%s", err, in.watchOut.String())
			}
		case <-time.After(30 * time.Second):
			in.stopErr = errors.New("postfix stop: still running after 30s")
		}
	})
	return in.stopErr
}

// ClientTLSConfig returns a client configuration that trusts this instance's
// certificate, for STARTTLS to SMTPAddr.
func (in *Instance) ClientTLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(in.CertPEM)
	return &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

func writeSelfSigned(certFile, keyFile string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	return certPEM, nil
}

// Sendmail submits raw through Postfix's sendmail command (postdrop, then
// pickup): the non-SMTP path, where non_smtpd_milters apply.
func (in *Instance) Sendmail(ctx context.Context, from string, to []string, raw []byte) error {
	args := append([]string{"-C", in.ConfigDir, "-i", "-f", from, "--"}, to...)
	cmd := exec.CommandContext(ctx, "/usr/sbin/sendmail", args...)
	cmd.Stdin = bytes.NewReader(raw)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sendmail: %w: %s", err, out)
	}
	return nil
}
