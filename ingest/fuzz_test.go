package ingest

import (
	"testing"
	"unicode/utf8"
)

// FuzzIngest: whatever the bytes, Ingest stores them (no error, no panic),
// the blob is byte-identical and every stored string is valid UTF-8.
func FuzzIngest(f *testing.F) {
	seeds := []string{
		"",
		"From: a@remote.example\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n",
		"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9\n--b\nContent-Type: application/pdf; name=x.pdf\nContent-Transfer-Encoding: base64\n\nAAAA\n--b--\n",
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\n\n--e\n\nVersion: 1\n--e\n\n" + pgpArmor + "--e--\n",
		"Subject: =?Shift_JIS?B?grGC8YLJgr+CzQ==?=\nFrom: =?x-unknown?Q?a?= <a@b.example>\n\n\xff\xfe\x00",
		"Received: from x (x [1.2.3.4]) by y with ESMTPS\nIn-Reply-To: <a@b>\nReferences: <c@d> <e@f>\n\nx",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		res, err := fx.in.Ingest(fx.ctx, Envelope{Recipients: []string{"alice@example.org"}}, raw)
		if err != nil {
			t.Fatalf("Ingest: %v", err)
		}
		if len(res.Deliveries) != 1 {
			t.Fatalf("deliveries = %d", len(res.Deliveries))
		}
		d := res.Deliveries[0]
		m, err := fx.st.GetMessage(fx.ctx, d.UserID, d.MessageID)
		if err != nil {
			t.Fatalf("GetMessage: %v", err)
		}
		blob, err := fx.st.GetBlob(fx.ctx, m.RawHash)
		if err != nil || string(blob) != string(raw) {
			t.Fatalf("blob differs (%v)", err)
		}
		for _, s := range []string{m.Subject, m.TextBody, m.HTMLBody, m.Excerpt, m.MessageID} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 stored: %q", s)
			}
		}
		for _, p := range m.Participants {
			if !utf8.ValidString(p.Name) || !utf8.ValidString(p.Address) {
				t.Fatalf("invalid UTF-8 participant %q", p)
			}
		}
	})
}
