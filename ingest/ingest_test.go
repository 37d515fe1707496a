package ingest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message/charset"
	"github.com/google/uuid"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

func TestPlainMultipartMessage(t *testing.T) {
	f := newFixture(t)
	pdf := bytes.Repeat([]byte("%PDF-1.4 fake\n"), 100)
	raw := mkmail([]string{
		`From: "Carol Example" <Carol@Remote.Example>`,
		`To: Alice <alice@example.org>, dave@remote.example`,
		`Cc: =?UTF-8?Q?Ren=C3=A9e?= <renee@remote.example>`,
		"Subject: Quarterly report",
		"Date: Tue, 3 Feb 2026 10:11:12 +0100",
		"Message-ID: <report-1@remote.example>",
		"MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="outer"`,
	}, "preamble\n--outer\nContent-Type: multipart/alternative; boundary=inner\n\n"+
		"--inner\nContent-Type: text/plain; charset=utf-8\n\nHello Alice,\nthe report is attached.\n"+
		"--inner\nContent-Type: text/html; charset=utf-8\n\n<p>Hello <b>Alice</b>,</p><p>the report is attached.</p>\n"+
		"--inner--\n"+
		"--outer\nContent-Type: application/pdf; name=\"report.pdf\"\nContent-Disposition: attachment; filename=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n"+
		base64.StdEncoding.EncodeToString(pdf)+"\n--outer--\n")
	m := f.one(raw)

	if m.Subject != "Quarterly report" || m.MessageID != "report-1@remote.example" || !m.Inbound || m.Protocol != "email" {
		t.Errorf("got subject %q, id %q, inbound %v, protocol %q", m.Subject, m.MessageID, m.Inbound, m.Protocol)
	}
	if want := time.Date(2026, 2, 3, 9, 11, 12, 0, time.UTC); !m.Date.Equal(want) {
		t.Errorf("Date = %v, want %v", m.Date, want)
	}
	if m.TextBody != "Hello Alice,\nthe report is attached." {
		t.Errorf("TextBody = %q", m.TextBody)
	}
	if !strings.Contains(m.HTMLBody, "<b>Alice</b>") {
		t.Errorf("HTMLBody = %q", m.HTMLBody)
	}
	if m.Excerpt != "Hello Alice, the report is attached." {
		t.Errorf("Excerpt = %q", m.Excerpt)
	}
	if len(m.Attachments) != 1 {
		t.Fatalf("attachments = %+v", m.Attachments)
	}
	if a := m.Attachments[0]; a.PartPath != "2" || a.Filename != "report.pdf" || a.ContentType != "application/pdf" || a.Size != int64(len(pdf)) {
		t.Errorf("attachment = %+v, want part 2, report.pdf, %d bytes", a, len(pdf))
	}
	if m.Flags.Read {
		t.Error("an inbound message starts unread")
	}

	got := map[string]store.Participant{}
	for _, p := range m.Participants {
		got[p.Role+" "+p.Address] = p
	}
	from, ok := got["from carol@remote.example"]
	if !ok || from.Name != "Carol Example" || from.ContactID == uuid.Nil {
		t.Errorf("from = %+v (all %+v)", from, m.Participants)
	}
	if p := got["cc renee@remote.example"]; p.Name != "Renée" || p.ContactID == uuid.Nil {
		t.Errorf("cc = %+v", p)
	}
	if p, ok := got["to alice@example.org"]; !ok || p.ContactID != uuid.Nil {
		t.Errorf("the user's own address must be a participant without contact: %+v", p)
	}
	carol := f.contact(f.alice, "carol@remote.example")
	if carol.Name != "Carol Example" {
		t.Errorf("automatic contact name = %q", carol.Name)
	}
	conv, err := f.st.GetConversation(f.ctx, f.alice, m.ConversationID)
	must(t, err)
	dave, renee := f.contact(f.alice, "dave@remote.example"), f.contact(f.alice, "renee@remote.example")
	if want := convKey([]uuid.UUID{carol.ID, dave.ID, renee.ID}); conv.Key != want || len(conv.ContactIDs) != 3 {
		t.Errorf("conversation key %q (%d contacts), want %q", conv.Key, len(conv.ContactIDs), want)
	}
	if _, err := f.st.FindContactByChannel(f.ctx, f.alice, "email", "alice@example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the user's own address became a contact: %v", err)
	}
}

func TestNoHostedRecipient(t *testing.T) {
	f := newFixture(t)
	res, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"nobody@example.org", "x@elsewhere.example", "garbage"}},
		[]byte(simple("a@remote.example", "nobody@example.org", "hi", "hi")))
	if err != nil || len(res.Deliveries) != 0 || res.Complete {
		t.Fatalf("got %+v, %v; want nothing, not complete, no error", res, err)
	}
}

// Complete says the MTA has nothing left to deliver: every recipient
// reaches hosted users only.
func TestResultComplete(t *testing.T) {
	f := newFixture(t)
	must(t, f.st.PutAlias(f.ctx, store.Alias{Address: "fwd@example.org", Targets: []string{"alice@example.org", "alice@elsewhere.example"}}))
	for i, tc := range []struct {
		rcpts    []string
		complete bool
	}{
		{[]string{"alice@example.org"}, true},
		{[]string{"team@example.org", "Bob+x@example.org"}, true},
		{[]string{"alice@example.org", "x@elsewhere.example"}, false}, // a remote recipient too
		{[]string{"alice@example.org", "nobody@example.org"}, false},  // an unknown one
		{[]string{"fwd@example.org"}, false},                          // an alias that also forwards off-site
	} {
		raw := simple("a@remote.example", "alice@example.org", fmt.Sprint("complete ", i), "hi")
		res := f.ingest(raw, tc.rcpts...)
		if len(res.Deliveries) == 0 || res.Complete != tc.complete {
			t.Errorf("%v: %d deliveries, complete %v; want %v", tc.rcpts, len(res.Deliveries), res.Complete, tc.complete)
		}
	}
}

