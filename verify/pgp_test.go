package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/caliopen/caliopen/privacyindex"
)

// gnupg drives a real GnuPG in a private home: the peer our OpenPGP code must
// interoperate with.
type gnupg struct{ home string }

func newGnuPG(t *testing.T) *gnupg {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("gpg is required in CI")
		}
		t.Skip("gpg not installed")
	}
	// A short path: gpg-agent's socket path must fit in sun_path.
	home, err := os.MkdirTemp("/tmp", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	g := &gnupg{home: home}
	t.Cleanup(func() {
		kill := exec.Command("gpgconf", "--kill", "all")
		kill.Env = append(os.Environ(), "GNUPGHOME="+home)
		_ = kill.Run()
		os.RemoveAll(home)
	})
	return g
}

func (g *gnupg) run(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	base := []string{"--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "", "--trust-model", "always"}
	cmd := exec.Command("gpg", append(base, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.home)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gpg %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// genKey creates a key for uid (primary algo, optional encryption subkey) and
// returns its fingerprint.
func (g *gnupg) genKey(t *testing.T, uid, algo, encAlgo string) string {
	t.Helper()
	g.run(t, nil, "--quick-gen-key", uid, algo, "sign", "never")
	var fpr string
	for line := range strings.SplitSeq(string(g.run(t, nil, "--with-colons", "--list-keys", uid)), "\n") {
		if strings.HasPrefix(line, "fpr:") {
			fpr = strings.Split(line, ":")[9]
			break
		}
	}
	if fpr == "" {
		t.Fatalf("no fingerprint for %s", uid)
	}
	if encAlgo != "" {
		g.run(t, nil, "--quick-add-key", fpr, encAlgo, "encr", "never")
	}
	return fpr
}

func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// pgpMIME wraps gpg's armored output in an RFC 3156 multipart/encrypted message.
func pgpMIME(headers, armored string) []byte {
	return []byte(crlf(`From: Alice <alice@example.org>
To: User <user@caliopen.test>
Date: Thu, 26 Nov 2026 06:00:00 +0000
Message-ID: <pgp@example.org>
MIME-Version: 1.0
` + headers + `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";
 boundary="enc-boundary"

This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)
--enc-boundary
Content-Type: application/pgp-encrypted
Content-Description: PGP/MIME version identification

Version: 1

--enc-boundary
Content-Type: application/octet-stream; name="encrypted.asc"
Content-Disposition: inline; filename="encrypted.asc"

` + armored + `
--enc-boundary--
`))
}

// signedEntity builds an RFC 3156 multipart/signed entity around content,
// signed by gpg as a detached armored signature over the exact part bytes.
func (g *gnupg) signedEntity(t *testing.T, signer, content string, tamper bool) string {
	t.Helper()
	content = crlf(content)
	sig := g.run(t, []byte(content), "--armor", "--detach-sign", "--digest-algo", "SHA256", "-u", signer)
	if tamper {
		content = strings.Replace(content, "Pay", "Do not pay", 1)
	}
	return crlf(`Content-Type: multipart/signed; micalg=pgp-sha256;
 protocol="application/pgp-signature"; boundary="sig-boundary"

--sig-boundary
`) + content + crlf(`
--sig-boundary
Content-Type: application/pgp-signature; name="signature.asc"

`+string(sig)+`
--sig-boundary--
`)
}

func autocryptHeader(t *testing.T, g *gnupg, addr, fpr string) string {
	t.Helper()
	bin := g.run(t, nil, "--export", fpr)
	b64 := base64.StdEncoding.EncodeToString(bin)
	var folded strings.Builder
	for len(b64) > 70 {
		folded.WriteString("\n " + b64[:70])
		b64 = b64[70:]
	}
	folded.WriteString("\n " + b64)
	return "Autocrypt: addr=" + addr + "; prefer-encrypt=mutual; keydata=" + folded.String() + "\n"
}

// armorMessageBytes armors a binary OpenPGP message as gpg would.
func armorMessageBytes(b []byte) string {
	var buf bytes.Buffer
	w, _ := armor.Encode(&buf, "PGP MESSAGE", nil)
	w.Write(b)
	w.Close()
	return buf.String()
}

func keysFor(addr, armored string) KeyLookup {
	return KeyLookupFunc(func(_ context.Context, a string) ([]string, error) {
		if a == addr {
			return []string{armored}, nil
		}
		return nil, nil
	})
}

func TestOpenPGPWithGnuPG(t *testing.T) {
	g := newGnuPG(t)
	userFpr := g.genKey(t, "User <user@caliopen.test>", "rsa3072", "rsa3072")
	senderFpr := g.genKey(t, "Alice <alice@example.org>", "ed25519", "")
	userSecret := string(g.run(t, nil, "--armor", "--export-secret-keys", userFpr))
	senderPublic := string(g.run(t, nil, "--armor", "--export", senderFpr))
	known := keysFor("alice@example.org", senderPublic)

	inner := crlf("Content-Type: text/plain; charset=utf-8\n\nPay the invoice by Friday.\n")
	encSigned := string(g.run(t, []byte(inner), "--armor", "--encrypt", "--sign", "-r", userFpr, "-u", senderFpr))
	encOnly := string(g.run(t, []byte(inner), "--armor", "--encrypt", "-r", userFpr))

	verifier := func(keys KeyLookup) *Verifier {
		return testVerifier(nil, func(c *Config) { c.Keys = keys })
	}

	t.Run("PGP/MIME signed by a known sender (PI vector 5)", func(t *testing.T) {
		raw := pgpMIME("Subject: ...\n", encSigned)
		f := verifyOK(t, verifier(known), Input{Raw: raw, RecipientKeys: []string{userSecret}})
		p := f.PGP
		if p.Encryption != privacyindex.EncMIME || p.Strength != privacyindex.StrengthStrong || !p.Integrity || !p.Decrypted {
			t.Errorf("PGP = %+v; want MIME, strong, integrity, decrypted", p)
		}
		if p.Signature != privacyindex.SigValid || p.SignerFingerprint != senderFpr || !p.SignerKnown {
			t.Errorf("signature = %v by %q (known %v); want valid by %s", p.Signature, p.SignerFingerprint, p.SignerKnown, senderFpr)
		}
		if len(p.Recipients) != 1 || p.Recipients[0].Algorithm != "rsa" || p.Recipients[0].Bits != 3072 || !p.Recipients[0].BitsExact {
			t.Errorf("recipients = %+v; want one exact RSA-3072", p.Recipients)
		}
		if !p.ProtectedHeaders {
			t.Error("outer Subject \"...\" not seen as a hidden subject")
		}
		// The per-recipient entry point sees the same; without the key, less.
		if alone := verifier(known).OpenPGP(t.Context(), Input{Raw: raw, RecipientKeys: []string{userSecret}}); alone.Signature != privacyindex.SigValid || !alone.Decrypted {
			t.Errorf("OpenPGP = %+v; want the same facts as Verify", alone)
		}
		if other := verifier(known).OpenPGP(t.Context(), Input{Raw: raw}); other.Signature != privacyindex.SigUnknown || other.Decrypted {
			t.Errorf("OpenPGP without the key = %+v; want unknown, not decrypted", other)
		}
		var m privacyindex.MessageFeatures
		f.Apply(&m)
		if m.Encryption != privacyindex.EncMIME || m.Strength != privacyindex.StrengthStrong || m.Signature != privacyindex.SigValid || !m.ProtectedHeaders {
			t.Errorf("features = %+v", m)
		}
		// Vector 5 as ingest completes it: TLS 1.3, the imported key first
		// seen. (Our hidden Subject adds X1 +3 over the vector's 73, and
		// cap K4 holds it at 76 within B.)
		m.TLSVersion, m.TLSCipher, m.Key = "TLSv1.3", "TLS_AES_256_GCM_SHA384", privacyindex.KeyFirstSeen
		if r := privacyindex.Message(m); r.Band != "B" || r.Score != 76 {
			t.Errorf("PI = %d %s; want 76 B (facts %+v)", r.Score, r.Band, r.Facts)
		}
		m.ProtectedHeaders = false
		if r := privacyindex.Message(m); r.Score != 73 || r.Band != "B" {
			t.Errorf("PI without hidden subject = %d %s; want vector 5's 73 B", r.Score, r.Band)
		}
	})

	t.Run("signer key only in the Autocrypt header: valid, unknown key", func(t *testing.T) {
		raw := pgpMIME("Subject: invoice\n"+autocryptHeader(t, g, "alice@example.org", senderFpr), encSigned)
		f := verifyOK(t, verifier(nil), Input{Raw: raw, RecipientKeys: []string{userSecret}})
		if f.PGP.Signature != privacyindex.SigValidUnknownKey || f.PGP.SignerKnown {
			t.Errorf("signature = %v; want valid, unknown key", f.PGP.Signature)
		}
		if f.PGP.ProtectedHeaders {
			t.Error("a normal Subject and no inner headers reported as protected")
		}
		if len(f.PGP.Keys) != 1 {
			t.Fatalf("harvested = %+v; want the Autocrypt key", f.PGP.Keys)
		}
		k := f.PGP.Keys[0]
		if k.Error != "" || k.Key.Fingerprint != senderFpr || k.Key.Algorithm != "ed25519" || k.Key.Source != "autocrypt" ||
			k.PreferEncrypt != "mutual" || k.Addr != "alice@example.org" || !strings.Contains(k.Key.Armored, "BEGIN PGP PUBLIC KEY BLOCK") {
			t.Errorf("harvested key = %+v", k)
		}
	})

	t.Run("signer key unknown: signature unknown", func(t *testing.T) {
		f := verifyOK(t, verifier(nil), Input{Raw: pgpMIME("Subject: x\n", encSigned), RecipientKeys: []string{userSecret}})
		if f.PGP.Signature != privacyindex.SigUnknown || !f.PGP.Decrypted {
			t.Errorf("PGP = %+v; want decrypted, signature unknown", f.PGP)
		}
	})

	t.Run("private key not held: content and signature out of sight", func(t *testing.T) {
		f := verifyOK(t, verifier(known), Input{Raw: pgpMIME("Subject: x\n", encSigned)})
		p := f.PGP
		if p.Decrypted || p.Signature != privacyindex.SigUnknown {
			t.Errorf("PGP = %+v; want not decrypted, signature unknown", p)
		}
		// The RSA size is then read from the encrypted session key itself.
		if p.Strength != privacyindex.StrengthStrong || len(p.Recipients) != 1 || p.Recipients[0].Bits != 3072 || p.Recipients[0].BitsExact {
			t.Errorf("PGP = %+v; want strong, 3072 bits inferred", p)
		}
	})

	t.Run("encrypted, unsigned (PI vector 6)", func(t *testing.T) {
		f := verifyOK(t, verifier(known), Input{Raw: pgpMIME("Subject: x\n", encOnly), RecipientKeys: []string{userSecret}})
		if f.PGP.Encryption != privacyindex.EncMIME || f.PGP.Signature != privacyindex.SigNone || !f.PGP.Decrypted {
			t.Errorf("PGP = %+v; want MIME, decrypted, unsigned", f.PGP)
		}
	})

	t.Run("corrupted ciphertext: integrity failure makes the signature invalid", func(t *testing.T) {
		bin := g.run(t, []byte(inner), "--encrypt", "--sign", "-r", userFpr, "-u", senderFpr)
		bin[len(bin)-30] ^= 0x01
		raw := pgpMIME("Subject: x\n", armorMessageBytes(bin))
		f := verifyOK(t, verifier(known), Input{Raw: raw, RecipientKeys: []string{userSecret}})
		if f.PGP.Signature != privacyindex.SigInvalid || f.PGP.Integrity {
			t.Errorf("PGP = %+v; want invalid signature, no integrity", f.PGP)
		}
	})

	t.Run("cleartext multipart/signed", func(t *testing.T) {
		content := "Content-Type: text/plain; charset=utf-8\n\nPay the invoice by Friday."
		head := crlf("From: Alice <alice@example.org>\nTo: user@caliopen.test\nSubject: invoice\nMIME-Version: 1.0\n")
		good := []byte(head + g.signedEntity(t, senderFpr, content, false))
		f := verifyOK(t, verifier(known), Input{Raw: good})
		if f.PGP.Encryption != privacyindex.EncNone || f.PGP.Signature != privacyindex.SigValid {
			t.Errorf("PGP = %+v; want clear, valid signature", f.PGP)
		}
		// Bare-LF storage must not break the signature (canonical CRLF).
		f = verifyOK(t, verifier(known), Input{Raw: bytes.ReplaceAll(good, []byte("\r\n"), []byte("\n"))})
		if f.PGP.Signature != privacyindex.SigValid {
			t.Errorf("LF-only copy: signature = %v; want valid", f.PGP.Signature)
		}
		f = verifyOK(t, verifier(nil), Input{Raw: good})
		if f.PGP.Signature != privacyindex.SigUnknown {
			t.Errorf("no key: signature = %v; want unknown", f.PGP.Signature)
		}
		failing := KeyLookupFunc(func(context.Context, string) ([]string, error) {
			return nil, errors.New("store unavailable")
		})
		f = verifyOK(t, verifier(failing), Input{Raw: good})
		if f.PGP.Signature != privacyindex.SigUnknown || !slices.Contains(f.PGP.Problems, "known keys unavailable") {
			t.Errorf("failing key store: PGP = %+v; want unknown, with the problem noted", f.PGP)
		}
		bad := []byte(head + g.signedEntity(t, senderFpr, content, true))
		f = verifyOK(t, verifier(known), Input{Raw: bad})
		if f.PGP.Signature != privacyindex.SigInvalid || len(f.PGP.Problems) == 0 {
			t.Errorf("tampered: PGP = %+v; want invalid with a problem", f.PGP)
		}
	})

	t.Run("sign then encrypt, protected headers inside", func(t *testing.T) {
		content := "Content-Type: text/plain; charset=utf-8\n\nPay the invoice by Friday."
		for _, tamper := range []bool{false, true} {
			entity := g.signedEntity(t, senderFpr, content, tamper)
			// Protected headers (draft-autocrypt-lamps-protected-headers): the
			// real Subject travels inside.
			entity = strings.Replace(entity, "boundary=\"sig-boundary\"", "boundary=\"sig-boundary\"; protected-headers=\"v1\"\r\nSubject: the real subject", 1)
			armored := string(g.run(t, []byte(entity), "--armor", "--encrypt", "-r", userFpr))
			f := verifyOK(t, verifier(known), Input{Raw: pgpMIME("Subject: Encrypted Message\n", armored), RecipientKeys: []string{userSecret}})
			want := privacyindex.SigValid
			if tamper {
				want = privacyindex.SigInvalid
			}
			if f.PGP.Signature != want || !f.PGP.ProtectedHeaders || !f.PGP.Decrypted {
				t.Errorf("tamper=%v: PGP = %+v; want signature %v, protected headers", tamper, f.PGP, want)
			}
		}
	})

	t.Run("inline and partial encryption", func(t *testing.T) {
		head := "From: Alice <alice@example.org>\nTo: user@caliopen.test\nSubject: inline\nMIME-Version: 1.0\n"
		inline := []byte(crlf(head + "Content-Type: text/plain\n\n" + encSigned))
		f := verifyOK(t, verifier(known), Input{Raw: inline, RecipientKeys: []string{userSecret}})
		if f.PGP.Encryption != privacyindex.EncInline || f.PGP.Strength != privacyindex.StrengthStrong || f.PGP.Signature != privacyindex.SigValid {
			t.Errorf("inline: PGP = %+v; want inline, strong, valid", f.PGP)
		}
		bin := g.run(t, []byte("%PDF-1.7 ..."), "--encrypt", "-r", userFpr)
		partial := []byte(crlf(head+`Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: text/plain

See the attached document.
--mix
Content-Type: application/octet-stream; name="doc.pdf.pgp"
Content-Disposition: attachment; filename="doc.pdf.pgp"
Content-Transfer-Encoding: base64

`) + base64.StdEncoding.EncodeToString(bin) + crlf("\n--mix--\n"))
		f = verifyOK(t, verifier(known), Input{Raw: partial})
		if f.PGP.Encryption != privacyindex.EncPartial || f.PGP.Strength != privacyindex.StrengthStrong {
			t.Errorf("partial: PGP = %+v; want partial, strong", f.PGP)
		}
	})

	t.Run("RSA-2048 and Curve25519 recipients", func(t *testing.T) {
		small := g.genKey(t, "Small <small@caliopen.test>", "rsa2048", "rsa2048")
		modern := g.genKey(t, "Modern <modern@caliopen.test>", "ed25519", "cv25519")
		for _, c := range []struct {
			fpr, algo string
			want      privacyindex.Strength
		}{
			{small, "rsa", privacyindex.StrengthRSA2048},
			{modern, "ecdh", privacyindex.StrengthStrong},
		} {
			armored := string(g.run(t, []byte(inner), "--armor", "--encrypt", "-r", c.fpr))
			f := verifyOK(t, verifier(nil), Input{Raw: pgpMIME("Subject: x\n", armored)})
			if f.PGP.Strength != c.want || len(f.PGP.Recipients) != 1 || f.PGP.Recipients[0].Algorithm != c.algo {
				t.Errorf("%s: PGP = %+v; want %v", c.algo, f.PGP, c.want)
			}
			// Encrypted to both: the weakest recipient decides.
		}
		armored := string(g.run(t, []byte(inner), "--armor", "--encrypt", "-r", small, "-r", modern))
		f := verifyOK(t, verifier(nil), Input{Raw: pgpMIME("Subject: x\n", armored)})
		if f.PGP.Strength != privacyindex.StrengthRSA2048 || len(f.PGP.Recipients) != 2 {
			t.Errorf("two recipients: PGP = %+v; want RSA2048 (weakest)", f.PGP)
		}
	})

	t.Run("attached public key is harvested", func(t *testing.T) {
		raw := []byte(crlf(`From: Alice <alice@example.org>
To: user@caliopen.test
Subject: my key
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

Here is my key.
--b
Content-Type: application/pgp-keys; name="alice.asc"

` + senderPublic + `
--b--
`))
		f := verifyOK(t, verifier(nil), Input{Raw: raw})
		if len(f.PGP.Keys) != 1 || f.PGP.Keys[0].Key.Fingerprint != senderFpr || f.PGP.Keys[0].Key.Source != "attachment" {
			t.Errorf("keys = %+v; want the attached key", f.PGP.Keys)
		}
		if f.PGP.Encryption != privacyindex.EncNone {
			t.Errorf("encryption = %v; a key is not encrypted content", f.PGP.Encryption)
		}
	})
}

func TestAutocryptProblemsAreFacts(t *testing.T) {
	v := testVerifier(nil)
	cases := map[string]string{
		"garbage keydata":      "Autocrypt: addr=alice@example.org; keydata=AAAA\n",
		"not base64":           "Autocrypt: addr=alice@example.org; keydata=!!!\n",
		"addr mismatch":        "Autocrypt: addr=mallory@example.net; keydata=AAAA\n",
		"unknown critical":     "Autocrypt: addr=alice@example.org; future=1; keydata=AAAA\n",
		"two headers":          "Autocrypt: addr=alice@example.org; keydata=AAAA\nAutocrypt: addr=alice@example.org; keydata=AAAA\n",
		"missing keydata":      "Autocrypt: addr=alice@example.org\n",
		"truncated real shape": "Autocrypt: addr=alice@example.org; keydata=xjMEX/////////////////////////8=\n",
	}
	for name, h := range cases {
		raw := []byte(crlf("From: alice@example.org\nTo: u@caliopen.test\n" + h + "Subject: x\n\nhello\n"))
		f := verifyOK(t, v, Input{Raw: raw})
		if len(f.PGP.Keys) != 1 || f.PGP.Keys[0].Error == "" || f.PGP.Keys[0].Key.Fingerprint != "" {
			t.Errorf("%s: keys = %+v; want one key with an error and no fingerprint", name, f.PGP.Keys)
		}
	}
}

// TestLegacySEDIsWeak feeds a hand-made packet sequence: a PKESK for a 4096-bit
// RSA key followed by a legacy Symmetrically Encrypted Data packet (tag 9,
// no integrity protection, the EFAIL case).
func TestLegacySEDIsWeak(t *testing.T) {
	var pk []byte
	pk = append(pk, 3)                      // PKESK version 3
	pk = append(pk, 1, 2, 3, 4, 5, 6, 7, 8) // key id
	pk = append(pk, 1)                      // RSA
	pk = append(pk, 0x10, 0x00)             // MPI of 4096 bits
	pk = append(pk, bytes.Repeat([]byte{0xff}, 512)...)
	// New-format tag 1 with a two-octet length (RFC 9580 §4.2.1.2).
	n := len(pk) - 192
	msg := []byte{0xC0 | 1, byte(n>>8) + 192, byte(n)}
	msg = append(msg, pk...)
	msg = append(msg, 0xC0|9, 20) // tag 9, 20 bytes
	msg = append(msg, bytes.Repeat([]byte{0xAA}, 20)...)

	armored := armorMessageBytes(msg)
	f := verifyOK(t, testVerifier(nil), Input{Raw: pgpMIME("Subject: x\n", armored)})
	p := f.PGP
	if p.Encryption != privacyindex.EncMIME || p.Strength != privacyindex.StrengthWeak || p.Integrity {
		t.Errorf("PGP = %+v; want MIME, weak, no integrity", p)
	}
	if len(p.Recipients) != 1 || p.Recipients[0].KeyID != "0102030405060708" || p.Recipients[0].Bits != 4096 {
		t.Errorf("recipients = %+v (%+v)", p.Recipients, p)
	}
}
