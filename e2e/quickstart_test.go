package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caliopen/caliopen/internal/postfixtest"
)

// quickStartHeading names the README section TestQuickStart follows.
const quickStartHeading = "## Quick start beside Postfix"

// readmeSteps returns the command lines of the first ```sh block under
// heading in README.md, without comments and blank lines.
func readmeSteps(t *testing.T, heading string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	inSection, inBlock := false, false
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !inSection:
			inSection = line == heading
		case !inBlock && strings.HasPrefix(line, "## "):
			t.Fatalf("README.md: no ```sh block under %q", heading)
		case !inBlock:
			inBlock = line == "```sh"
		case line == "```":
			if len(steps) == 0 {
				t.Fatalf("README.md: the ```sh block under %q is empty", heading)
			}
			return steps
		default:
			if i := strings.Index(line, " #"); i >= 0 {
				line = line[:i]
			}
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				steps = append(steps, line)
			}
		}
	}
	t.Fatalf("README.md: no complete ```sh block under %q", heading)
	return nil
}

// TestQuickStart runs the README's quick start beside Postfix as written,
// against a private Postfix whose smtpd, cleanup and trivial-rewrite are
// chrooted as on Debian, then sends mail by SMTP and reads it through the API.
//
// The steps run with /bin/sh from the repository's root. What changes is only
// where things are, never what is done: /var/spool/postfix is the instance's
// queue directory, /etc/postfix its configuration directory (and MAIL_CONFIG
// points postfix(1) at it), /usr/local/bin a temporary directory first in
// PATH, contrib/caliopen.toml a copy with the queue directory's path changed,
// and CALIOPEN_* variables give the data directory and the loopback ports of
// the API and the operator endpoint (8080 and 9465 may be taken on a shared
// machine) and the test's DNS server. The contrib/postfix fragments are
// appended unchanged. A step the test does not recognise fails it, so a
// README change that breaks the path breaks this test.
func TestQuickStart(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	postfixtest.Require(t)
	requireTool(t, "go", "systemd-sysusers", "install")
	steps := readmeSteps(t, quickStartHeading)

	dns := startDNS(t)
	pf := postfixtest.Start(t, postfixtest.Options{Chroot: true, Fresh: true})
	master, err := os.ReadFile(filepath.Join(pf.ConfigDir, "master.cf"))
	if err != nil {
		t.Fatal(err)
	}
	chrooted := map[string]bool{}
	for _, line := range strings.Split(string(master), "\n") {
		if f := strings.Fields(line); len(f) == 8 && f[4] == "y" {
			chrooted[f[7]] = true
		}
	}
	if !chrooted["smtpd"] || !chrooted["cleanup"] || !chrooted["trivial-rewrite"] {
		t.Fatalf("smtpd, cleanup and trivial-rewrite must run chrooted, as on Debian; chrooted: %v", chrooted)
	}
	tmp := t.TempDir()
	binDir := filepath.Join(tmp, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(repoRoot(), "contrib", "caliopen.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(example, []byte("/var/spool/postfix/")) {
		t.Fatal("contrib/caliopen.toml names no socket in /var/spool/postfix: the quick start is not beside Postfix")
	}
	cfgCopy := filepath.Join(tmp, "caliopen.toml")
	if err := os.WriteFile(cfgCopy, bytes.ReplaceAll(example, []byte("/var/spool/postfix/"), []byte(pf.QueueDir+"/")), 0o644); err != nil {
		t.Fatal(err)
	}
	apiAddr, opAddr := freeAddr(t), freeAddr(t)
	env := append(baseEnv(),
		"PATH="+binDir+":"+os.Getenv("PATH"),
		"MAIL_CONFIG="+pf.ConfigDir,
		"CALIOPEN_DATA_DIR="+filepath.Join(tmp, "data"),
		"CALIOPEN_API_LISTEN="+apiAddr,
		"CALIOPEN_OPERATOR_LISTEN="+opAddr,
		"CALIOPEN_DNS_SERVER="+dns.Addr,
		"CALIOPEN_DNS_TIMEOUT=2s",
	)
	where := strings.NewReplacer(
		"/var/spool/postfix", pf.QueueDir,
		"/etc/postfix", pf.ConfigDir,
		"/usr/local/bin", binDir,
		"contrib/caliopen.toml", cfgCopy,
	)

	var serve *proc
	var user, domain string
	for i, step := range steps {
		f := strings.Fields(step)
		switch {
		case f[0] == "go" && f[1] == "build", f[0] == "systemd-sysusers", f[0] == "install",
			f[0] == "cat" && len(f) == 4 && f[2] == ">>", step == "postfix reload":
		case f[0] == "caliopen" && len(f) > 1 && f[1] == "serve":
			if serve != nil {
				t.Fatalf("README step %d: a second serve: %q", i+1, step)
			}
		case f[0] == "caliopen" && len(f) > 2:
			// The administration commands: keep what the checks need.
			switch f[1] + " " + f[2] {
			case "domain add":
				domain = f[3]
			case "user add":
				user = f[len(f)-1]
			}
		default:
			t.Fatalf("README step %d %q: not a step this test knows; teach it (e2e/quickstart_test.go) or fix the README", i+1, step)
		}
		line := where.Replace(step)
		shell := func(ctx context.Context) *exec.Cmd {
			cmd := exec.CommandContext(ctx, "/bin/sh", "-c", "exec "+line)
			cmd.Dir, cmd.Env = repoRoot(), env
			return cmd
		}
		if f[0] == "caliopen" && f[1] == "serve" {
			serve = startProc(t, step, shell(context.Background()))
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := shell(ctx)
		// The password for user add; nothing else reads its standard input.
		cmd.Stdin = strings.NewReader(password + "\n")
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("README step %d %q (run as %q): %v\n%s", i+1, step, line, err, out)
		}
	}
	if serve == nil || user == "" || domain == "" {
		t.Fatalf("README quick start lacks serve, domain add or user add: %q", steps)
	}
	serve.waitHealthy(opAddr, 60*time.Second)
	serve.waitListening("unix:"+pf.MilterSocket(), 10*time.Second)
	serve.waitListening("unix:"+pf.LookupdSocket(), 10*time.Second)
	checkSocketsPrivate(t, pf)

	// A message with the header fields cleanup drops, which are then not stored.
	rcpt := user + "@" + domain
	kept := msg("Sam Sender <sam@plain.test>", rcpt, "Quick start", "qs1@plain.test", "It works.\n")
	sent := bytes.Replace(kept, []byte("\r\n\r\n"), []byte("\r\nReturn-Path: <forged@plain.test>\r\nContent-Length: 9\r\nBcc: hidden@plain.test\r\n\r\n"), 1)
	mustDeliver(t, pf, true, "sam@plain.test", []string{rcpt}, sent)

	// Logged in with the shipped token lifetimes (docs/api.md): the answer's
	// expires_at is the idle expiry, api.token_idle (168 h), within
	// api.token_ttl (720 h).
	api := &apiClient{t: t, base: "http://" + apiAddr, user: user}
	var tok struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	before := time.Now()
	api.must("POST", "/login", map[string]string{"username": user, "password": password}, &tok)
	api.token = tok.Token
	if ttl := tok.ExpiresAt.Sub(before); tok.Token == "" || ttl < 167*time.Hour || ttl > 169*time.Hour {
		t.Errorf("login: token %q expires in %s, want 168h (api.token_idle)", tok.Token, ttl)
	}
	m := api.waitMessage("Quick start", 20*time.Second)
	var raw []byte
	api.must("GET", "/messages/"+m.ID+"/raw", nil, &raw)
	if !bytes.Equal(raw, kept) {
		t.Errorf("stored message is not the sent one minus Return-Path, Content-Length and Bcc:\n got %q\nwant %q", raw, kept)
	}

	// lookupd answers through its socket: an unknown mailbox is refused at
	// RCPT (smtpd), an alias reaches its target (cleanup's virtual_alias_maps).
	tr := sendOne(t, pf, false, "sam@plain.test", []string{"nobody-here@" + domain}, msg("sam@plain.test", "nobody-here@"+domain, "Nobody", "qs2@plain.test", "x\n"))
	if len(tr.Rcpt) != 1 || tr.Rcpt[0].Code != 550 {
		t.Errorf("RCPT to an unknown mailbox = %+v, want 550", tr.Rcpt)
	}
	for _, step := range steps {
		if f := strings.Fields(step); len(f) == 5 && f[0] == "caliopen" && f[1] == "alias" && f[2] == "add" && f[4] == rcpt {
			subject := "Alias " + f[3]
			mustDeliver(t, pf, false, "sam@plain.test", []string{f[3]}, msg("sam@plain.test", f[3], subject, "qs3@plain.test", "y\n"))
			api.waitMessage(subject, 20*time.Second)
		}
	}
	for _, bad := range []string{"warning: connect to", "fatal:", "panic:", "milter-reject"} {
		if strings.Contains(pf.Log(), bad) {
			t.Errorf("Postfix logged %q:\n%s", bad, pf.Log())
		}
	}
}

// checkSocketsPrivate checks that the milter's and lookupd's sockets are
// Postfix's to reach and no other local user's: a directory of mode 2750 and
// group postfix, sockets of mode 0660.
func checkSocketsPrivate(t *testing.T, pf *postfixtest.Instance) {
	t.Helper()
	g, err := user.LookupGroup("postfix")
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	dir := filepath.Dir(pf.MilterSocket())
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, os.ModeDir | os.ModeSetgid | 0o750},
		{pf.MilterSocket(), os.ModeSocket | 0o660},
		{pf.LookupdSocket(), os.ModeSocket | 0o660},
	} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != c.mode || int(st.Gid) != gid {
			t.Errorf("%s: mode %v group %d, want mode %v group postfix (%d)", c.path, fi.Mode(), st.Gid, c.mode, gid)
		}
	}
	if fi, err := os.Stat(dir); err == nil {
		if u, err := user.Lookup("caliopen"); err == nil && fmt.Sprint(fi.Sys().(*syscall.Stat_t).Uid) != u.Uid {
			t.Errorf("%s belongs to uid %d, want caliopen (%s)", dir, fi.Sys().(*syscall.Stat_t).Uid, u.Uid)
		}
	}
}