func encode(t *testing.T, enc encoding.Encoding, s string) string {
	t.Helper()
	out, err := enc.NewEncoder().String(s)
	must(t, err)
	return out
}

func qp(s string) string {
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	io.WriteString(w, s)
	w.Close()
	return b.String()
}

// golden decodes data from cs with go-message's charset package: the
// expected reading of any correct decoder.
func golden(t *testing.T, cs, data string) string {
	t.Helper()
	r, err := charset.Reader(cs, strings.NewReader(data))
	must(t, err)
	b, err := io.ReadAll(r)
	must(t, err)
	return string(b)
}

func TestCharsets(t *testing.T) {
	latin := "Grüße aus Köln, ça coûte 5 ½ francs"
	cp1252 := "“Smart quotes” cost 5 € — naïve"
	sjis := "こんにちは、世界。日本語のメールです。"
	cases := []struct {
		name, cs, cte, text string
	}{
		{"iso-8859-1 quoted-printable", "ISO-8859-1", "quoted-printable", latin},
		{"iso-8859-1 8bit", "iso-8859-1", "8bit", latin},
		{"windows-1252 8bit", "windows-1252", "8bit", cp1252},
		{"windows-1252 base64", "Windows-1252", "base64", cp1252},
		{"shift_jis base64", "Shift_JIS", "base64", sjis},
		{"shift_jis quoted-printable", "shift_jis", "quoted-printable", sjis},
		{"utf-8 base64", "utf-8", "base64", sjis + latin},
	}
	encs := map[string]encoding.Encoding{
		"iso-8859-1": charmap.ISO8859_1, "windows-1252": charmap.Windows1252, "shift_jis": japanese.ShiftJIS, "utf-8": encoding.Nop,
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			data := encode(t, encs[strings.ToLower(c.cs)], c.text)
			if g := golden(t, c.cs, data); g != c.text {
				t.Fatalf("golden decoding %q != %q", g, c.text)
			}
			body := data
			switch c.cte {
			case "quoted-printable":
				body = qp(data)
			case "base64":
				body = base64.StdEncoding.EncodeToString([]byte(data))
			}
			subject := mime.QEncoding.Encode(c.cs, data)
			name := mime.BEncoding.Encode(c.cs, data[:min(len(data), 12)])
			raw := mkmail([]string{
				"From: " + name + " <sender@remote.example>", "To: alice@example.org",
				"Subject: " + subject, "MIME-Version: 1.0",
				"Content-Type: text/plain; charset=" + c.cs, "Content-Transfer-Encoding: " + c.cte,
			}, body)
			m := f.one(raw)
			if strings.TrimRight(m.TextBody, "\r\n") != c.text {
				t.Errorf("TextBody = %q, want %q", m.TextBody, c.text)
			}
			if m.Subject != golden(t, c.cs, data) {
				t.Errorf("Subject = %q, want %q", m.Subject, c.text)
			}
			wantName := golden(t, c.cs, data[:min(len(data), 12)])
			if m.Participants[0].Name != wantName {
				t.Errorf("From name = %q, want %q", m.Participants[0].Name, wantName)
			}
			if p := f.security(m).ParseProblems; len(p) != 0 {
				t.Errorf("parse problems for a correct message: %q", p)
			}
		})
	}
}

func TestRFC2047Headers(t *testing.T) {
	f := newFixture(t)
	m := f.one(mkmail([]string{
		`From: =?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>`,
		`To: =?US-ASCII?Q?Keith_Moore?= <alice@example.org>`,
		`Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=`,
		`Content-Type: application/octet-stream; name="=?UTF-8?B?w6l0w6kucGRm?="`,
		`Content-Transfer-Encoding: base64`,
	}, "AAAA\n"))
	if m.Subject != "If you can read this you understand the example." {
		t.Errorf("Subject = %q", m.Subject)
	}
	if m.Participants[0].Name != "André Pirard" || m.Participants[0].Address != "pirard@vm1.ulg.ac.be" {
		t.Errorf("From = %+v", m.Participants[0])
	}
	if len(m.Attachments) != 1 || m.Attachments[0].Filename != "été.pdf" || m.Attachments[0].PartPath != "1" || m.Attachments[0].Size != 3 {
		t.Errorf("attachments = %+v", m.Attachments)
	}
}

