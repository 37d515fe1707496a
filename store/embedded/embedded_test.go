package embedded_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
	"github.com/caliopen/caliopen/store/storetest"
)

func openTemp(tb testing.TB, opts ...embedded.Option) *embedded.Store {
	tb.Helper()
	s, err := embedded.Open(filepath.Join(tb.TempDir(), "sub", "caliopen.db"), opts...)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func TestUnavailable(t *testing.T) {
	storetest.RunUnavailable(t, func(t *testing.T) store.Store {
		s := openTemp(t)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		return s
	})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return openTemp(b) })
}

func TestLockedByAnotherOpener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "caliopen.db")
	s, err := embedded.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	start := time.Now()
	_, err = embedded.Open(path, embedded.WithLockTimeout(200*time.Millisecond))
	if err == nil {
		t.Fatal("second Open of a locked file succeeded")
	}
	if !strings.Contains(err.Error(), "locked by another process") || !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("second Open: %v; want a clear 'locked by another process' ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %s despite a 200ms lock timeout", d)
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "caliopen.db")
	s, err := embedded.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	u := store.User{ID: uuid.Must(uuid.NewV7()), Name: "alice", PasswordHash: "$argon2id$x"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	c, err := s.GetOrCreateConversation(ctx, store.Conversation{UserID: u.ID, Key: "bob"})
	if err != nil {
		t.Fatalf("GetOrCreateConversation: %v", err)
	}
	m, _, err := s.PutMessage(ctx, store.Message{UserID: u.ID, ConversationID: c.ID, DedupKey: "d1", Excerpt: "hi"})
	if err != nil {
		t.Fatalf("PutMessage: %v", err)
	}
	hash, err := s.PutBlob(ctx, []byte("raw message"))
	if err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2, err := embedded.Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if got, err := s2.GetUserByName(ctx, "alice"); err != nil || got.ID != u.ID || got.PasswordHash != u.PasswordHash {
		t.Errorf("user after reopen = %+v, %v", got, err)
	}
	list, _, err := s2.ListConversations(ctx, u.ID, store.Page{})
	if err != nil || len(list) != 1 || list[0].LastMessageID != m.ID || list[0].MessageCount != 1 {
		t.Errorf("conversations after reopen = %+v, %v", list, err)
	}
	if _, created, err := s2.PutMessage(ctx, store.Message{UserID: u.ID, ConversationID: c.ID, DedupKey: "d1"}); err != nil || created {
		t.Errorf("redelivery after reopen: created %v, %v; want the stored one", created, err)
	}
	if b, err := s2.GetBlob(ctx, hash); err != nil || string(b) != "raw message" {
		t.Errorf("blob after reopen = %q, %v", b, err)
	}
}

func TestBadInput(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t)
	u := store.User{ID: uuid.Must(uuid.NewV7()), Name: "bob"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	for _, cursor := range []string{"not base64!", "AAAA", "AQ"} {
		_, _, err := s.ListConversations(ctx, u.ID, store.Page{Cursor: cursor})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ListConversations(cursor %q): %v, want ErrInvalid", cursor, err)
		}
	}
	if _, err := s.GetBlob(ctx, "../../etc/passwd"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetBlob(bad hash): %v, want ErrNotFound", err)
	}
	// Keys longer than bbolt allows are hashed, not refused.
	long := strings.Repeat("x", 40000)
	c, err := s.GetOrCreateConversation(ctx, store.Conversation{UserID: u.ID, Key: long})
	if err != nil {
		t.Fatalf("GetOrCreateConversation(40 kB key): %v", err)
	}
	m, _, err := s.PutMessage(ctx, store.Message{UserID: u.ID, ConversationID: c.ID, DedupKey: long, MessageID: long})
	if err != nil {
		t.Fatalf("PutMessage(40 kB keys): %v", err)
	}
	if got, err := s.FindMessageByMessageID(ctx, u.ID, long); err != nil || got.ID != m.ID {
		t.Errorf("FindMessageByMessageID(40 kB) = %v, %v", got.ID, err)
	}
}

func TestCanceledContext(t *testing.T) {
	s := openTemp(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.AddDomain(ctx, store.Domain{Name: "example.org"})
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("AddDomain with a canceled context: %v, want ErrUnavailable and context.Canceled", err)
	}
	if _, err := s.ListDomains(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("ListDomains with a canceled context: %v, want ErrUnavailable", err)
	}
}

// BenchmarkListConversations100k reads pages of a 100,000-conversation
// mailbox, first and 90,000 down: both must cost a seek plus one page.
// Seeding runs without fsync (WithNoSync) and the reads on a reopened file.
func BenchmarkListConversations100k(b *testing.B) {
	const n = 100_000
	ctx := b.Context()
	path := filepath.Join(b.TempDir(), "big.db")
	seed, err := embedded.Open(path, embedded.WithNoSync())
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	u := store.User{ID: uuid.Must(uuid.NewV7()), Name: "big"}
	if err := seed.CreateUser(ctx, u); err != nil {
		b.Fatalf("CreateUser: %v", err)
	}
	t0 := time.Now().Add(-time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if _, err := seed.GetOrCreateConversation(ctx, store.Conversation{
					UserID: u.ID, Key: strconv.Itoa(i), CreatedAt: t0.Add(time.Duration(i) * time.Millisecond),
				}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("seeding: %v", err)
	}
	if err := seed.Close(); err != nil {
		b.Fatalf("Close: %v", err)
	}
	s, err := embedded.Open(path)
	if err != nil {
		b.Fatalf("reopen: %v", err)
	}
	defer s.Close()

	deep := ""
	for range 90_000 / store.MaxLimit {
		_, next, err := s.ListConversations(ctx, u.ID, store.Page{Limit: store.MaxLimit, Cursor: deep})
		if err != nil || next == "" {
			b.Fatalf("paging down: %q, %v", next, err)
		}
		deep = next
	}
	for _, bc := range []struct{ name, cursor string }{{"first", ""}, {"deep", deep}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				page, _, err := s.ListConversations(ctx, u.ID, store.Page{Cursor: bc.cursor})
				if err != nil || len(page) != store.DefaultLimit {
					b.Fatalf("ListConversations: %d, %v", len(page), err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
		})
	}
}
