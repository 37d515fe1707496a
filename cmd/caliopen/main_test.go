package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// cli runs the binary's entry point in-process against a private data dir.
type cli struct {
	t   *testing.T
	env []string
}

func newCLI(t *testing.T) *cli {
	return &cli{t: t, env: []string{"CALIOPEN_DATA_DIR=" + t.TempDir()}}
}

func (c *cli) run(stdin string, args ...string) (string, error) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, c.env, strings.NewReader(stdin), &out, &errOut)
	return out.String(), err
}

func (c *cli) ok(stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.run(stdin, args...)
	if err != nil {
		c.t.Fatalf("caliopen %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (c *cli) fails(want string, args ...string) {
	c.t.Helper()
	c.failsIn("pw\n", want, args...)
}

func (c *cli) failsIn(stdin, want string, args ...string) {
	c.t.Helper()
	_, err := c.run(stdin, args...)
	if err == nil || !strings.Contains(err.Error(), want) {
		c.t.Fatalf("caliopen %s: error %v, want it to contain %q", strings.Join(args, " "), err, want)
	}
}

func TestAdministration(t *testing.T) {
	c := newCLI(t)
	c.ok("", "domain", "add", "Example.ORG.")
	if out := c.ok("", "domain", "list"); out != "example.org\n" {
		t.Fatalf("domain list = %q", out)
	}
	c.ok("correct horse\n", "user", "add", "--address", "Alice@Example.org", "alice")
	c.ok("pw2\n", "user", "add", "bob")
	c.ok("", "address", "add", "bob@example.org", "bob")
	if out := c.ok("", "user", "list"); !strings.Contains(out, "alice@example.org") || !strings.Contains(out, "bob") {
		t.Fatalf("user list = %q", out)
	}
	c.ok("", "alias", "add", "team@example.org", "alice@example.org", "bob@example.org")
	c.ok("", "alias", "add", "@example.org", "alice@example.org")
	out := c.ok("", "alias", "list", "example.org")
	if !strings.Contains(out, "team@example.org\talice@example.org,bob@example.org") || !strings.Contains(out, "@example.org\talice@example.org") {
		t.Fatalf("alias list = %q", out)
	}
	c.ok("", "alias", "remove", "team@example.org", "bob@example.org")
	if out := c.ok("", "alias", "list", "example.org"); !strings.Contains(out, "team@example.org\talice@example.org\n") {
		t.Fatalf("after removing one target: %q", out)
	}
	c.ok("new password\n", "user", "passwd", "alice")

	// Refusals write nothing.
	c.fails("needs at least two labels", "domain", "add", "localhost")
	c.fails("not allowed", "domain", "add", "exa_mple.org")
	c.fails("already exists", "domain", "add", "example.org")
	c.fails("domain nowhere.org", "user", "add", "--address", "x@nowhere.org", "carol")
	c.fails("not found", "user", "passwd", "carol") // carol was not created
	c.fails("only a-z", "user", "add", "Carol Smith")
	c.fails("--name holds a bidirectional override (U+202E)", "user", "add", "--name", "Carol \u202egnp.exe", "carol")
	c.fails("--name holds a control character (U+0000)", "user", "add", "--name", "Carol\x00", "carol")
	c.fails("already exists", "user", "add", "--address", "alice@example.org", "dave")
	c.fails("not found", "user", "passwd", "dave")
	c.fails("is a mailbox", "alias", "add", "alice@example.org", "bob@example.org")
	c.fails("points at itself", "alias", "add", "x@example.org", "x@example.org")
	c.fails("in use", "domain", "remove", "example.org")
	c.failsIn("", "no password on stdin", "user", "add", "erin")
	if out := c.ok("", "user", "list"); strings.Count(out, "\n") != 2 {
		t.Fatalf("refused commands created users: %q", out)
	}

	c.ok("", "user", "remove", "bob")
	c.ok("", "alias", "remove", "team@example.org")
	c.ok("", "alias", "remove", "@example.org")
	c.ok("", "user", "remove", "alice")
	c.ok("", "domain", "remove", "example.org")
	if out := c.ok("", "domain", "list"); out != "" {
		t.Fatalf("domain list after removal = %q", out)
	}
}

func TestBadConfigurationAndCommands(t *testing.T) {
	c := newCLI(t)
	c.fails(`unknown command "frobnicate"`, "frobnicate")
	c.fails(`store.engine: must be embedded or cassandra`, "--set", "store.engine=oracle", "domain", "list")
	c.fails("no such file", "-c", filepath.Join(t.TempDir(), "missing.toml"), "domain", "list")
	c.fails("unknown subcommand", "domain", "rename")
	_, err := c.run("", "--set", "store.engine=cassandra", "--set", "store.cassandra.hosts=127.0.0.1:1", "--set", "store.cassandra.connect_timeout=1s", "domain", "list")
	if err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("unreachable Cassandra: %v", err)
	}
	var ee *exitError
	_, err = c.run("", "--set", "milter.listen=nope", "deliver", "a@b.org")
	if !errors.As(err, &ee) || ee.code != exTempFail {
		t.Fatalf("deliver with bad config: %v, want exit 75 (EX_TEMPFAIL: Postfix retries)", err)
	}
}

func armoredPrivate(t *testing.T, passphrase string) string {
	t.Helper()
	e, err := openpgp.NewEntity("Alice", "", "alice@example.org", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	if passphrase != "" {
		if err := e.EncryptPrivateKeys([]byte(passphrase), nil); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	w, _ := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err := e.SerializePrivateWithoutSigning(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.String()
}

func TestUserServerKey(t *testing.T) {
	c := newCLI(t)
	c.ok("", "domain", "add", "example.org")
	c.ok("pw\n", "user", "add", "--address", "alice@example.org", "alice")
	if out := c.ok(armoredPrivate(t, ""), "user", "key", "alice"); !strings.Contains(out, "custody: server") {
		t.Fatalf("user key: %q", out)
	}
	c.failsIn(armoredPrivate(t, "secret"), "passphrase-protected", "user", "key", "alice")
	c.failsIn("garbage", "not an armored OpenPGP key", "user", "key", "alice")
	c.failsIn(armoredPrivate(t, ""), "not found", "user", "key", "nobody")
}

// The roles take -c and --set after their name too, and -h/--help prints
// their usage on stdout with a zero exit.
func TestRoleOptions(t *testing.T) {
	c := newCLI(t)
	for _, role := range []string{"serve", "milter", "lookupd", "api"} {
		for _, h := range []string{"--help", "-h"} {
			out := c.ok("", role, h)
			if !strings.Contains(out, "Usage: caliopen [GLOBAL OPTIONS] "+role+" [-c FILE]") || !strings.Contains(out, "--set key=value") {
				t.Errorf("caliopen %s %s printed %q", role, h, out)
			}
		}
		c.fails(role+" takes no arguments, got \"extra\"", role, "extra")
		c.fails("flag provided but not defined: -bogus", role, "--bogus")
		c.fails("no such file", role, "-c", filepath.Join(t.TempDir(), "missing.toml"))
		c.fails("store.engine: must be embedded or cassandra", role, "--set", "store.engine=oracle")
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("log_level = \"loud\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Given on both sides, the one after the role wins.
	c.fails("log_level: must be debug", "-c", filepath.Join(t.TempDir(), "missing.toml"), "serve", "--config", bad)
	c.fails("log_level: must be debug", "serve", "--config="+bad)
}