func TestBrokenMessagesAreStored(t *testing.T) {
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*7919 + i/3)
	}
	nested := "Content-Type: text/plain\n\ninnermost\n"
	for i := 0; i < 60; i++ {
		nested = fmt.Sprintf("Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n%s\n--b%d--\n", i, i, nested, i)
	}
	cases := map[string]struct {
		raw  string
		text string // expected in TextBody when not ""
	}{
		"empty":                {raw: ""},
		"no header at all":     {raw: "just some words\nand more words\n", text: "just some words"},
		"header only":          {raw: "From: a@remote.example\r\nSubject: x\r\n"},
		"8-bit garbage":        {raw: string(garbage)},
		"nul and 8-bit header": {raw: "Subject: caf\xe9 \x00 bar\r\nFrom: \xff\xfe <a@remote.example>\r\n\r\nbody \xe9\xe8\r\n", text: "body éè"},
		"multipart without boundary": {raw: "From: a@remote.example\nContent-Type: multipart/mixed\n\nhello there\n",
			text: "hello there"},
		"boundary not found": {raw: "From: a@remote.example\nContent-Type: multipart/mixed; boundary=zzz\n\nhello there\n",
			text: "hello there"},
		"unterminated multipart": {raw: "From: a@remote.example\nContent-Type: multipart/mixed; boundary=zzz\n\n--zzz\nContent-Type: text/plain\n\nfirst part\n--zzz\nContent-Type: text/plain\n\nsecond part, never closed",
			text: "second part"},
		"malformed header line": {raw: "From: a@remote.example\nthis is not a header\nSubject: still read\n\nbody\n", text: "body"},
		"missing blank line":    {raw: "From: a@remote.example\nSubject: x\nHello, this is the body.\nMore body.\n", text: "Hello, this is the body."},
		"unknown charset":       {raw: "Content-Type: text/plain; charset=x-klingon\n\nqapla\xe9\n", text: "qaplaé"},
		"unknown encoding":      {raw: "Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n", text: "begin 644"},
		"bad base64":            {raw: "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\nSGVsbG8g!!!d29y*bGQ=\n==", text: "Hello world"},
		"bad quoted-printable":  {raw: "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=ZZ caf=E9 =\n", text: "=ZZ café"},
		"bad content-type":      {raw: "Content-Type: text/plain; charset=\"utf-8; format=flowed\n\nhello\n", text: "hello"},
		"broken addresses":      {raw: "From: <<<@@>>>, \"unterminated <a@remote.example>\nTo: ;;;, alice@example.org (comment\n\nx\n"},
		"deep nesting":          {raw: "From: a@remote.example\n" + nested},
		"giant header line": {raw: "From: a@remote.example\r\nX-Big: " + strings.Repeat("x", 1<<20) + "\r\nSubject: " +
			strings.Repeat("long subject ", 100000) + "\r\n\r\nbody\r\n", text: "body"},
		"cr only line ends":   {raw: "From: a@remote.example\rSubject: x\r\rbody\r"},
		"continuation first":  {raw: " folded\r\nFrom: a@remote.example\r\n\r\nbody\r\n"},
		"mbox from line":      {raw: "From sender@remote.example Mon Jan  2 15:04:05 2006\nFrom: a@remote.example\nSubject: mbox\n\nbody\n", text: "body"},
		"pgp/mime one part":   {raw: "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--b--\n"},
		"empty boundary line": {raw: "Content-Type: multipart/mixed; boundary=\"\"\n\n--\n\nx\n"},
	}
	f := newFixture(t)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			res, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"alice@example.org"}}, []byte(c.raw))
			if err != nil {
				t.Fatalf("Ingest: %v", err)
			}
			if len(res.Deliveries) != 1 || !res.Deliveries[0].Created {
				t.Fatalf("deliveries = %+v", res.Deliveries)
			}
			m, err := f.st.GetMessage(f.ctx, f.alice, res.Deliveries[0].MessageID)
			must(t, err)
			f.checkStored(m, []byte(c.raw))
			m = f.withBodies(m)
			if c.text != "" && !strings.Contains(m.TextBody, c.text) {
				t.Errorf("TextBody = %.200q, want it to contain %q", m.TextBody, c.text)
			}
		})
	}
}

func TestBrokenPartsKeepTheRest(t *testing.T) {
	f := newFixture(t)
	m := f.one("From: a@remote.example\nSubject: mixed bag\nContent-Type: multipart/mixed; boundary=B\n\n" +
		"--B\nContent-Type: text/plain; charset=bogus-charset\n\nfirst\n" +
		"--B\nthis part has no header\n" +
		"--B\nContent-Type: image/png\nContent-Transfer-Encoding: base64\nContent-Disposition: inline\n\n%%%%\n" +
		"--B\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\nvoil=E0\n--B--\n")
	for _, want := range []string{"first", "this part has no header", "voilà"} {
		if !strings.Contains(m.TextBody, want) {
			t.Errorf("TextBody %q lacks %q", m.TextBody, want)
		}
	}
	if len(m.Attachments) != 1 || m.Attachments[0].PartPath != "3" || m.Attachments[0].ContentType != "image/png" {
		t.Errorf("attachments = %+v", m.Attachments)
	}
	if len(f.security(m).ParseProblems) == 0 {
		t.Error("the bogus charset should be reported")
	}
}

func TestSameMessageTwice(t *testing.T) {
	f := newFixture(t)
	raw := simple("carol@remote.example", "alice@example.org", "twice", "hello")
	first := f.ingest(raw)
	second := f.ingest(raw)
	if !first.Deliveries[0].Created || second.Deliveries[0].Created {
		t.Errorf("created: first %v, second %v", first.Deliveries[0].Created, second.Deliveries[0].Created)
	}
	if first.Deliveries[0].MessageID != second.Deliveries[0].MessageID {
		t.Error("a retry must return the stored message")
	}
	if n := len(f.messages(f.alice, first.Deliveries[0].ConversationID)); n != 1 {
		t.Errorf("messages = %d, want 1", n)
	}
	// Same bytes without a Message-ID: the dedup key alone must hold.
	noID := "From: carol@remote.example\r\nSubject: no id\r\n\r\nhello\r\n"
	a, b := f.ingest(noID), f.ingest(noID)
	if a.Deliveries[0].MessageID != b.Deliveries[0].MessageID || b.Deliveries[0].Created {
		t.Error("a message without Message-ID was stored twice")
	}
}

