package store

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestSummaryArithmetic(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := Conversation{CreatedAt: created, MessageCount: 9, Excerpt: "stale"}.EmptySummary()
	if c.MessageCount != 0 || c.Excerpt != "" || !c.LastActivity.Equal(created) {
		t.Fatalf("empty summary: %+v", c)
	}
	m1 := Message{ID: uuid.New(), ReceivedAt: created.Add(time.Hour), Protocol: "email", Excerpt: "one"}
	m2 := Message{ID: uuid.New(), ReceivedAt: created.Add(time.Minute), Protocol: "xmpp", Flags: Flags{Read: true}}
	c = c.Apply(PutDelta(m1)).WithLatest(&m1)
	c = c.Apply(PutDelta(m2)) // older: activity stays
	if c.MessageCount != 2 || c.UnreadCount != 1 || !c.LastActivity.Equal(m1.ReceivedAt) || c.LastMessageID != m1.ID || c.Excerpt != "one" {
		t.Fatalf("after two puts: %+v", c)
	}
	if !slices.Equal(c.Protocols, []string{"email", "xmpp"}) {
		t.Fatalf("protocols %v", c.Protocols)
	}
	c = c.Apply(FlagsDelta(m1.Flags, Flags{Read: true}))
	if c.UnreadCount != 0 {
		t.Fatalf("read: unread %d", c.UnreadCount)
	}
	if d := FlagsDelta(Flags{Read: true}, Flags{Read: true, Starred: true}); d.Unread != 0 {
		t.Fatalf("starring changed unread by %d", d.Unread)
	}
	m1.Flags.Read = true
	c = c.Apply(DeleteDelta(m1)).WithLatest(&m2)
	if c.MessageCount != 1 || c.UnreadCount != 0 || !c.LastActivity.Equal(m1.ReceivedAt) || c.LastMessageID != m2.ID {
		t.Fatalf("after delete: %+v", c)
	}
	// A delete racing another never drives the counts below zero.
	c = c.Apply(DeleteDelta(m2)).Apply(DeleteDelta(Message{})).WithLatest(nil)
	if c.MessageCount != 0 || c.UnreadCount != 0 || c.LastMessageID != uuid.Nil {
		t.Fatalf("after over-delete: %+v", c)
	}
}
