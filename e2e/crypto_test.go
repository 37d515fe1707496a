package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// ---------------------------------------------------------------- DKIM

// dkimSigner is a DKIM key whose public half the test DNS server publishes.
type dkimSigner struct {
	domain, selector string
	key              *rsa.PrivateKey
}

func newDKIMSigner(t testing.TB, d *dnsServer, domain, selector string) *dkimSigner {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	d.addTXT(t, selector+"._domainkey."+domain, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der))
	return &dkimSigner{domain: domain, selector: selector, key: key}
}

// sign returns raw with a DKIM-Signature prepended.
func (s *dkimSigner) sign(t testing.TB, raw []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(raw), &dkim.SignOptions{
		Domain:     s.domain,
		Selector:   s.selector,
		Signer:     s.key,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"},
	})
	if err != nil {
		t.Fatalf("dkim sign: %v", err)
	}
	return out.Bytes()
}

// ---------------------------------------------------------------- GnuPG

// gpgHome is one GnuPG home directory (one party's keyring).
type gpgHome struct {
	t   *testing.T
	dir string
}

func newGPGHome(t *testing.T) *gpgHome {
	t.Helper()
	requireTool(t, "gpg", "gpgconf")
	// Short path: gpg-agent's socket lives in the home directory.
	dir, err := os.MkdirTemp("", "e2egpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	g := &gpgHome{t: t, dir: dir}
	t.Cleanup(func() {
		// Stops the agent this home started, and only it.
		_ = exec.Command("gpgconf", "--homedir", dir, "--kill", "all").Run()
		os.RemoveAll(dir)
	})
	return g
}

func (g *gpgHome) run(stdin []byte, args ...string) []byte {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append([]string{"--homedir", g.dir, "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)
	cmd := exec.CommandContext(ctx, "gpg", all...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		g.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// genRSA makes an unprotected RSA key pair (primary signs, subkey encrypts).
func (g *gpgHome) genRSA(name, email string, bits int) {
	g.t.Helper()
	params := fmt.Sprintf(`%%no-protection
Key-Type: RSA
Key-Length: %d
Key-Usage: sign,cert
Subkey-Type: RSA
Subkey-Length: %d
Subkey-Usage: encrypt
Name-Real: %s
Name-Email: %s
Expire-Date: 0
%%commit
`, bits, bits, name, email)
	g.run([]byte(params), "--gen-key")
}

func (g *gpgHome) exportPublic(email string) string {
	return string(g.run(nil, "--armor", "--export", email))
}

func (g *gpgHome) exportSecret(email string) string {
	return string(g.run(nil, "--armor", "--export-secret-keys", email))
}

func (g *gpgHome) importKey(armored string) {
	g.run([]byte(armored), "--import")
}

func (g *gpgHome) fingerprint(email string) string {
	out := string(g.run(nil, "--with-colons", "--fingerprint", email))
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fpr:") {
			f := strings.Split(l, ":")
			return strings.ToUpper(f[9])
		}
	}
	g.t.Fatalf("no fingerprint for %s in %s", email, out)
	return ""
}

// encryptSign encrypts data to recipient and signs it as signer, armored.
func (g *gpgHome) encryptSign(data []byte, signer, recipient string) []byte {
	return g.run(data, "--trust-model", "always", "--armor", "--encrypt", "--sign", "-u", signer, "-r", recipient)
}

// pgpMIME wraps an armored OpenPGP message in multipart/encrypted (RFC 3156).
func pgpMIME(from, to, subject, msgID string, armored []byte) []byte {
	const boundary = "e2e-pgp-boundary-4242"
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n",
		from, to, subject, time.Now().UTC().Format(time.RFC1123Z), msgID)
	fmt.Fprintf(&b, "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"%s\"\r\n\r\n", boundary)
	b.WriteString("This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n")
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n", boundary)
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(string(armored), "\r\n", "\n"), "\n", "\r\n"))
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return []byte(b.String())
}
