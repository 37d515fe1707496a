package message

import (
	"bytes"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParse is the one fuzz target over the parse and its classification:
// whatever the bytes, Parse never panics, stays proportional to the input,
// yields valid UTF-8 only, and every part range lies inside its parent.
func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		"From: a@remote.example\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n",
		"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9\n--b\nContent-Type: application/pdf; name=x.pdf\nContent-Transfer-Encoding: base64\n\nAAAA\n--b--\n",
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\n\n--e\n\nVersion: 1\n--e\n\n" + ArmorMessage + "\n\nhQEMA1234567890ABAQf/c2VjcmV0\n=abcd\n" + ArmorMessageEnd + "\n--e--\n",
		"Subject: =?Shift_JIS?B?grGC8YLJgr+CzQ==?=\nFrom: =?x-unknown?Q?a?= <a@b.example>\n\n\xff\xfe\x00",
		"Received: from x (x [1.2.3.4]) by y with ESMTPS\nIn-Reply-To: <a@b>\nReferences: <c@d> <e@f>\n\nx",
		"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: multipart/alternative; boundary=c\n\n--c\n\nx\n--c--\n--b--\n",
		"From: \"=?utf-8?Q?service=40paypal=2Ecom?=\" <x@y.example>\n\nbody",
		"From: a@example.org\r\nAutocrypt: addr=a@example.org; keydata=xsBNBF\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b\r\n\r\n--b\r\nx\r\n--b\r\n\r\n" + ArmorSignature + "\r\n\r\n=AAAA\r\n-----END PGP SIGNATURE-----\r\n--b--\r\n",
		"Content-Type: multipart/mixed; boundary=\"a\"\n\n--a\nContent-Type: multipart/mixed; boundary=\"a\"\n\n--a\n--a--\n",
		"ARC-Seal: i=1; d=x; cv=pass\r\n\r\n" + ArmorSigned + "\r\nHash: SHA256\r\n\r\nhi\r\n" + ArmorSignature + "\r\n\r\n-----END PGP SIGNATURE-----\r\n",
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n0\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03\xa0\x80\x30\x84\xff\xff\xff\xff\x02\x01\x00",
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\n",
		"From x Mon\nA: b\n c\nbad line\nB: d\n\nbody",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		start := time.Now()
		m := Parse(raw, Options{})
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Parse took %v on %d bytes", d, len(raw))
		}
		for _, s := range append([]string{m.Subject, m.TextBody, m.HTMLBody, m.Excerpt, m.MessageID}, m.Problems...) {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8: %q", s)
			}
		}
		for _, l := range [][]Addr{m.From, m.To, m.Cc, m.Sender, m.ReplyTo, m.Bcc} {
			for _, a := range l {
				if !utf8.ValidString(a.Name) || !utf8.ValidString(a.Address) || a.Address == "" {
					t.Fatalf("bad address %+v", a)
				}
			}
		}
		for _, a := range m.Attachments {
			if !utf8.ValidString(a.Filename) || !utf8.ValidString(a.ContentType) || a.Size < 0 {
				t.Fatalf("bad attachment %+v", a)
			}
		}
		checkRanges(t, m.Root, 0, len(raw))
		for _, s := range m.Class.Signed {
			if !bytes.Contains(raw, s.Data) {
				t.Fatal("signed bytes are not the received bytes")
			}
		}
	})
}

func checkRanges(t *testing.T, p *Part, lo, hi int) {
	t.Helper()
	if p.Start < lo || p.Start > p.BodyStart || p.BodyStart > p.End || p.End > hi {
		t.Fatalf("part %s range %d:%d:%d outside %d:%d", p.Path, p.Start, p.BodyStart, p.End, lo, hi)
	}
	for _, k := range p.Parts {
		checkRanges(t, k, p.BodyStart, p.End)
	}
}