func TestConcurrentRedelivery(t *testing.T) {
	f := newFixture(t)
	raw := []byte(simple("carol@remote.example", "alice@example.org", "concurrent", "hello"))
	const n = 20
	var wg sync.WaitGroup
	results := make([]Result, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = f.in.Ingest(f.ctx, Envelope{Recipients: []string{"alice@example.org"}, QueueID: fmt.Sprint("Q", i)}, raw)
		}(i)
	}
	wg.Wait()
	created := 0
	ids := map[uuid.UUID]bool{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("Ingest %d: %v", i, errs[i])
		}
		d := results[i].Deliveries[0]
		ids[d.MessageID] = true
		if d.Created {
			created++
		}
	}
	if created != 1 || len(ids) != 1 {
		t.Fatalf("created %d times, %d distinct ids; want 1 and 1", created, len(ids))
	}
	conv := results[0].Deliveries[0].ConversationID
	if ms := f.messages(f.alice, conv); len(ms) != 1 {
		t.Errorf("messages = %d, want 1", len(ms))
	}
	cs, err := f.st.ListContacts(f.ctx, f.alice)
	must(t, err)
	if len(cs) != 1 {
		t.Errorf("contacts = %d, want 1 (carol)", len(cs))
	}
}

func TestAliasToTwoUsers(t *testing.T) {
	f := newFixture(t)
	counting := &countingStore{Store: f.st}
	f.with(func(c *Config) { c.Store = counting })
	raw := simple("carol@remote.example", "team@example.org", "to the team", "hi both")
	res := f.ingest(raw, "team@example.org", "Alice+news@Example.org")
	if len(res.Deliveries) != 2 {
		t.Fatalf("deliveries = %+v, want alice and bob once each", res.Deliveries)
	}
	hashes := map[string]bool{}
	for _, d := range res.Deliveries {
		m, err := f.st.GetMessage(f.ctx, d.UserID, d.MessageID)
		must(t, err)
		f.checkStored(m, []byte(raw))
		hashes[m.RawHash] = true
		for _, p := range m.Participants {
			if p.Address == "team@example.org" && p.ContactID != uuid.Nil {
				t.Errorf("an alias reaching the user is not a correspondent: %+v", p)
			}
		}
		conv, err := f.st.GetConversation(f.ctx, d.UserID, d.ConversationID)
		must(t, err)
		if len(conv.ContactIDs) != 1 {
			t.Errorf("user %s: conversation contacts = %v, want carol only", d.UserID, conv.ContactIDs)
		}
	}
	if len(hashes) != 1 {
		t.Error("recipients must share one blob")
	}
	if c := counting; c.blobPuts.Load() != 1 {
		t.Errorf("PutBlob called %d times, want 1", c.blobPuts.Load())
	}
}

func TestOnePersonTwoAddressesOneConversation(t *testing.T) {
	f := newFixture(t)
	now := msTime(time.Now())
	carol := store.Contact{ID: uuid.Must(uuid.NewV7()), UserID: f.alice, Name: "Carol", CreatedAt: now, UpdatedAt: now,
		Channels: []store.Channel{{Protocol: "email", Address: "carol@home.example"}, {Protocol: "email", Address: "carol@work.example"}}}
	must(t, f.st.PutContact(f.ctx, carol))
	a := f.one(simple("carol@home.example", "alice@example.org", "from home", "hi"))
	b := f.one(simple("Carol W <CAROL@work.example>", "alice@example.org", "from work", "hi again"))
	if a.ConversationID != b.ConversationID {
		t.Fatal("one contact on two addresses must be one conversation")
	}
	if b.Participants[0].ContactID != carol.ID {
		t.Errorf("from contact = %v, want %v", b.Participants[0].ContactID, carol.ID)
	}
	conv, err := f.st.GetConversation(f.ctx, f.alice, a.ConversationID)
	must(t, err)
	if conv.Key != carol.ID.String() || conv.MessageCount != 2 {
		t.Errorf("conversation %q with %d messages", conv.Key, conv.MessageCount)
	}
}

func TestMergeContacts(t *testing.T) {
	f := newFixture(t)
	home := f.one(simple("carol@home.example", "alice@example.org", "from home", "one"))
	work := f.one(simple("carol@work.example", "alice@example.org", "from work", "two"))
	group := f.one(simple("carol@work.example", "alice@example.org, dan@remote.example", "group", "three"))
	if home.ConversationID == work.ConversationID {
		t.Fatal("unknown addresses are different people until merged")
	}
	into, from := f.contact(f.alice, "carol@home.example"), f.contact(f.alice, "carol@work.example")
	dan := f.contact(f.alice, "dan@remote.example")

	must(t, f.in.MergeContacts(f.ctx, f.alice, into.ID, from.ID))

	merged := f.contact(f.alice, "carol@work.example")
	if merged.ID != into.ID || len(merged.Channels) != 2 {
		t.Errorf("carol@work.example belongs to %v with %d channels, want %v with 2", merged.ID, len(merged.Channels), into.ID)
	}
	// Both addresses' messages are the merged contact's history.
	if es, ok := decodeHistory(&merged); !ok || len(es) != 3 || es[0].Key != historyKey(home.RawHash) {
		t.Errorf("merged history = %+v (%v), want the 3 messages, the one from home first", es, ok)
	}
	if _, err := f.st.GetContact(f.ctx, f.alice, from.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("merged contact still exists: %v", err)
	}
	ms := f.messages(f.alice, home.ConversationID)
	if len(ms) != 2 {
		t.Fatalf("merged conversation has %d messages, want 2", len(ms))
	}
	for _, m := range ms {
		if m.ID != home.ID && m.ID != work.ID {
			t.Errorf("unexpected message %v", m.ID)
		}
		if m.ID == work.ID && m.Participants[0].ContactID != into.ID {
			t.Errorf("moved message still points to the old contact")
		}
	}
	if _, err := f.st.GetConversation(f.ctx, f.alice, work.ConversationID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("emptied conversation still exists: %v", err)
	}
	conv, err := f.st.GetConversation(f.ctx, f.alice, group.ConversationID)
	must(t, err)
	if want := convKey([]uuid.UUID{into.ID, dan.ID}); conv.Key != want {
		t.Errorf("group conversation key %q, want %q", conv.Key, want)
	}
	// New mail from the merged address goes to the surviving conversation.
	next := f.one(simple("carol@work.example", "alice@example.org", "later", "four"))
	if next.ConversationID != home.ConversationID {
		t.Error("new mail from a merged address must join the merged conversation")
	}
	// Running the merge again is an error (from is gone) but harmless.
	if err := f.in.MergeContacts(f.ctx, f.alice, into.ID, from.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second merge: %v", err)
	}
}

