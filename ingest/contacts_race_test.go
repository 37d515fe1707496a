package ingest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// racingStore lets another delivery win the creation of a contact: the
// first PutContact for addr first stores a rival contact for it.
type racingStore struct {
	store.Store
	addr  string
	once  sync.Once
	rival uuid.UUID
}

func (s *racingStore) PutContact(ctx context.Context, c store.Contact) error {
	if len(c.Channels) == 1 && c.Channels[0].Address == s.addr {
		s.once.Do(func() {
			now := msTime(time.Now())
			s.rival = uuid.Must(uuid.NewV7())
			if err := s.Store.PutContact(ctx, store.Contact{ID: s.rival, UserID: c.UserID, Name: "rival",
				Channels: []store.Channel{{Protocol: "email", Address: s.addr}}, Keys: []store.PublicKey{},
				CreatedAt: now, UpdatedAt: now}); err != nil {
				panic(err)
			}
		})
	}
	return s.Store.PutContact(ctx, c)
}

// A new correspondent's contact and conversation are written together; when
// a concurrent delivery created the contact first, the message goes to the
// winner's contact and the conversation made for the loser is gone.
func TestNewContactLostRace(t *testing.T) {
	f := newFixture(t)
	rs := &racingStore{Store: f.st, addr: "carol@remote.example"}
	f.with(func(c *Config) { c.Store = rs })
	m := f.one(simple("carol@remote.example", "alice@example.org, dan@remote.example", "hi", "x"))
	if m.Participants[0].ContactID != rs.rival {
		t.Errorf("from contact = %v, want the rival %v", m.Participants[0].ContactID, rs.rival)
	}
	convs, _, err := f.st.ListConversations(f.ctx, f.alice, store.Page{})
	must(t, err)
	if len(convs) != 1 || convs[0].ID != m.ConversationID {
		t.Fatalf("conversations = %+v, want only the message's", convs)
	}
	dan := f.contact(f.alice, "dan@remote.example")
	if want := convKey([]uuid.UUID{rs.rival, dan.ID}); convs[0].Key != want {
		t.Errorf("conversation key %q, want %q", convs[0].Key, want)
	}
	// The next message from carol joins that conversation.
	if m2 := f.one(simple("carol@remote.example", "alice@example.org, dan@remote.example", "again", "y")); m2.ConversationID != m.ConversationID {
		t.Errorf("second message in %v, want %v", m2.ConversationID, m.ConversationID)
	}
}
