package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/caliopen/caliopen/privacyindex"
)

// These tests pin the rule "only what was verified counts" on the two
// claims a sender controls completely: a Content-Type saying "encrypted",
// and a key saying nothing about whose it is.

const claimHead = "From: Alice <alice@example.org>\nTo: user@caliopen.test\nSubject: ...\nMIME-Version: 1.0\n"

// wrapPGPMIME is pgpMIME with a nested-entity form (no message header).
func wrapPGPMIME(boundary, second string) string {
	return `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="` + boundary + `"

--` + boundary + `
Content-Type: application/pgp-encrypted

Version: 1

--` + boundary + `
Content-Type: application/octet-stream

` + second + `
--` + boundary + `--
`
}

func mislabelledProblem(p PGPFacts) bool {
	return slices.ContainsFunc(p.Problems, func(s string) bool { return strings.Contains(s, "labelled encrypted") })
}

func TestEncryptionLabelIsNotEncryption(t *testing.T) {
	g := newGnuPG(t)
	userFpr := g.genKey(t, "User <user@caliopen.test>", "ed25519", "cv25519")
	senderFpr := g.genKey(t, "Alice <alice@example.org>", "ed25519", "")
	inner := crlf("Content-Type: text/plain\n\nPay the invoice by Friday.\n")
	real := string(g.run(t, []byte(inner), "--armor", "--encrypt", "-r", userFpr))
	v := testVerifier(nil)

	// The first packet of a real message: a PKESK with no encrypted data after it.
	bin := g.run(t, []byte(inner), "--encrypt", "-r", userFpr)
	op, err := packet.NewOpaqueReader(bytes.NewReader(bin)).Next()
	if err != nil || op.Tag != 1 {
		t.Fatalf("first packet = %v, %v; want a PKESK", op, err)
	}
	var eskOnly bytes.Buffer
	if err := op.Serialize(&eskOnly); err != nil {
		t.Fatal(err)
	}

	notEncrypted := map[string]string{
		"hello in clear":       "hello in clear",
		"signed only":          string(g.run(t, []byte(inner), "--armor", "--sign", "-u", senderFpr)),
		"fake armor":           "-----BEGIN PGP MESSAGE-----\n\naGVsbG8gaW4gY2xlYXI=\n-----END PGP MESSAGE-----",
		"session key, no data": armorMessageBytes(eskOnly.Bytes()),
	}
	for name, second := range notEncrypted {
		t.Run("PGP/MIME, "+name, func(t *testing.T) {
			f := verifyOK(t, v, Input{Raw: pgpMIME("Subject: ...\n", second)})
			p := f.PGP
			if p.Encryption != privacyindex.EncNone || p.Strength != privacyindex.StrengthWeak || p.Integrity || p.ProtectedHeaders || len(p.Recipients) != 0 {
				t.Errorf("PGP = %+v; want not encrypted, nothing claimed from it", p)
			}
			if !mislabelledProblem(p) {
				t.Errorf("problems = %q; want the false label reported", p.Problems)
			}
			var m privacyindex.MessageFeatures
			f.Apply(&m)
			m.TLSVersion, m.TLSCipher = "TLSv1.3", "TLS_AES_256_GCM_SHA384"
			if m.Encryption != privacyindex.EncNone {
				t.Errorf("features encryption = %v; want none", m.Encryption)
			}
			if r := privacyindex.Message(m); r.Score > 59 {
				t.Errorf("PI = %d %s; a readable message must stay at C or below", r.Score, r.Band)
			}
		})
	}

	t.Run("inline fake armor", func(t *testing.T) {
		raw := []byte(crlf(claimHead + "Content-Type: text/plain\n\n" + notEncrypted["fake armor"] + "\n"))
		if p := verifyOK(t, v, Input{Raw: raw}).PGP; p.Encryption != privacyindex.EncNone || p.Strength != privacyindex.StrengthWeak {
			t.Errorf("PGP = %+v; want not encrypted", p)
		}
	})

	t.Run(".pgp attachment that only starts like a packet", func(t *testing.T) {
		fake := append([]byte{0x84, 0x03}, []byte("hello in clear")...) // old-format tag 1, then text
		raw := []byte(crlf(claimHead+`Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: text/plain

See the attached document.
--mix
Content-Type: application/octet-stream; name="doc.pdf.pgp"
Content-Disposition: attachment; filename="doc.pdf.pgp"
Content-Transfer-Encoding: base64

`) + base64.StdEncoding.EncodeToString(fake) + crlf("\n--mix--\n"))
		if p := verifyOK(t, v, Input{Raw: raw}).PGP; p.Encryption != privacyindex.EncNone {
			t.Errorf("PGP = %+v; want not encrypted", p)
		}
	})

	t.Run("one real and one fake PGP/MIME entity: partial", func(t *testing.T) {
		raw := []byte(crlf(claimHead + `Content-Type: multipart/mixed; boundary="mix"

--mix
` + wrapPGPMIME("e1", real) + `
--mix
` + wrapPGPMIME("e2", "hello in clear") + `
--mix--
`))
		p := verifyOK(t, v, Input{Raw: raw}).PGP
		if p.Encryption != privacyindex.EncPartial || p.Strength != privacyindex.StrengthStrong || !p.Integrity {
			t.Errorf("PGP = %+v; want partial, strong (the real part), integrity", p)
		}
	})

	t.Run("real encryption still counts", func(t *testing.T) {
		p := verifyOK(t, v, Input{Raw: pgpMIME("Subject: ...\n", real)}).PGP
		if p.Encryption != privacyindex.EncMIME || p.Strength != privacyindex.StrengthStrong || !p.ProtectedHeaders || mislabelledProblem(p) {
			t.Errorf("PGP = %+v; want MIME, strong, hidden subject", p)
		}
		// Passphrase-encrypted (SKESK): encrypted, but its strength is the passphrase's.
		sym := g.run(t, []byte(inner), "--armor", "--symmetric", "--passphrase", "correct horse")
		p = verifyOK(t, v, Input{Raw: pgpMIME("Subject: x\n", string(sym))}).PGP
		if p.Encryption != privacyindex.EncMIME || p.Strength != privacyindex.StrengthWeak {
			t.Errorf("symmetric: PGP = %+v; want MIME, weak", p)
		}
	})
}