func TestMergeKeepsDedup(t *testing.T) {
	f := newFixture(t)
	f.one(simple("carol@home.example", "alice@example.org", "home", "one"))
	raw := simple("carol@work.example", "alice@example.org", "work", "two")
	work := f.one(raw)
	into, from := f.contact(f.alice, "carol@home.example"), f.contact(f.alice, "carol@work.example")
	must(t, f.st.SetFlags(f.ctx, f.alice, work.ID, store.Flags{Read: true, Starred: true, Tags: []string{"keep"}}))
	must(t, f.in.MergeContacts(f.ctx, f.alice, into.ID, from.ID))
	moved, err := f.st.GetMessage(f.ctx, f.alice, work.ID)
	must(t, err)
	if !moved.Flags.Read || !moved.Flags.Starred || len(moved.Flags.Tags) != 1 || f.withBodies(moved).TextBody != work.TextBody {
		t.Errorf("moved message lost its flags or content: %+v", moved.Flags)
	}
	conv, err := f.st.GetConversation(f.ctx, f.alice, moved.ConversationID)
	must(t, err)
	if conv.MessageCount != 2 || conv.UnreadCount != 1 {
		t.Errorf("merged conversation counts: %d messages, %d unread; want 2, 1", conv.MessageCount, conv.UnreadCount)
	}
	again := f.ingest(raw)
	if d := again.Deliveries[0]; d.Created || d.MessageID != work.ID {
		t.Errorf("redelivery after a merge: %+v, want the moved message %v", d, work.ID)
	}
}

func TestReplyThreading(t *testing.T) {
	f := newFixture(t)
	first := f.one(mkmail([]string{"From: Bob <bob@remote.example>", "To: alice@example.org, carol@remote.example",
		"Subject: plans", "Message-ID: <plans-1@remote.example>"}, "shall we?"))
	reply := f.one(mkmail([]string{"From: Carol <carol@remote.example>", "To: alice@example.org",
		"Subject: Re: plans", "Message-ID: <plans-2@remote.example>", "In-Reply-To: <plans-1@remote.example>",
		"References: <plans-1@remote.example>"}, "yes"))
	if reply.ConversationID != first.ConversationID {
		t.Error("a reply from a member of the thread to part of it stays in the thread")
	}
	if len(reply.InReplyTo) != 1 || reply.InReplyTo[0] != "plans-1@remote.example" || len(reply.References) != 1 {
		t.Errorf("InReplyTo %v References %v", reply.InReplyTo, reply.References)
	}
	// A reply that brings in someone new is a conversation with the new set.
	wider := f.one(mkmail([]string{"From: carol@remote.example", "To: alice@example.org, eve@remote.example",
		"Subject: Re: plans", "In-Reply-To: <plans-2@remote.example>"}, "adding eve"))
	if wider.ConversationID == first.ConversationID {
		t.Error("a new participant makes a new conversation")
	}
	// Without thread headers, carol alone is the 1:1 conversation.
	alone := f.one(simple("carol@remote.example", "alice@example.org", "other", "x"))
	if alone.ConversationID == first.ConversationID {
		t.Error("carol alone, out of the thread, is her own conversation")
	}
	// The user's reply (sent) lands in the thread too.
	sent, err := f.in.StoreSent(f.ctx, f.alice, []byte(mkmail([]string{"From: alice@example.org",
		"To: bob@remote.example, carol@remote.example", "Subject: Re: plans", "In-Reply-To: <plans-2@remote.example>"}, "great")), nil)
	must(t, err)
	if sent.ConversationID != first.ConversationID {
		t.Error("the user's reply to everyone belongs to the thread's conversation")
	}
}

func TestStoreSent(t *testing.T) {
	f := newFixture(t)
	in := f.one(simple("carol@remote.example", "alice@example.org", "question", "?"))
	raw := mkmail([]string{"From: Alice <alice@example.org>", "To: Carol <carol@remote.example>", "Subject: answer"}, "!")
	d, err := f.in.StoreSent(f.ctx, f.alice, []byte(raw), []string{"carol@remote.example"})
	must(t, err)
	if !d.Created || d.ConversationID != in.ConversationID {
		t.Fatalf("sent = %+v, want created in %v", d, in.ConversationID)
	}
	m, err := f.st.GetMessage(f.ctx, f.alice, d.MessageID)
	must(t, err)
	f.checkStored(m, []byte(raw))
	if m.Inbound || !m.Flags.Read {
		t.Errorf("sent message inbound=%v read=%v", m.Inbound, m.Flags.Read)
	}
	again, err := f.in.StoreSent(f.ctx, f.alice, []byte(raw), nil)
	must(t, err)
	if again.Created || again.MessageID != d.MessageID {
		t.Error("storing the same sent message twice must return the first")
	}
	// Bcc recipients (envelope only) are participants and correspondents.
	bcc, err := f.in.StoreSent(f.ctx, f.alice, []byte(mkmail([]string{"From: alice@example.org", "To: carol@remote.example", "Subject: bcc"}, "x")),
		[]string{"carol@remote.example", "dan@remote.example"})
	must(t, err)
	conv, err := f.st.GetConversation(f.ctx, f.alice, bcc.ConversationID)
	must(t, err)
	if len(conv.ContactIDs) != 2 {
		t.Errorf("bcc conversation contacts = %d, want 2", len(conv.ContactIDs))
	}
}

