package verify

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/verify/dnsresolver"
	"github.com/caliopen/caliopen/verify/internal/dnstest"
)

// arcSealScript seals a message with dkimpy (Debian's python3-dkim), an
// independent ARC implementation: message on stdin, sealed message on stdout.
const arcSealScript = `
import sys, dkim
key = open(sys.argv[1], 'rb').read()
msg = sys.stdin.buffer.read()
hdrs = dkim.arc_sign(msg, b'arc', sys.argv[2].encode(), key, sys.argv[2].encode())
if not hdrs:
    sys.exit('arc_sign produced nothing')
sys.stdout.buffer.write(b''.join(hdrs) + msg)
`

type arcSealer struct {
	python, keyFile, domain string
}

func newARCSealer(t *testing.T, env *authEnv, domain string) *arcSealer {
	t.Helper()
	python := "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import dkim, authres").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("dkimpy not installed: apt-get install python3-dkim python3-authres")
		}
		t.Skip("dkimpy not installed: apt-get install python3-dkim python3-authres")
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "arc.pem")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	publishKey(t, env.dns, "arc._domainkey."+domain, key.Public())
	return &arcSealer{python: python, keyFile: keyFile, domain: domain}
}

// forward does what a mailing list does: records what it verified in
// Authentication-Results, rewrites the message (subject tag, footer), and
// seals it.
func (s *arcSealer) forward(t *testing.T, raw []byte, results string) []byte {
	t.Helper()
	raw = bytes.Replace(raw, []byte("Subject: "), []byte("Subject: [list] "), 1)
	raw = append(raw, []byte("-- \r\nlist footer\r\n")...)
	raw = append([]byte("Authentication-Results: "+s.domain+"; "+results+"\r\n"), raw...)
	cmd := exec.Command(s.python, "-c", arcSealScript, s.keyFile, s.domain)
	cmd.Stdin = bytes.NewReader(raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy arc_sign: %v\n%s", err, stderr.String())
	}
	return out
}

func TestARCChainSealedByDkimpy(t *testing.T) {
	env := newAuthEnv(t)
	list := newARCSealer(t, env, "lists.example.net")
	relay := newARCSealer(t, env, "relay.example.com")

	orig := dkimSign(t, testMessage("alice@example.org", "Meeting at noon."), "example.org", "sel", env.key)
	once := list.forward(t, orig, "dkim=pass header.d=example.org; spf=pass smtp.mailfrom=example.org; dmarc=pass header.from=example.org")
	v := testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: env.dns.Addr, Timeout: time.Second}), func(c *Config) { c.TrustedARCSealers = []string{"lists.example.net"} })
	in := Input{Raw: once, MailFrom: "list-bounces@lists.example.net", ClientIP: "198.51.100.9", Helo: "lists.example.net"}

	t.Run("list rewrote the message: DKIM fails, ARC passes and is trusted", func(t *testing.T) {
		f := verifyOK(t, v, in)
		if f.DKIM.Result != privacyindex.AuthFail || f.DMARC.Result != privacyindex.AuthFail {
			t.Errorf("DKIM %v, DMARC %v; want both fail after the rewrite", f.DKIM.Result, f.DMARC.Result)
		}
		a := f.ARC
		if a.Result != privacyindex.AuthPass || !a.Trusted || a.Instances != 1 || a.Sealer != "lists.example.net" || a.ClaimedCV != "none" {
			t.Errorf("ARC = %+v; want a trusted pass of one instance", a)
		}
		var m privacyindex.MessageFeatures
		f.Apply(&m)
		if m.ARC != privacyindex.AuthPass || !m.ARCTrusted || !m.ARCSealed {
			t.Errorf("features = %+v", m)
		}
	})

	t.Run("valid chain from a sealer we do not trust", func(t *testing.T) {
		u := testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: env.dns.Addr, Timeout: time.Second}))
		f := verifyOK(t, u, in)
		if f.ARC.Result != privacyindex.AuthPass || f.ARC.Trusted {
			t.Errorf("ARC = %+v; want pass, untrusted", f.ARC)
		}
	})

	t.Run("two hops", func(t *testing.T) {
		twice := relay.forward(t, once, "arc=pass")
		u := testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: env.dns.Addr, Timeout: time.Second}), func(c *Config) { c.TrustedARCSealers = []string{"relay.example.com"} })
		f := verifyOK(t, u, Input{Raw: twice})
		if f.ARC.Result != privacyindex.AuthPass || f.ARC.Instances != 2 || f.ARC.Sealer != "relay.example.com" || !f.ARC.Trusted {
			t.Errorf("ARC = %+v; want a trusted pass of two instances", f.ARC)
		}
	})

	t.Run("modified after sealing", func(t *testing.T) {
		bad := in
		bad.Raw = bytes.Replace(once, []byte("Meeting at noon."), []byte("Meeting at one."), 1)
		f := verifyOK(t, v, bad)
		if f.ARC.Result != privacyindex.AuthFail || f.ARC.Trusted || f.ARC.Error == "" {
			t.Errorf("ARC = %+v; want fail", f.ARC)
		}
	})
}

// TestCanonicalizationRFC6376Example is the worked example of RFC 6376 §3.4.6.
func TestCanonicalizationRFC6376Example(t *testing.T) {
	m := message.Parse([]byte("A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n"), message.Options{})
	fields, body := []field(m.Header()), m.Body()
	if len(fields) != 2 {
		t.Fatalf("fields = %+v", fields)
	}
	if got := relaxedHeader(fields[0].Name, fields[0].Raw) + relaxedHeader(fields[1].Name, fields[1].Raw); got != "a:X\r\nb:Y Z\r\n" {
		t.Errorf("relaxed headers = %q", got)
	}
	if got := fields[0].Raw + fields[1].Raw; got != "A: X\r\nB : Y\t\r\n\tZ  \r\n" {
		t.Errorf("simple headers = %q", got)
	}
	if got := string(canonicalBody(body, true)); got != " C\r\nD E\r\n" {
		t.Errorf("relaxed body = %q", got)
	}
	if got := string(canonicalBody(body, false)); got != " C \r\nD \t E\r\n" {
		t.Errorf("simple body = %q", got)
	}
	if got := string(canonicalBody(nil, false)); got != "\r\n" {
		t.Errorf("simple empty body = %q", got)
	}
	if got := canonicalBody(nil, true); len(got) != 0 {
		t.Errorf("relaxed empty body = %q", got)
	}
	if got := emptyB("X: a=1; b=abc\r\n def; bh=xyz\r\n"); got != "X: a=1; b=; bh=xyz\r\n" {
		t.Errorf("emptyB = %q", got)
	}
}
