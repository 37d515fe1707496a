package lookupd_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caliopen/caliopen/lookupd"
)

// These tests use Postfix's own table clients, through postmap -q, against
// a running lookupd: what Postfix's smtpd and cleanup do at RCPT and MAIL.

const postmapPath = "/usr/sbin/postmap"

// postmap returns a function running `postmap -c DIR -q KEY TABLE` with a
// private, minimal configuration directory.
func postmap(t *testing.T) func(key, table string) (stdout, stderr string, code int) {
	t.Helper()
	if _, err := os.Stat(postmapPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Postfix is required in CI: %v", err)
		}
		t.Skipf("Postfix not installed: %v", err)
	}
	dir := t.TempDir()
	// An empty main.cf is enough for postmap; it keeps the host's
	// /etc/postfix out of the test.
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return func(key, table string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, postmapPath, "-c", dir, "-q", key, table)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return out.String(), errb.String(), 0
		case errors.As(err, &ee) && ee.Exited():
			return out.String(), errb.String(), ee.ExitCode()
		}
		t.Fatalf("postmap -q %q %s: %v (stderr %q)", key, table, err, errb.String())
		return "", "", -1
	}
}

func TestPostmapSocketmap(t *testing.T) {
	query := postmap(t)
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{})

	for _, tc := range lookupCases {
		table := "socketmap:inet:" + e.sockAddr + ":" + tc.m
		out, stderr, code := query(tc.key, table)
		if v, ok := strings.CutPrefix(tc.want, "OK "); ok {
			if code != 0 || out != v+"\n" {
				t.Errorf("postmap -q %q %s = %q, exit %d (stderr %q); want %q, exit 0", tc.key, tc.m, out, code, stderr, v)
			}
			continue
		}
		// Not found: exit 1, nothing printed, no error.
		if code != 1 || out != "" || stderr != "" {
			t.Errorf("postmap -q %q %s = %q, exit %d (stderr %q); want not found", tc.key, tc.m, out, code, stderr)
		}
	}

	// A key longer than MaxRequestSize: Postfix gets PERM, an error, not a
	// "not found".
	long := strings.Repeat("x", lookupd.DefaultMaxRequestSize) + "@example.org"
	out, stderr, code := query(long, "socketmap:inet:"+e.sockAddr+":mailboxes")
	if code == 0 || out != "" || !strings.Contains(stderr, "permanent error") || !strings.Contains(stderr, "query error") {
		t.Errorf("oversized key: %q, exit %d, stderr %q; want a permanent error", out, code, stderr)
	}

	// Store down: a temporary error that Postfix reports as a failed query.
	e.st.down.Store(true)
	out, stderr, code = query("alice@example.org", "socketmap:inet:"+e.sockAddr+":mailboxes")
	if code != 1 || out != "" ||
		!strings.Contains(stderr, "socketmap server temporary error") || !strings.Contains(stderr, "query error") {
		t.Errorf("store down: %q, exit %d, stderr %q; want postmap's temporary error", out, code, stderr)
	}
}

func TestPostmapTCPTable(t *testing.T) {
	query := postmap(t)
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{})

	for _, tc := range lookupCases {
		table := "tcp:" + e.tcpAddr[tc.m]
		out, stderr, code := query(tc.key, table)
		if v, ok := strings.CutPrefix(tc.want, "OK "); ok {
			if code != 0 || out != v+"\n" {
				t.Errorf("postmap -q %q tcp %s = %q, exit %d (stderr %q); want %q", tc.key, tc.m, out, code, stderr, v)
			}
			continue
		}
		if code != 1 || out != "" || stderr != "" {
			t.Errorf("postmap -q %q tcp %s = %q, exit %d (stderr %q); want not found", tc.key, tc.m, out, code, stderr)
		}
	}
	// Postfix %XX-encodes the space; lookupd decodes it and finds nothing.
	if out, stderr, code := query("alice @example.org", "tcp:"+e.tcpAddr[lookupd.MapMailboxes]); code != 1 || stderr != "" {
		t.Errorf("key with a space: %q, exit %d, stderr %q; want not found", out, code, stderr)
	}

	e.st.down.Store(true)
	out, stderr, code := query("alice@example.org", "tcp:"+e.tcpAddr[lookupd.MapMailboxes])
	if code != 1 || out != "" || !strings.Contains(stderr, "query error") {
		t.Errorf("store down: %q, exit %d, stderr %q; want postmap's query error", out, code, stderr)
	}
}

// postmap -q - sends every key on one persistent connection.
func TestPostmapPersistentConnection(t *testing.T) {
	if _, err := os.Stat(postmapPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Postfix is required in CI: %v", err)
		}
		t.Skipf("Postfix not installed: %v", err)
	}
	st := newTestStore(t)
	populate(t, st)
	e := start(t, st, lookupd.Config{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, postmapPath, "-c", dir, "-q", "-", "socketmap:inet:"+e.sockAddr+":aliases")
	cmd.Stdin = strings.NewReader("team@example.org\nalice@example.org\nalice+x@example.org\nwho@example.org\n")
	out, err := cmd.Output()
	// Exit 1 only says some key was not found.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("postmap -q -: %v", err)
	}
	want := "team@example.org\talice@example.org,bob@example.org,friend@remote.test\n" +
		"alice+x@example.org\talice@example.org\n" +
		"who@example.org\talice@example.org\n"
	if string(out) != want {
		t.Errorf("postmap -q - output:\n%s\nwant:\n%s", out, want)
	}
	checkCounter(t, e.reg, "caliopen_lookupd_lookups_total",
		map[string]string{"protocol": "socketmap", "map": "aliases", "result": "found"}, 3)
}