// pgpArmor is a real encrypted OpenPGP message: encryption is what the
// data is, not what a label or an armor line claims.
var pgpArmor = func() string {
	e, err := openpgp.NewEntity("Carol", "", "carol@remote.example", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		panic(err)
	}
	var b bytes.Buffer
	aw, err := armor.Encode(&b, "PGP MESSAGE", nil)
	if err != nil {
		panic(err)
	}
	pw, err := openpgp.Encrypt(aw, openpgp.EntityList{e}, nil, nil, nil)
	if err != nil {
		panic(err)
	}
	pw.Write([]byte("secret"))
	pw.Close()
	aw.Close()
	return strings.ReplaceAll(b.String(), "\r\n", "\n") + "\n"
}()

// fakeArmor only looks like an OpenPGP message.
const fakeArmor = "-----BEGIN PGP MESSAGE-----\n\nhQEMA1234567890ABAQf/c2VjcmV0\n=abcd\n-----END PGP MESSAGE-----\n"

func TestEncryptionStructure(t *testing.T) {
	cases := []struct {
		name  string
		raw   string
		enc   privacyindex.Encryption
		check func(t *testing.T, s Security, m store.Message)
	}{
		{"pgp/mime", mkmail([]string{"From: carol@remote.example", "To: alice@example.org", "Subject: ...",
			`Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="enc"`},
			"This is an OpenPGP/MIME encrypted message\n--enc\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n"+
				"--enc\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\n\n"+pgpArmor+"--enc--\n"),
			privacyindex.EncMIME, func(t *testing.T, s Security, m store.Message) {
				if !s.Structure.PGPMIME || s.Structure.PGPMIMEPath != "2" || !s.Structure.ProtectedHeaders {
					t.Errorf("structure = %+v", s.Structure)
				}
				if m.Excerpt != "" || len(m.Attachments) != 0 {
					t.Errorf("excerpt %q attachments %+v", m.Excerpt, m.Attachments)
				}
			}},
		{"pgp/mime signed and wrapped with a list footer", mkmail([]string{"From: carol@remote.example", "To: alice@example.org",
			`Content-Type: multipart/mixed; boundary="w"`},
			"--w\n"+`Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="enc"`+"\n\n"+
				"--enc\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--enc\nContent-Type: application/octet-stream\n\n"+pgpArmor+"--enc--\n"+
				"--w\nContent-Type: text/plain\n\n_______\nlist footer\n--w--\n"),
			privacyindex.EncPartial, nil},
		{"inline pgp", simple("carol@remote.example", "alice@example.org", "inline", pgpArmor),
			privacyindex.EncInline, func(t *testing.T, s Security, m store.Message) {
				if !s.Structure.PGPInline {
					t.Errorf("structure = %+v", s.Structure)
				}
			}},
		{"inline pgp with clear text", simple("carol@remote.example", "alice@example.org", "inline", "Hi!\n"+pgpArmor),
			privacyindex.EncPartial, nil},
		{"pgp signed", mkmail([]string{"From: carol@remote.example", "To: alice@example.org",
			`Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="s"`},
			"--s\nContent-Type: text/plain\n\nsigned text\n--s\nContent-Type: application/pgp-signature; name=\"signature.asc\"\n\n"+
				"-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n--s--\n"),
			privacyindex.EncNone, func(t *testing.T, s Security, m store.Message) {
				if !s.Structure.PGPSigned || s.Structure.PGPSigPath != "2" || m.TextBody != "signed text" || len(m.Attachments) != 0 {
					t.Errorf("structure %+v text %q attachments %+v", s.Structure, m.TextBody, m.Attachments)
				}
			}},
		{"s/mime enveloped", mkmail([]string{"From: carol@remote.example", "To: alice@example.org",
			`Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"`, "Content-Transfer-Encoding: base64"}, "MIAGCSqGSIb3DQEHA6CAMIACAQAx\n"),
			privacyindex.EncMIME, nil},
		{"clear", simple("carol@remote.example", "alice@example.org", "clear", "hello"), privacyindex.EncNone, nil},
		{"armor that is not encrypted data", simple("carol@remote.example", "alice@example.org", "...", fakeArmor),
			privacyindex.EncNone, func(t *testing.T, s Security, m store.Message) {
				if !s.Structure.PGPInline || s.Structure.ProtectedHeaders {
					t.Errorf("structure = %+v", s.Structure)
				}
			}},
	}
	f := newFixture(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := f.one(c.raw)
			s := f.security(m)
			if s.Structure.Encryption != c.enc || s.Features.Encryption != c.enc {
				t.Errorf("encryption = %v / %v, want %v", s.Structure.Encryption, s.Features.Encryption, c.enc)
			}
			if c.check != nil {
				c.check(t, s, m)
			}
		})
	}
}

