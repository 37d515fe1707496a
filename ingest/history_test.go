package ingest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

// listCounter counts the message lists ingest reads.
type listCounter struct {
	store.Store
	lists atomic.Int64
}

func (s *listCounter) ListMessages(ctx context.Context, userID, conv uuid.UUID, p store.Page) ([]store.Message, string, error) {
	s.lists.Add(1)
	return s.Store.ListMessages(ctx, userID, conv, p)
}

func (f *fixture) sendFrom(sender, subject string, env Envelope) Security {
	f.t.Helper()
	env.Recipients = []string{"alice@example.org"}
	res, err := f.in.Ingest(f.ctx, env, []byte(simple(sender, "alice@example.org", subject, "x")))
	must(f.t, err)
	m, err := f.st.GetMessage(f.ctx, f.alice, res.Deliveries[0].MessageID)
	must(f.t, err)
	return f.security(m)
}

func (f *fixture) contactHistory(addr string) []historyEntry {
	f.t.Helper()
	c, err := f.st.FindContactByChannel(f.ctx, f.alice, "email", addr)
	must(f.t, err)
	es, ok := decodeHistory(&c)
	if !ok {
		f.t.Fatalf("contact %s has no history summary: %s", addr, c.History)
	}
	return es
}

// The history is summarised on the contact as messages are stored: a
// delivery reads no earlier message, and the window is the latest ten.
func TestHistoryIsKeptOnTheContact(t *testing.T) {
	cs := &listCounter{Store: openStore(t)}
	f := newFixtureOn(t, cs)
	env := Envelope{TLSVersion: "TLSv1.2", TLSCipher: "OLD"}
	for i := range 12 {
		if i == 4 {
			env = Envelope{TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_128_GCM_SHA256"}
		}
		s := f.sendFrom("carol@remote.example", fmt.Sprint("n", i), env)
		if want := min(i, historyMessages); s.Features.History.Messages != want {
			t.Fatalf("message %d: history of %d messages, want %d", i, s.Features.History.Messages, want)
		}
	}
	if n := cs.lists.Load(); n != 0 {
		t.Errorf("deliveries listed messages %d times, want 0", n)
	}
	es := f.contactHistory("carol@remote.example")
	if len(es) != historyMessages || es[0].TLS != "TLSv1.2" || es[1].TLS != "TLSv1.2" || es[2].TLS != "TLSv1.3" {
		t.Errorf("summary = %+v, want the latest 10, oldest first (2 TLSv1.2 then TLSv1.3)", es)
	}
	if h := summarise(es); h.UsualTLS != "TLSv1.3" || h.UsualTLSCipher != "TLS_AES_128_GCM_SHA256" {
		t.Errorf("usual = %+v", h)
	}

	// The same bytes twice, without Message-ID so that the second is
	// answered by the store's dedup: one entry.
	raw := []byte("From: carol@remote.example\r\nTo: alice@example.org\r\nSubject: twice\r\n\r\nx\r\n")
	e := Envelope{Recipients: []string{"alice@example.org"}, TLSVersion: "TLSv1.1"}
	for range 2 {
		_, err := f.in.Ingest(f.ctx, e, raw)
		must(t, err)
	}
	again := f.contactHistory("carol@remote.example")
	n := 0
	for _, x := range again {
		if x.TLS == "TLSv1.1" {
			n++
		}
	}
	if n != 1 || len(again) != historyMessages {
		t.Errorf("after the same bytes twice: %d entries of them in %+v, want 1", n, again)
	}
}

// A contact written before summaries existed gets its history from its
// messages once, exactly as before, and a summary from then on.
func TestHistoryOfAContactWithoutSummary(t *testing.T) {
	cs := &listCounter{Store: openStore(t)}
	f := newFixtureOn(t, cs)
	env := Envelope{TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_128_GCM_SHA256"}
	for i := range 3 {
		f.sendFrom("carol@remote.example", fmt.Sprint("n", i), env)
	}
	c, err := f.st.FindContactByChannel(f.ctx, f.alice, "email", "carol@remote.example")
	must(t, err)
	c.History = nil
	must(t, f.st.PutContact(f.ctx, c))

	cs.lists.Store(0)
	s := f.sendFrom("carol@remote.example", "after upgrade", env)
	if h := s.Features.History; h.Messages != 3 || h.UsualTLS != "TLSv1.3" {
		t.Errorf("history = %+v, want the 3 stored messages", h)
	}
	if cs.lists.Load() == 0 {
		t.Error("no message read for a contact without summary")
	}
	if es := f.contactHistory("carol@remote.example"); len(es) != 4 {
		t.Errorf("summary = %+v, want 4 entries", es)
	}
	cs.lists.Store(0)
	if s := f.sendFrom("carol@remote.example", "next", env); s.Features.History.Messages != 4 || cs.lists.Load() != 0 {
		t.Errorf("next delivery: history %+v after %d message reads, want 4 from the summary and none", s.Features.History, cs.lists.Load())
	}
}

// A pending DKIM check that completes later (keytrust.Reverify) counts in
// the history from then on.
func TestUpdateHistoryAfterReverification(t *testing.T) {
	f := newFixture(t)
	f.with(func(c *Config) {
		c.Verifier = VerifierFunc(func(_ context.Context, in VerifyInput) (Verification, error) {
			out := in.Features
			out.DKIM = privacyindex.AuthTempError
			return Verification{Features: out}, nil
		})
	})
	res, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"alice@example.org"}},
		[]byte(simple("carol@remote.example", "alice@example.org", "pending", "x")))
	must(t, err)
	m, err := f.st.GetMessage(f.ctx, f.alice, res.Deliveries[0].MessageID)
	must(t, err)
	if es := f.contactHistory("carol@remote.example"); len(es) != 1 || es[0].DKIM != privacyindex.AuthTempError {
		t.Fatalf("summary = %+v, want one pending entry", es)
	}
	done := f.security(m).Features
	done.DKIM = privacyindex.AuthPass
	must(t, UpdateHistory(f.ctx, f.st, m, done))
	es := f.contactHistory("carol@remote.example")
	if len(es) != 1 || es[0].DKIM != privacyindex.AuthPass || !summarise(es).DKIMUsuallyPass {
		t.Errorf("summary after re-verification = %+v, want DKIM pass", es)
	}
}

