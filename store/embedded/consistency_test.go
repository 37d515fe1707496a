package embedded

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

// TestIndexesStayConsistent runs a random mix of writes through the public
// API, then checks every index against the records it indexes, both ways:
// no dangling entry, no record missing from its index.
func TestIndexesStayConsistent(t *testing.T) {
	ctx := t.Context()
	s, err := Open(filepath.Join(t.TempDir(), "c.db"), WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddDomain(ctx, store.Domain{Name: "example.org"}); err != nil {
		t.Fatal(err)
	}
	var users []uuid.UUID
	for u := range 3 {
		id := uuid.Must(uuid.NewV7())
		must(s.CreateUser(ctx, store.User{ID: id, Name: fmt.Sprint("user", u)}))
		must(s.AddAddress(ctx, store.Address{Address: fmt.Sprintf("u%d@example.org", u), UserID: id}))
		must(s.PutToken(ctx, store.Token{Hash: fmt.Sprint("tok", u), UserID: id, ExpiresAt: time.Now().Add(time.Hour)}))
		users = append(users, id)
	}
	// Token churn: a logout, and expired tokens purged by the next login.
	must(s.DeleteToken(ctx, "tok1"))
	for i := range 5 {
		must(s.PutToken(ctx, store.Token{Hash: fmt.Sprint("old", i), UserID: users[2], ExpiresAt: time.Now().Add(-time.Minute)}))
	}
	must(s.PutToken(ctx, store.Token{Hash: "fresh", UserID: users[2], ExpiresAt: time.Now().Add(time.Hour)}))
	if err := s.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bTokens).Stats().KeyN; n != 3 {
			t.Errorf("%d tokens stored, want 3 (tok0, tok2, fresh): expired ones not purged", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now().Add(-time.Hour)
	type msgRef struct{ user, id uuid.UUID }
	var convs []store.Conversation
	var msgs []msgRef
	var contacts []store.Contact
	for i := range 600 {
		u := users[rng.IntN(len(users))]
		switch op := rng.IntN(10); {
		case op < 2 || len(convs) == 0:
			c, err := s.GetOrCreateConversation(ctx, store.Conversation{UserID: u, Key: fmt.Sprint("k", rng.IntN(40)), CreatedAt: t0})
			if err == nil {
				convs = append(convs, c)
			} else if !isNotFound(err) { // the user may be gone
				t.Fatal(err)
			}
		case op < 6:
			c := convs[rng.IntN(len(convs))]
			m, _, err := s.PutMessage(ctx, store.Message{
				UserID: c.UserID, ConversationID: c.ID, DedupKey: fmt.Sprint("d", rng.IntN(300)),
				MessageID: fmt.Sprint("mid", rng.IntN(200)), ReceivedAt: t0.Add(time.Duration(rng.IntN(1000)) * time.Second),
				Flags: store.Flags{Read: rng.IntN(2) == 0}, Protocol: "email",
			})
			if err == nil {
				msgs = append(msgs, msgRef{c.UserID, m.ID})
			} else if !isNotFound(err) { // the conversation may be gone
				t.Fatal(err)
			}
		case op == 6 && len(msgs) > 0:
			m := msgs[rng.IntN(len(msgs))]
			if rng.IntN(2) == 0 {
				err = s.DeleteMessage(ctx, m.user, m.id)
			} else {
				err = s.SetFlags(ctx, m.user, m.id, store.Flags{Read: rng.IntN(2) == 0})
			}
			if err != nil && !isNotFound(err) {
				t.Fatal(err)
			}
		case op == 7:
			c := store.Contact{ID: uuid.Must(uuid.NewV7()), UserID: u, Channels: []store.Channel{
				{Protocol: "email", Address: fmt.Sprintf("c%d@example.net", rng.IntN(30))}}}
			if len(contacts) > 0 && rng.IntN(2) == 0 {
				c = contacts[rng.IntN(len(contacts))] // re-put with a new channel set
				c.Channels = []store.Channel{{Protocol: "email", Address: fmt.Sprintf("c%d@example.net", rng.IntN(30))}}
			}
			if err := s.PutContact(ctx, c); err == nil {
				contacts = append(contacts, c)
			} else if !isExists(err) && !isNotFound(err) {
				t.Fatal(err)
			}
		case op == 8 && len(contacts) > 0:
			c := contacts[rng.IntN(len(contacts))]
			if err := s.DeleteContact(ctx, c.UserID, c.ID); err != nil && !isNotFound(err) {
				t.Fatal(err)
			}
		case op == 9 && len(convs) > 0:
			c := convs[rng.IntN(len(convs))]
			if err := s.DeleteConversation(ctx, c.UserID, c.ID); err != nil && !isNotFound(err) {
				t.Fatal(err)
			}
		}
		if i == 400 {
			must(s.DeleteUser(ctx, users[0]))
		}
	}
	if err := s.db.View(func(tx *bolt.Tx) error { return checkConsistency(t, tx) }); err != nil {
		t.Fatal(err)
	}
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
func isExists(err error) bool   { return errors.Is(err, store.ErrExists) }

func checkConsistency(t *testing.T, tx *bolt.Tx) error {
	t.Helper()
	// Global: every address and token belongs to an existing mailbox, and
	// the reverse indexes match.
	_ = tx.Bucket(bAddresses).ForEach(func(k, v []byte) error {
		owner, _ := idFrom(v)
		mb, ok, _ := openMailbox(tx, owner)
		if !ok || mb.addresses.Get(k) == nil || tx.Bucket(bDomainAddrs).Get(domainKey(string(k))) == nil {
			t.Errorf("address %s: owner %s or its index entries missing", k, owner)
		}
		return nil
	})
	if n, m := tx.Bucket(bAddresses).Stats().KeyN, tx.Bucket(bDomainAddrs).Stats().KeyN; n != m {
		t.Errorf("%d addresses but %d domain index entries", n, m)
	}
	if n, m := tx.Bucket(bTokens).Stats().KeyN, tx.Bucket(bTokenExpiry).Stats().KeyN; n != m {
		t.Errorf("%d tokens but %d expiry entries", n, m)
	}
	_ = tx.Bucket(bTokens).ForEach(func(k, v []byte) error {
		var tok store.Token
		_ = decode(v, &tok)
		if mb, ok, _ := openMailbox(tx, tok.UserID); !ok || mb.tokens.Get(k) == nil {
			t.Errorf("token %s of %s: mailbox or its index entry missing", k, tok.UserID)
		}
		return nil
	})
	return tx.Bucket(bMailboxes).ForEachBucket(func(uid []byte) error {
		userID, _ := idFrom(uid)
		if tx.Bucket(bUsers).Get(uid) == nil {
			t.Errorf("mailbox %s without a user", userID)
		}
		mb, _, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		checkMailbox(t, mb)
		_ = mb.tokens.ForEach(func(k, _ []byte) error {
			if tx.Bucket(bTokens).Get(k) == nil {
				t.Errorf("mailbox %s lists missing token %s", userID, k)
			}
			return nil
		})
		_ = mb.addresses.ForEach(func(k, _ []byte) error {
			if !bytes.Equal(tx.Bucket(bAddresses).Get(k), uid) {
				t.Errorf("mailbox %s lists address %s it does not own", userID, k)
			}
			return nil
		})
		return nil
	})
}

func checkMailbox(t *testing.T, mb mailbox) {
	t.Helper()
	// Conversations: one key entry, one activity entry, summary matching
	// the messages.
	nConvs := 0
	_ = mb.convs.ForEach(func(k, v []byte) error {
		nConvs++
		c, err := decodeConversation(v)
		if err != nil {
			t.Error(err)
			return nil
		}
		if id, _ := idFrom(mb.convKeys.Get(digest(c.Key))); id != c.ID {
			t.Errorf("conversation %s: key index points to %s", c.ID, id)
		}
		if mb.convActivity.Get(orderKey(c.LastActivity, c.ID)) == nil {
			t.Errorf("conversation %s: no activity entry", c.ID)
		}
		count, unread := 0, 0
		var newest store.Message
		cur := mb.convMessages.Cursor()
		for mk, _ := cur.Seek(c.ID[:]); bytes.HasPrefix(mk, c.ID[:]); mk, _ = cur.Next() {
			m, err := getMessage(mb, orderKeyID(mk[16:]))
			if err != nil {
				t.Errorf("conversation %s: index entry for a missing message: %v", c.ID, err)
				continue
			}
			if count == 0 {
				newest = m
			}
			count++
			if !m.Flags.Read {
				unread++
			}
		}
		if c.MessageCount != count || c.UnreadCount != unread || c.LastMessageID != newest.ID {
			t.Errorf("conversation %s: summary %d/%d last %s, messages say %d/%d last %s",
				c.ID, c.MessageCount, c.UnreadCount, c.LastMessageID, count, unread, newest.ID)
		}
		if newest.ID != uuid.Nil && newest.ReceivedAt.After(c.LastActivity) {
			t.Errorf("conversation %s: LastActivity %v before its newest message %v", c.ID, c.LastActivity, newest.ReceivedAt)
		}
		return nil
	})
	if n := mb.convKeys.Stats().KeyN; n != nConvs {
		t.Errorf("%d conversations, %d key entries", nConvs, n)
	}
	if n := mb.convActivity.Stats().KeyN; n != nConvs {
		t.Errorf("%d conversations, %d activity entries", nConvs, n)
	}
	// Messages: each in its conversation's index, dedup and Message-ID
	// entries pointing back.
	nMsgs, nMIDs := 0, 0
	_ = mb.messages.ForEach(func(k, v []byte) error {
		nMsgs++
		m, err := decodeMessage(v)
		if err != nil {
			t.Error(err)
			return nil
		}
		if mb.convs.Get(m.ConversationID[:]) == nil {
			t.Errorf("message %s in missing conversation %s", m.ID, m.ConversationID)
		}
		if mb.convMessages.Get(convMessageKey(m)) == nil {
			t.Errorf("message %s missing from its conversation index", m.ID)
		}
		if !bytes.Equal(mb.dedup.Get(digest(m.DedupKey)), m.ID[:]) {
			t.Errorf("message %s: dedup entry does not point to it", m.ID)
		}
		if m.MessageID != "" {
			nMIDs++
			if mb.messageIDs.Get(messageIDKey(m)) == nil {
				t.Errorf("message %s: no Message-ID entry", m.ID)
			}
		}
		return nil
	})
	for name, n := range map[string]int{"conversation-message": mb.convMessages.Stats().KeyN, "dedup": mb.dedup.Stats().KeyN} {
		if n != nMsgs {
			t.Errorf("%d messages, %d %s entries", nMsgs, n, name)
		}
	}
	if n := mb.messageIDs.Stats().KeyN; n != nMIDs {
		t.Errorf("%d messages with a Message-ID, %d entries", nMIDs, n)
	}
	// Channels: each points to a contact that has it, and every contact
	// channel is indexed.
	nChannels := 0
	_ = mb.contacts.ForEach(func(k, v []byte) error {
		var c store.Contact
		_ = decode(v, &c)
		for _, ch := range c.Channels {
			nChannels++
			if !bytes.Equal(mb.channels.Get(channelKey(ch)), k) {
				t.Errorf("contact %s: channel %s not indexed to it", c.ID, ch.Address)
			}
		}
		return nil
	})
	if n := mb.channels.Stats().KeyN; n != nChannels {
		t.Errorf("%d contact channels, %d index entries", nChannels, n)
	}
}