func TestTransportAndRouteFacts(t *testing.T) {
	f := newFixture(t)
	raw := mkmail([]string{
		"Received: from mx.remote.example (mx.remote.example [192.0.2.1]) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) by relay.remote.example (Postfix) with ESMTPS id ABC; Mon, 2 Jan 2006 15:04:05 +0000",
		"Received: from localhost (localhost [127.0.0.1]) by mx.remote.example (Postfix) with ESMTP id DEF",
		"Received: from laptop (unknown [198.51.100.7]) by mx.remote.example with ESMTPSA id GHI",
		"From: carol@remote.example", "To: alice@example.org", "Subject: route",
		"List-Id: Friends <friends.lists.example>", "ARC-Seal: i=1; a=rsa-sha256; d=lists.example; cv=none; b=xyz",
		"Autocrypt: addr=carol@remote.example; prefer-encrypt=mutual; keydata=AAAA",
		"DKIM-Signature: v=1; d=remote.example; s=x; b=abc",
	}, "hi")
	res, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"alice@example.org"}, TLSVersion: "TLSv1.3",
		TLSCipher: "TLS_AES_256_GCM_SHA384", ClientAddr: "192.0.2.9", MailFrom: "carol@remote.example"}, []byte(raw))
	must(t, err)
	m, err := f.st.GetMessage(f.ctx, f.alice, res.Deliveries[0].MessageID)
	must(t, err)
	s := f.security(m)
	ft := s.Features
	if ft.TLSVersion != "TLSv1.3" || ft.TLSCipher != "TLS_AES_256_GCM_SHA384" {
		t.Errorf("TLS = %q %q", ft.TLSVersion, ft.TLSCipher)
	}
	if ft.Hops != (privacyindex.Hops{Count: 2, AllTLS: true}) {
		t.Errorf("hops = %+v, want 2 external, all TLS", ft.Hops)
	}
	if !ft.ListID || !ft.ARCSealed {
		t.Errorf("ListID %v ARCSealed %v", ft.ListID, ft.ARCSealed)
	}
	if ft.DKIM != privacyindex.AuthNone {
		t.Error("a DKIM-Signature header is not a pass")
	}
	st := s.Structure
	if !st.Autocrypt || st.AutocryptPreferEncrypt != "mutual" || !st.AutocryptMatchesFrom || !st.DKIMSigned {
		t.Errorf("structure = %+v", st)
	}
	if s.Envelope == nil || s.Envelope.ClientAddr != "192.0.2.9" {
		t.Errorf("envelope facts = %+v", s.Envelope)
	}

	clear := hops([]string{"from a.example (a.example [192.0.2.1]) by b.example with SMTP id 1"})
	if clear.Count != 1 || clear.AllTLS || !clear.AnyClear {
		t.Errorf("clear hop = %+v", clear)
	}
	// Our own Received header (deliver as a pipe transport) is not upstream.
	p := Parse([]byte("Received: from x.example (x.example [192.0.2.1]) by us.example with SMTP\r\n"+
		"Received: from y.example (y.example [192.0.2.2]) by x.example with ESMTPS\r\n\r\nbody"), 1)
	if p.Structure.Hops != (privacyindex.Hops{Count: 1, AllTLS: true}) {
		t.Errorf("hops without our own = %+v", p.Structure.Hops)
	}
}

func TestHistory(t *testing.T) {
	f := newFixture(t)
	env := Envelope{Recipients: []string{"alice@example.org"}, TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_128_GCM_SHA256"}
	var last store.Message
	for i := 0; i < 4; i++ {
		res, err := f.in.Ingest(f.ctx, env, []byte(simple("carol@remote.example", "alice@example.org", fmt.Sprint("n", i), "x")))
		must(t, err)
		last, err = f.st.GetMessage(f.ctx, f.alice, res.Deliveries[0].MessageID)
		must(t, err)
	}
	h := f.security(last).Features.History
	if h.Messages != 3 || h.UsualTLS != "TLSv1.3" || h.UsualTLSCipher != "TLS_AES_128_GCM_SHA256" {
		t.Errorf("history = %+v, want 3 earlier TLSv1.3 messages", h)
	}
}

func TestVerifierIsPluggable(t *testing.T) {
	f := newFixture(t)
	var got VerifyInput
	f.with(func(c *Config) {
		c.Verifier = VerifierFunc(func(ctx context.Context, in VerifyInput) (Verification, error) {
			got = in
			out := in.Features
			out.DKIM, out.DKIMAligned, out.DMARC = privacyindex.AuthPass, true, privacyindex.AuthPass
			out.History = privacyindex.History{Messages: 99} // ignored: ingest owns history
			return Verification{Features: out, Details: map[string]string{"dkim": "pass"}}, nil
		})
	})
	m := f.one(simple("Carol <carol@remote.example>", "alice@example.org", "verified", "x"))
	s := f.security(m)
	if s.Features.DKIM != privacyindex.AuthPass || s.Features.DMARC != privacyindex.AuthPass || s.Features.History.Messages != 0 {
		t.Errorf("features = %+v", s.Features)
	}
	if string(s.Verification) != `{"dkim":"pass"}` {
		t.Errorf("verification = %s", s.Verification)
	}
	if got.From != "carol@remote.example" || got.Sender == nil || got.Sender.Name != "Carol" || got.UserID != f.alice || len(got.Raw) == 0 {
		t.Errorf("verify input = %+v", got)
	}

	f.with(func(c *Config) {
		c.Verifier = VerifierFunc(func(context.Context, VerifyInput) (Verification, error) { return Verification{}, errors.New("boom") })
	})
	m = f.one(simple("carol@remote.example", "alice@example.org", "verifier down", "x"))
	if s := f.security(m); s.VerifyError != "boom" {
		t.Errorf("verify error = %q", s.VerifyError)
	}
	f.with(func(c *Config) {
		c.Verifier = VerifierFunc(func(context.Context, VerifyInput) (Verification, error) { panic("bug") })
	})
	f.one(simple("carol@remote.example", "alice@example.org", "verifier panics", "x"))

	ctx, cancel := context.WithCancel(f.ctx)
	f.with(func(c *Config) {
		c.Verifier = VerifierFunc(func(context.Context, VerifyInput) (Verification, error) {
			cancel()
			return Verification{}, context.Canceled
		})
	})
	if _, err := f.in.Ingest(ctx, Envelope{Recipients: []string{"alice@example.org"}},
		[]byte(simple("carol@remote.example", "alice@example.org", "cancelled", "x"))); err == nil {
		t.Error("a cancelled ingest must fail so that the sender retries")
	}
}

// countingStore counts PutBlob calls.
type countingStore struct {
	store.Store
	blobPuts atomic.Int64
}

func (s *countingStore) PutBlob(ctx context.Context, b []byte) (string, error) {
	s.blobPuts.Add(1)
	return s.Store.PutBlob(ctx, b)
}

// failing makes one store method fail with ErrUnavailable.
type failing struct {
	store.Store
	method string
}

func (s failing) PutMessage(ctx context.Context, m store.Message) (store.Message, bool, error) {
	if s.method == "PutMessage" {
		return store.Message{}, false, fmt.Errorf("disk gone: %w", store.ErrUnavailable)
	}
	return s.Store.PutMessage(ctx, m)
}

func (s failing) PutBlob(ctx context.Context, b []byte) (string, error) {
	if s.method == "PutBlob" {
		return "", fmt.Errorf("disk gone: %w", store.ErrUnavailable)
	}
	return s.Store.PutBlob(ctx, b)
}

func (s failing) FindContactByChannel(ctx context.Context, u uuid.UUID, p, a string) (store.Contact, error) {
	if s.method == "FindContactByChannel" {
		return store.Contact{}, fmt.Errorf("timeout: %w", store.ErrUnavailable)
	}
	return s.Store.FindContactByChannel(ctx, u, p, a)
}

func TestStoreErrorsAreReturned(t *testing.T) {
	for _, method := range []string{"PutMessage", "PutBlob", "FindContactByChannel"} {
		t.Run(method, func(t *testing.T) {
			f := newFixture(t)
			f.with(func(c *Config) { c.Store = failing{Store: f.st, method: method} })
			_, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"alice@example.org"}},
				[]byte(simple("carol@remote.example", "alice@example.org", "x", "x")))
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("err = %v, want ErrUnavailable", err)
			}
		})
	}
}

