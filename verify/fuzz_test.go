package verify

import (
	"bytes"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/caliopen/caliopen/privacyindex"
)

// FuzzVerify feeds arbitrary bytes through every check. The Verifier re-panics
// (rethrow), so a panic that production would only log fails the fuzzer.
// Without a resolver, DNS-based checks end quickly in temperror and the
// fuzzer spends its time in the parsers.
func FuzzVerify(f *testing.F) {
	e, err := openpgp.NewEntity("Fuzz", "", "fuzz@caliopen.test", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		f.Fatal(err)
	}
	var priv bytes.Buffer
	w, _ := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	if err := e.SerializePrivate(w, nil); err != nil {
		f.Fatal(err)
	}
	w.Close()
	var msg bytes.Buffer
	aw, _ := armor.Encode(&msg, "PGP MESSAGE", nil)
	pw, err := openpgp.Encrypt(aw, openpgp.EntityList{e}, e, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	pw.Write([]byte("Content-Type: text/plain\r\nSubject: hidden\r\n\r\nsecret\r\n"))
	pw.Close()
	aw.Close()

	seeds := [][]byte{
		testMessage("alice@example.org", "plain"),
		pgpMIME("Subject: ...\n", msg.String()),
		pgpMIME("Subject: x\n", "-----BEGIN PGP MESSAGE-----\n\nwcBMA///\n-----END PGP MESSAGE-----"),
		[]byte("DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel; l=999999999999999999999; h=from; bh=; b=\r\nFrom: a@example.org\r\n\r\nx"),
		[]byte("From: a@example.org\r\nAutocrypt: addr=a@example.org; keydata=xsBNBF\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b\r\n\r\n--b\r\nx\r\n--b\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\n=AAAA\r\n-----END PGP SIGNATURE-----\r\n--b--\r\n"),
		[]byte("Content-Type: multipart/mixed; boundary=\"a\"\n\n--a\nContent-Type: multipart/mixed; boundary=\"a\"\n\n--a\n--a--\n"),
		[]byte("ARC-Seal: i=1; d=x; cv=pass\r\nX-Spam-Status: Yes, score=nan required=5\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhi\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\n-----END PGP SIGNATURE-----\r\n"),
		[]byte("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n0\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03\xa0\x80\x30\x84\xff\xff\xff\xff\x02\x01\x00"),
		{},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	v := testVerifier(nil, func(c *Config) { c.TrustSpamHeaders, c.TrustedARCSealers = true, []string{"x"} })
	keys := []string{priv.String()}
	f.Fuzz(func(t *testing.T, raw []byte) {
		start := time.Now()
		facts, err := v.Verify(t.Context(), Input{Raw: raw, MailFrom: "a@example.org", ClientIP: "192.0.2.1", Helo: "h", RecipientKeys: keys})
		if d := time.Since(start); d > 3*time.Second {
			// Work must stay proportional to the input: a slow input is a
			// denial of service on the mail path.
			t.Fatalf("Verify took %v on %d bytes", d, len(raw))
		}
		if err != nil {
			t.Fatalf("Verify returned an error without cancellation: %v", err)
		}
		// Without a verified key nothing may come out as a valid signature
		// from a known signer, and without DNS nothing may pass.
		if facts.PGP.SignerKnown || facts.DKIM.Result == privacyindex.AuthPass || facts.SPF.Result == privacyindex.AuthPass || facts.ARC.Trusted {
			t.Fatalf("unverifiable input produced a verified fact: %+v", facts)
		}
		var m privacyindex.MessageFeatures
		facts.Apply(&m)
	})
}