// meddlingStore writes to the contact after every read of it, as a user
// verifying a key between a delivery's read and its write would.
type meddlingStore struct {
	store.Store
	contact uuid.UUID
	writes  atomic.Int64
}

func (s *meddlingStore) GetContact(ctx context.Context, userID, id uuid.UUID) (store.Contact, error) {
	c, err := s.Store.GetContact(ctx, userID, id)
	if err != nil || id != s.contact {
		return c, err
	}
	now, _ := s.Store.GetContact(ctx, userID, id)
	now.Name += "+"
	if err := s.Store.PutContact(ctx, now); err != nil {
		return c, err
	}
	s.writes.Add(1)
	return c, nil
}

// Recording the history keeps what was written to the contact meanwhile
// (it used to write back the whole contact as read, undoing it).
func TestRecordHistoryKeepsConcurrentWrites(t *testing.T) {
	ms := &meddlingStore{Store: openStore(t)}
	f := newFixtureOn(t, ms)
	env := Envelope{TLSVersion: "TLSv1.3"}
	f.sendFrom("carol@remote.example", "first", env)
	c, err := f.st.FindContactByChannel(f.ctx, f.alice, "email", "carol@remote.example")
	must(t, err)
	ms.contact = c.ID
	f.sendFrom("carol@remote.example", "second", env)
	ms.contact = uuid.Nil

	got, err := f.st.FindContactByChannel(f.ctx, f.alice, "email", "carol@remote.example")
	must(t, err)
	n := ms.writes.Load()
	if n == 0 || got.Name != c.Name+strings.Repeat("+", int(n)) {
		t.Errorf("name after delivery = %q, want %q then %d concurrent writes kept", got.Name, c.Name, n)
	}
	if es := f.contactHistory("carol@remote.example"); len(es) != 2 {
		t.Errorf("summary = %+v, want 2 entries", es)
	}
}