// Vectors 1 and 2 of PRIVACY-INDEX.md need nothing but what ingest sees.
func TestMessagePIVectors(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		tls   string
		score int
		band  string
	}{{"", 7, "E"}, {"TLSv1.3", 22, "D"}} {
		res, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"alice@example.org"}, TLSVersion: c.tls},
			[]byte(simple(fmt.Sprintf("stranger%s@remote.example", c.tls), "alice@example.org", "hello", "x")))
		must(t, err)
		m, err := f.st.GetMessage(f.ctx, f.alice, res.Deliveries[0].MessageID)
		must(t, err)
		if m.PI.Score != c.score || m.PI.Band != c.band || m.PI.Version != privacyindex.Version || len(m.PI.Details) == 0 {
			t.Errorf("TLS %q: PI = %d %s v%d (%d bytes of details), want %d %s", c.tls, m.PI.Score, m.PI.Band, m.PI.Version, len(m.PI.Details), c.score, c.band)
		}
	}
}

func TestAddChannelMergesAutomaticContact(t *testing.T) {
	f := newFixture(t)
	a := f.one(simple("carol@home.example", "alice@example.org", "home", "one"))
	b := f.one(simple("carol@work.example", "alice@example.org", "work", "two"))
	carol := f.contact(f.alice, "carol@home.example")
	must(t, f.in.AddChannel(f.ctx, f.alice, carol.ID, store.Channel{Protocol: "email", Address: "Carol@Work.example"}))
	if c := f.contact(f.alice, "carol@work.example"); c.ID != carol.ID {
		t.Errorf("carol@work.example belongs to %v, want %v", c.ID, carol.ID)
	}
	if ms := f.messages(f.alice, a.ConversationID); len(ms) != 2 {
		t.Errorf("conversation has %d messages, want 2 (b was in %v)", len(ms), b.ConversationID)
	}
	// A brand new address is simply added.
	must(t, f.in.AddChannel(f.ctx, f.alice, carol.ID, store.Channel{Protocol: "email", Address: "carol@third.example"}))
	if c := f.contact(f.alice, "carol@third.example"); c.ID != carol.ID || len(c.Channels) != 3 {
		t.Errorf("contact = %+v", c)
	}
	// An address of a contact with several channels is not taken silently.
	now := msTime(time.Now())
	dan := store.Contact{ID: uuid.Must(uuid.NewV7()), UserID: f.alice, Name: "Dan", CreatedAt: now, UpdatedAt: now,
		Channels: []store.Channel{{Protocol: "email", Address: "dan@a.example"}, {Protocol: "email", Address: "dan@b.example"}}}
	must(t, f.st.PutContact(f.ctx, dan))
	if err := f.in.AddChannel(f.ctx, f.alice, carol.ID, store.Channel{Protocol: "email", Address: "dan@a.example"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("err = %v, want ErrExists", err)
	}
}

// A message whose only party is the user (a forgeable From) never joins an
// existing thread by its References.
func TestOwnAddressDoesNotJoinThreads(t *testing.T) {
	f := newFixture(t)
	first := f.one(simple("carol@remote.example", "alice@example.org", "plans", "hello", "Message-ID: <t1@remote.example>"))
	forged := f.one(simple("alice@example.org", "alice@example.org", "Re: plans", "forged", "References: <t1@remote.example>", "Message-ID: <t2@evil.example>"))
	if forged.ConversationID == first.ConversationID {
		t.Fatal("a message from the user's own address joined carol's thread through References")
	}
}