// openssl runs the openssl command line in dir.
func openssl(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

func TestSMIMEEnvelopedIsChecked(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	openssl(t, dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
		"-subj", "/CN=user@caliopen.test", "-days", "2")
	if err := os.WriteFile(filepath.Join(dir, "msg.txt"), []byte(crlf("Content-Type: text/plain\n\nPay the invoice by Friday.\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "From: Alice <alice@example.org>\nTo: user@caliopen.test\nSubject: s/mime\n"
	v := testVerifier(nil)
	check := func(t *testing.T, raw []byte, want privacyindex.Encryption) PGPFacts {
		t.Helper()
		p := verifyOK(t, v, Input{Raw: raw}).PGP
		if p.Encryption != want {
			t.Errorf("encryption = %v; want %v (PGP %+v)", p.Encryption, want, p)
		}
		return p
	}

	// openssl writes a whole MIME entity (headers, base64 body).
	for name, args := range map[string][]string{
		"enveloped, DER":         {"cms", "-encrypt", "-aes256", "-in", "msg.txt", "cert.pem"},
		"enveloped, BER stream":  {"cms", "-encrypt", "-stream", "-aes256", "-in", "msg.txt", "cert.pem"},
		"authEnveloped, AES-GCM": {"cms", "-encrypt", "-aes-256-gcm", "-in", "msg.txt", "cert.pem"},
	} {
		t.Run(name, func(t *testing.T) {
			entity := openssl(t, dir, args...)
			check(t, []byte(crlf(head+string(entity))), privacyindex.EncMIME)
		})
	}
	t.Run("enveloped, body not transfer-encoded as labelled", func(t *testing.T) {
		// Some gateways drop Content-Transfer-Encoding: base64 is still
		// recognised, and raw DER is too.
		der := openssl(t, dir, "cms", "-encrypt", "-aes256", "-outform", "DER", "-in", "msg.txt", "cert.pem")
		ct := "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n\n"
		check(t, []byte(crlf(head+ct+base64.StdEncoding.EncodeToString(der)+"\n")), privacyindex.EncMIME)
		check(t, append([]byte(crlf(head+ct)), der...), privacyindex.EncMIME)
	})

	signedDER := openssl(t, dir, "cms", "-sign", "-nodetach", "-outform", "DER", "-in", "msg.txt", "-signer", "cert.pem", "-inkey", "key.pem")
	for name, body := range map[string]string{
		"plaintext body":           "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n\nhello in clear\n",
		"base64 plaintext":         "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\nContent-Transfer-Encoding: base64\n\n" + base64.StdEncoding.EncodeToString([]byte("hello in clear")) + "\n",
		"signed-data as enveloped": "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\nContent-Transfer-Encoding: base64\n\n" + base64.StdEncoding.EncodeToString(signedDER) + "\n",
		"authenveloped, plaintext": "Content-Type: application/x-pkcs7-mime; smime-type=authEnveloped-data\n\nhello in clear\n",
		".p7m without smime-type":  "Content-Type: application/pkcs7-mime; name=\"smime.p7m\"\n\nhello in clear\n",
	} {
		t.Run("not enveloped: "+name, func(t *testing.T) {
			p := check(t, []byte(crlf(head+body)), privacyindex.EncNone)
			if p.Strength != privacyindex.StrengthWeak || p.ProtectedHeaders {
				t.Errorf("PGP = %+v", p)
			}
		})
	}
	t.Run("nested: real beside text is partial, fake is none", func(t *testing.T) {
		entity := string(openssl(t, dir, "cms", "-encrypt", "-aes256", "-in", "msg.txt", "cert.pem"))
		_, entity, _ = strings.Cut(entity, "Content-Type:") // drop openssl's MIME-Version
		mixed := func(second string) []byte {
			return []byte(crlf(head + "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"mix\"\n\n--mix\nContent-Type: text/plain\n\nsee attached\n--mix\n" + second + "\n--mix--\n"))
		}
		check(t, mixed("Content-Type:"+entity), privacyindex.EncPartial)
		check(t, mixed("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nhello in clear"), privacyindex.EncNone)
	})
}

func TestSignerMustBearTheFromAddress(t *testing.T) {
	g := newGnuPG(t)
	aliceFpr := g.genKey(t, "Alice <alice@example.org>", "ed25519", "")
	malloryFpr := g.genKey(t, "Mallory <mallory@evil.test>", "ed25519", "")
	upperFpr := g.genKey(t, "Alice Upper <ALICE@Example.ORG>", "ed25519", "")
	revokedFpr := g.genKey(t, "Alice Old <alice@example.org>", "ed25519", "")
	g.run(t, nil, "--quick-add-uid", revokedFpr, "Alice New <alice@new.example>")
	g.run(t, nil, "--quick-revoke-uid", revokedFpr, "Alice Old <alice@example.org>")
	pub := func(fpr string) string { return string(g.run(t, nil, "--armor", "--export", fpr)) }
	content := "Content-Type: text/plain; charset=utf-8\n\nPay the invoice by Friday."
	head := crlf("From: Alice <alice@example.org>\nTo: user@caliopen.test\nSubject: invoice\nMIME-Version: 1.0\n")
	verifier := func(fprs ...string) *Verifier {
		var armored []string
		for _, f := range fprs {
			armored = append(armored, pub(f))
		}
		return testVerifier(nil, func(c *Config) {
			c.Keys = KeyLookupFunc(func(_ context.Context, a string) ([]string, error) {
				if a == "alice@example.org" {
					return armored, nil
				}
				return nil, nil
			})
		})
	}

	for _, c := range []struct {
		name   string
		signer string
		want   privacyindex.Signature
	}{
		// The key is stored under Alice's address (say ingest kept the key
		// Mallory attached to a message "from" Alice), but it is Mallory's.
		{"known key without a user ID for From", malloryFpr, privacyindex.SigValidUnknownKey},
		{"user ID whose only From match is revoked", revokedFpr, privacyindex.SigValidUnknownKey},
		{"user ID matching From in another case", upperFpr, privacyindex.SigValid},
		{"user ID matching From", aliceFpr, privacyindex.SigValid},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw := []byte(head + g.signedEntity(t, c.signer, content, false))
			p := verifyOK(t, verifier(c.signer), Input{Raw: raw}).PGP
			if p.Signature != c.want || p.SignerFingerprint != c.signer || !p.SignerKnown {
				t.Errorf("signature = %v by %q (known %v); want %v by %s, known", p.Signature, p.SignerFingerprint, p.SignerKnown, c.want, c.signer)
			}
		})
	}

	t.Run("the signer recorded is the one that decided", func(t *testing.T) {
		// Mallory's key travels in the message (so his signature verifies,
		// unknown key) and his signature comes first; Alice's known key
		// signs the second part and decides the result.
		two := func(tamperAlice bool) []byte {
			return []byte(head + crlf(`Content-Type: multipart/mixed; boundary="mix"

--mix
`) + g.signedEntity(t, malloryFpr, content, false) + crlf(`
--mix
`) + g.signedEntity(t, aliceFpr, content, tamperAlice) + crlf(`
--mix
Content-Type: application/pgp-keys

`+pub(malloryFpr)+`
--mix--
`))
		}
		p := verifyOK(t, verifier(aliceFpr), Input{Raw: two(false)}).PGP
		if p.Signature != privacyindex.SigValid || p.SignerFingerprint != aliceFpr || !p.SignerKnown {
			t.Errorf("signature = %v by %q (known %v); want valid by Alice %s", p.Signature, p.SignerFingerprint, p.SignerKnown, aliceFpr)
		}
		// Mallory's key stored for Alice: both are known, only Alice's
		// matches From, and hers decides wherever it comes.
		p = verifyOK(t, verifier(malloryFpr, aliceFpr), Input{Raw: two(false)}).PGP
		if p.Signature != privacyindex.SigValid || p.SignerFingerprint != aliceFpr {
			t.Errorf("both known: signature = %v by %q; want valid by Alice", p.Signature, p.SignerFingerprint)
		}
		// An invalid signature decides: no valid signer to name.
		p = verifyOK(t, verifier(aliceFpr), Input{Raw: two(true)}).PGP
		if p.Signature != privacyindex.SigInvalid || p.SignerFingerprint != "" || p.SignerKnown {
			t.Errorf("tampered: signature = %v by %q (known %v); want invalid, no signer", p.Signature, p.SignerFingerprint, p.SignerKnown)
		}
	})
}
