package message

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/caliopen/caliopen/privacyindex"
)

func TestQuotedEncodedDisplayName(t *testing.T) {
	m := Parse([]byte("From: \"=?utf-8?Q?service=40paypal=2Ecom?=\" <x@y.example>\r\n"+
		"To: =?iso-8859-1?q?Ren=E9?= <rene@y.example>, \"Plain, Name\" <p@y.example>\r\n\r\nhi\r\n"), Options{})
	if len(m.From) != 1 || m.From[0].Name != "service@paypal.com" || m.From[0].Address != "x@y.example" {
		t.Errorf("From = %+v", m.From)
	}
	if len(m.To) != 2 || m.To[0].Name != "René" || m.To[1].Name != "Plain, Name" {
		t.Errorf("To = %+v", m.To)
	}
}

func TestSignedPartKeepsExactBytes(t *testing.T) {
	signed := "Content-Type: text/plain\r\n\r\nsigned  text \r\n"
	raw := "From: a@b.example\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=s\r\n\r\n" +
		"preamble\r\n--s\r\n" + signed + "\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\n" +
		ArmorSignature + "\r\n\r\nabc\r\n-----END PGP SIGNATURE-----\r\n--s--\r\n"
	m := Parse([]byte(raw), Options{})
	if len(m.Class.Signed) != 1 || string(m.Class.Signed[0].Data) != signed {
		t.Fatalf("signed = %+v", m.Class.Signed)
	}
	if !bytes.HasPrefix(m.Class.Signed[0].Signature, []byte(ArmorSignature)) || !m.Class.PGPSigned || m.Class.PGPSigPath != "2" {
		t.Errorf("class = %+v", m.Class)
	}
	p := m.Root.Parts[0]
	if string(m.Raw[p.Start:p.End]) != signed || string(p.Body()) != "signed  text \r\n" || p.Path != "1" {
		t.Errorf("part range %d:%d:%d = %q", p.Start, p.BodyStart, p.End, p.Bytes())
	}
	if m.TextBody != "signed  text \n" || len(m.Attachments) != 0 || m.Class.Encryption != privacyindex.EncNone {
		t.Errorf("text %q attachments %+v enc %v", m.TextBody, m.Attachments, m.Class.Encryption)
	}
}

func TestDecodingBudgetIsPerMessage(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := range 4 {
		fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n", strings.Repeat("QUFB", 100)) // 300 bytes each
		_ = i
	}
	b.WriteString("--b--\r\n")
	m := Parse([]byte(b.String()), Options{MaxDecodedBytes: 700})
	if got := strings.Count(m.TextBody, "A"); got != 700 {
		t.Errorf("decoded %d bytes, want the budget of 700 for the whole message", got)
	}
	if !strings.Contains(strings.Join(m.Problems, "|"), "budget") {
		t.Errorf("problems = %q", m.Problems)
	}
}

func TestNestingCapped(t *testing.T) {
	var b strings.Builder
	for i := range MaxDepth + 5 {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("\r\ndeep\r\n")
	m := Parse([]byte(b.String()), Options{})
	depth, p := 0, m.Root
	for ; len(p.Parts) > 0; p = p.Parts[0] {
		depth++
	}
	if depth != MaxDepth || p.MediaType != "multipart/mixed" {
		t.Errorf("depth %d, deepest %q", depth, p.MediaType)
	}
}

func TestClassifyMislabelledAndHidden(t *testing.T) {
	raw := "Subject: ...\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\r\n\r\n" +
		"--e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e\r\nContent-Type: application/octet-stream\r\n\r\n" +
		ArmorMessage + "\r\n\r\nbm90IGVuY3J5cHRlZA==\r\n" + ArmorMessageEnd + "\r\n--e--\r\n"
	m := Parse([]byte(raw), Options{})
	c := m.Class
	if !c.PGPMIME || c.PGPMIMEPath != "2" || c.Mislabelled != 1 || c.Encryption != privacyindex.EncNone || c.ProtectedHeaders {
		t.Errorf("class = %+v", c)
	}
	if !HiddenSubject(" Encrypted Message ") || !HiddenSubject("p≡p") || HiddenSubject("hello") {
		t.Error("hidden subjects")
	}
	a := Parse([]byte("Autocrypt: addr=A@B.example; prefer-encrypt=Mutual; keydata=AAAA\r\nAutocrypt: addr=x@y; bogus=1; keydata=B\r\n\r\n"), Options{}).Class.Autocrypt
	if len(a) != 2 || a[0].Addr != "a@b.example" || a[0].PreferEncrypt != "mutual" || a[0].Keydata != "AAAA" || a[1].Critical != "bogus" {
		t.Errorf("autocrypt = %+v", a)
	}
}

func TestHeaderFieldsRaw(t *testing.T) {
	m := Parse([]byte("A: X\nB : Y\t\n\tZ  \n\nbody"), Options{})
	h := m.Header()
	if len(h) != 2 || h[1].Name != "B" || h[1].Value != "Y Z" || h[1].Raw != "B : Y\t\r\n\tZ  \r\n" || string(m.Body()) != "body" {
		t.Errorf("header = %+v body %q", h, m.Body())
	}
}

func TestMultipartSplitting(t *testing.T) {
	body := "preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b \r\n\r\ntwo\r\n--bb\r\n--b--\r\nepilogue"
	kids, probs := splitMultipart([]byte(body), "b")
	got := func(kids [][2]int, b string) []string {
		var out []string
		for _, k := range kids {
			out = append(out, b[k[0]:k[1]])
		}
		return out
	}
	if g := got(kids, body); len(g) != 2 || g[0] != "Content-Type: text/plain\r\n\r\none" || g[1] != "\r\ntwo\r\n--bb" || len(probs) != 0 {
		t.Errorf("children = %q, problems %q", g, probs)
	}
	// No closing delimiter: the last part runs to the end.
	body = "--b\r\n\r\nlast"
	kids, probs = splitMultipart([]byte(body), "b")
	if g := got(kids, body); len(g) != 1 || g[0] != "\r\nlast" || len(probs) != 1 {
		t.Errorf("unterminated children = %q, problems %q", g, probs)
	}
}

func TestFindAndContent(t *testing.T) {
	raw := "Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n" +
		"--a\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n--a--\r\n" +
		"--m\r\nContent-Type: application/pdf; name=\"=?utf-8?q?r=C3=A9sum=C3=A9.pdf?=\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--m--\r\n"
	m := Parse([]byte(raw), Options{})
	if p := m.Find("1.1"); p == nil || string(p.Content()) != "café" {
		t.Errorf("1.1 = %+v", p)
	}
	if p := m.Find("2"); p == nil || string(p.Content()) != "%PDF-" || p.Filename() != "résumé.pdf" {
		t.Errorf("2 = %+v", p)
	}
	if len(m.Attachments) != 1 || m.Attachments[0].PartPath != "2" || m.Attachments[0].Size != 5 {
		t.Errorf("attachments = %+v", m.Attachments)
	}
	for _, path := range []string{"3", "1.2", "2.1", "0"} {
		if p := m.Find(path); p != nil {
			t.Errorf("%s found %+v", path, p)
		}
	}
	if p := Parse([]byte("Subject: x\r\n\r\nbody"), Options{}).Find("1"); p == nil || string(p.Content()) != "body" {
		t.Errorf("single part = %+v", p)
	}
}
