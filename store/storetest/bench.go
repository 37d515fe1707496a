package storetest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// benchConversations is the mailbox size ListConversations is measured at.
const benchConversations = 10000

// Bench runs the store benchmarks. open is called once per sub-benchmark
// run; it must return a ready store and arrange for its Close.
//
//   - PutMessage/1: one writer, messages/s.
//   - PutMessage/16: 16 concurrent writers (16 mailboxes), messages/s.
//   - ListConversations/10000/first: first page (50) of a 10,000-conversation
//     mailbox, pages/s; .../deep: a page 5,000 conversations down.
func Bench(b *testing.B, open func(b *testing.B) store.Store) {
	b.Run("PutMessage", func(b *testing.B) {
		for _, writers := range []int{1, 16} {
			b.Run(fmt.Sprint(writers), func(b *testing.B) { benchPutMessage(b, open(b), writers) })
		}
	})
	b.Run("ListConversations", func(b *testing.B) {
		b.Run(fmt.Sprint(benchConversations), func(b *testing.B) { benchListConversations(b, open(b)) })
	})
}

func benchPutMessage(b *testing.B, s store.Store, writers int) {
	ctx := b.Context()
	convs := make([]store.Conversation, writers)
	for i := range convs {
		u := newUser(b, s)
		convs[i] = newConversation(b, s, u.ID, base())
	}
	t0 := base()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			c := convs[w]
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				m := newMessage(c.UserID, c.ID, t0.Add(time.Duration(i)*time.Millisecond))
				if _, _, err := s.PutMessage(ctx, m); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatalf("PutMessage: %v", *err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func benchListConversations(b *testing.B, s store.Store) {
	ctx := b.Context()
	u := newUser(b, s)
	if _, err := seedConversations(ctx, s, u.ID, benchConversations, base().Add(-time.Hour)); err != nil {
		b.Fatalf("seeding %d conversations: %v", benchConversations, err)
	}
	// The cursor halfway down, for the deep page.
	deep := ""
	for range benchConversations / 2 / store.MaxLimit {
		_, next, err := s.ListConversations(ctx, u.ID, store.Page{Limit: store.MaxLimit, Cursor: deep})
		if err != nil || next == "" {
			b.Fatalf("paging to the middle: next %q, %v", next, err)
		}
		deep = next
	}
	b.Run("first", func(b *testing.B) { benchPage(b, s, u.ID, "") })
	b.Run("deep", func(b *testing.B) { benchPage(b, s, u.ID, deep) })
}

func benchPage(b *testing.B, s store.Store, userID uuid.UUID, cursor string) {
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		page, _, err := s.ListConversations(ctx, userID, store.Page{Cursor: cursor})
		if err != nil || len(page) != store.DefaultLimit {
			b.Fatalf("ListConversations: %d conversations, %v", len(page), err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
}
