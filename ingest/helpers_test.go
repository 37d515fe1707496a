package ingest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
)

// fixture is a store with the domain example.org and two users:
// alice@example.org and bob@example.org, plus the alias team@ → both.
type fixture struct {
	t     testing.TB
	ctx   context.Context
	st    store.Store
	in    *Ingester
	cfg   Config
	alice uuid.UUID
	bob   uuid.UUID
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureOn(t, openStore(t))
}

func newFixtureOn(t testing.TB, st store.Store) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, ctx: ctx, st: st, alice: uuid.Must(uuid.NewV7()), bob: uuid.Must(uuid.NewV7())}
	must(t, st.AddDomain(ctx, store.Domain{Name: "example.org", CreatedAt: msTime(time.Now())}))
	must(t, st.CreateUser(ctx, store.User{ID: f.alice, Name: "alice", CreatedAt: msTime(time.Now())}))
	must(t, st.CreateUser(ctx, store.User{ID: f.bob, Name: "bob", CreatedAt: msTime(time.Now())}))
	must(t, st.AddAddress(ctx, store.Address{Address: "alice@example.org", UserID: f.alice}))
	must(t, st.AddAddress(ctx, store.Address{Address: "bob@example.org", UserID: f.bob}))
	must(t, st.PutAlias(ctx, store.Alias{Address: "team@example.org", Targets: []string{"alice@example.org", "bob@example.org"}}))
	r, err := resolve.New(resolve.Config{Store: st, Delimiter: resolve.DefaultDelimiter})
	must(t, err)
	f.cfg = Config{Store: st, Resolver: r}
	f.with(func(*Config) {})
	return f
}

// with changes the fixture's Config and builds its Ingester again.
func (f *fixture) with(edit func(*Config)) {
	f.t.Helper()
	edit(&f.cfg)
	in, err := New(f.cfg)
	must(f.t, err)
	f.in = in
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ingest delivers raw to rcpts and expects exactly n deliveries.
func (f *fixture) ingest(raw string, rcpts ...string) Result {
	f.t.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{"alice@example.org"}
	}
	res, err := f.in.Ingest(f.ctx, Envelope{MailFrom: "sender@remote.example", Recipients: rcpts}, []byte(raw))
	if err != nil {
		f.t.Fatalf("Ingest: %v", err)
	}
	return res
}

// one ingests raw for alice and returns the stored message, with its
// bodies read from the raw message (withBodies).
func (f *fixture) one(raw string) store.Message {
	f.t.Helper()
	res := f.ingest(raw)
	if len(res.Deliveries) != 1 {
		f.t.Fatalf("deliveries = %d, want 1", len(res.Deliveries))
	}
	d := res.Deliveries[0]
	m, err := f.st.GetMessage(f.ctx, d.UserID, d.MessageID)
	if err != nil {
		f.t.Fatalf("GetMessage: %v", err)
	}
	f.checkStored(m, []byte(raw))
	return f.withBodies(m)
}

// withBodies fills m's bodies from its raw message, one parse as the API
// does: ingest stores them nowhere else.
func (f *fixture) withBodies(m store.Message) store.Message {
	f.t.Helper()
	raw, err := f.st.GetBlob(f.ctx, m.RawHash)
	if err != nil {
		f.t.Fatalf("GetBlob: %v", err)
	}
	p := Parse(raw, 0)
	m.TextBody, m.HTMLBody = p.TextBody, p.HTMLBody
	if !utf8.ValidString(m.TextBody) || !utf8.ValidString(m.HTMLBody) {
		f.t.Errorf("bodies are not valid UTF-8")
	}
	return m
}

// checkStored asserts the invariants every stored message keeps.
func (f *fixture) checkStored(m store.Message, raw []byte) {
	f.t.Helper()
	blob, err := f.st.GetBlob(f.ctx, m.RawHash)
	if err != nil {
		f.t.Fatalf("GetBlob: %v", err)
	}
	if string(blob) != string(raw) {
		f.t.Fatalf("blob differs from raw (%d vs %d bytes)", len(blob), len(raw))
	}
	if m.RawSize != int64(len(raw)) {
		f.t.Errorf("RawSize = %d, want %d", m.RawSize, len(raw))
	}
	if m.TextBody != "" || m.HTMLBody != "" {
		f.t.Errorf("bodies stored beside the raw message (%d + %d bytes)", len(m.TextBody), len(m.HTMLBody))
	}
	for name, s := range map[string]string{
		"subject": m.Subject, "excerpt": m.Excerpt, "message-id": m.MessageID,
	} {
		if !utf8.ValidString(s) {
			f.t.Errorf("%s is not valid UTF-8", name)
		}
	}
	for _, p := range m.Participants {
		if !utf8.ValidString(p.Name) || !utf8.ValidString(p.Address) {
			f.t.Errorf("participant %q <%q> not valid UTF-8", p.Name, p.Address)
		}
	}
	for _, a := range m.Attachments {
		if !utf8.ValidString(a.Filename) || !utf8.ValidString(a.ContentType) {
			f.t.Errorf("attachment %+v not valid UTF-8", a)
		}
	}
	if m.ConversationID == uuid.Nil {
		f.t.Error("no conversation")
	}
	if _, err := f.st.GetConversation(f.ctx, m.UserID, m.ConversationID); err != nil {
		f.t.Errorf("conversation: %v", err)
	}
}

func (f *fixture) security(m store.Message) Security {
	f.t.Helper()
	s, err := DecodeSecurity(m.Security)
	if err != nil {
		f.t.Fatalf("security: %v", err)
	}
	return s
}

func (f *fixture) contact(user uuid.UUID, addr string) store.Contact {
	f.t.Helper()
	c, err := f.st.FindContactByChannel(f.ctx, user, "email", addr)
	if err != nil {
		f.t.Fatalf("contact %s: %v", addr, err)
	}
	return c
}

func (f *fixture) messages(user, conv uuid.UUID) []store.Message {
	f.t.Helper()
	ms, _, err := f.st.ListMessages(f.ctx, user, conv, store.Page{Limit: store.MaxLimit})
	if err != nil {
		f.t.Fatalf("ListMessages: %v", err)
	}
	return ms
}

var msgSeq int

// mail builds an RFC 5322 message with CRLF line ends. headers are
// "Name: value" lines; a Message-ID is added unless present.
func mkmail(headers []string, body string) string {
	msgSeq++
	var b strings.Builder
	hasID := false
	for _, h := range headers {
		if strings.HasPrefix(strings.ToLower(h), "message-id:") {
			hasID = true
		}
	}
	if !hasID {
		headers = append(headers, fmt.Sprintf("Message-ID: <m%d.%d@remote.example>", msgSeq, time.Now().UnixNano()))
	}
	for _, h := range headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n"))
	return b.String()
}

func simple(from, to, subject, body string, extra ...string) string {
	h := append([]string{
		"From: " + from, "To: " + to, "Subject: " + subject,
		"Date: Mon, 2 Jan 2006 15:04:05 +0000", "MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
	}, extra...)
	return mkmail(h, body)
}
