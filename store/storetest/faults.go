package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caliopen/caliopen/store"
)

// Fault is one way an engine's PutMessage can stop part-way, as a node's
// death or a cut connection stops it.
type Fault struct {
	Name string
	// Ctx returns a context under which PutMessage stops at that point
	// (and, normally, returns an error).
	Ctx func(context.Context) context.Context
}

// RunFaults checks what a caller sees after PutMessage failed part-way and
// was retried, as the milter's 4xx makes the sender's MTA retry: the message
// is stored once, findable by its Message-ID, the conversation's summary
// names it, and the conversation's message and unread counts are exact,
// also when other messages reach the same conversation meanwhile.
func RunFaults(t *testing.T, s store.Store, faults []Fault) {
	t.Helper()
	for _, f := range faults {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			u := newUser(t, s)
			t0 := base()
			c := newConversation(t, s, u.ID, t0)
			// Twelve messages at once, every third cut by the fault and
			// retried while the others are still being written.
			const n = 12
			msgs := make([]store.Message, n)
			for i := range msgs {
				msgs[i] = newMessage(u.ID, c.ID, t0.Add(time.Duration(i+1)*time.Second))
			}
			mustNil(t, forEach(ctx, n, n, func(ctx context.Context, i int) error {
				if i%3 == 0 {
					_, _, _ = s.PutMessage(f.Ctx(ctx), msgs[i]) // fails part-way (or not at all)
					time.Sleep(time.Duration(i) * 5 * time.Millisecond)
				}
				if _, _, err := s.PutMessage(ctx, msgs[i]); err != nil {
					return fmt.Errorf("PutMessage %d: %w", i, err)
				}
				return nil
			}), "puts")
			// A late redelivery of every message changes nothing.
			for i := range msgs {
				if _, created, err := s.PutMessage(ctx, msgs[i]); err != nil || created {
					t.Errorf("redelivery %d: created %v, err %v; want a duplicate", i, created, err)
				}
			}
			got, err := s.GetConversation(ctx, u.ID, c.ID)
			mustNil(t, err, "GetConversation")
			if got.MessageCount != n || got.UnreadCount != n {
				t.Errorf("after faults and retries: %d messages, %d unread; want %d and %d", got.MessageCount, got.UnreadCount, n, n)
			}
			listed, _, err := s.ListMessages(ctx, u.ID, c.ID, store.Page{Limit: 100})
			mustNil(t, err, "ListMessages")
			seen := map[string]int{}
			for _, m := range listed {
				seen[m.DedupKey]++
			}
			for i, m := range msgs {
				if seen[m.DedupKey] != 1 {
					t.Errorf("message %d listed %d times, want once", i, seen[m.DedupKey])
				}
				if _, err := s.FindMessageByMessageID(ctx, u.ID, m.MessageID); err != nil {
					t.Errorf("message %d not found by Message-ID: %v", i, err)
				}
			}
			if len(listed) != n {
				t.Errorf("%d messages listed, want %d", len(listed), n)
			}
			newest := msgs[n-1]
			if got.Excerpt != newest.Excerpt {
				t.Errorf("summary excerpt %q, want the newest message's %q", got.Excerpt, newest.Excerpt)
			}
		})
	}
}
