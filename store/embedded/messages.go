package embedded

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

func convMessageKey(m store.Message) []byte {
	return append(bytes.Clone(m.ConversationID[:]), orderKey(m.ReceivedAt, m.ID)...)
}

func messageIDKey(m store.Message) []byte {
	return append(digest(m.MessageID), m.ID[:]...)
}

func (s *Store) PutMessage(ctx context.Context, m store.Message) (store.Message, bool, error) {
	const op = "put message"
	if m.UserID == uuid.Nil || m.ConversationID == uuid.Nil || m.DedupKey == "" {
		return store.Message{}, false, s.wrap(op, invalid("message needs a user ID, a conversation ID and a dedup key"))
	}
	// Everything that does not depend on the stored state is settled (and
	// the value encoded) before the transaction: the write lock is shared.
	if m.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return store.Message{}, false, s.wrap(op, err)
		}
		m.ID = id
	}
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = now()
	}
	val := encodeMessage(m)
	dedup := digest(m.DedupKey)

	var (
		stored  store.Message
		created bool
	)
	err := s.update(ctx, op, func(tx *bolt.Tx) error {
		created = false
		mb, ok, err := openMailbox(tx, m.UserID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("conversation %s", m.ConversationID)
		}
		if v := mb.dedup.Get(dedup); v != nil {
			prev, found, err := getMessageRecord(mb.messages, v)
			if err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("dedup index points to missing message %x", v)
			}
			stored = prev
			return nil
		}
		conv, err := getConversation(mb, m.ConversationID)
		if err != nil {
			return err
		}
		if mb.messages.Get(idKey(m.ID)) != nil {
			return exists("message %s", m.ID)
		}
		if err := putSegmented(mb.messages, idKey(m.ID), val); err != nil {
			return err
		}
		if err := indexMessage(mb, m, dedup); err != nil {
			return err
		}
		if err := messageStored(tx, m); err != nil {
			return err
		}

		next := conv.Apply(store.PutDelta(m))
		if newest, _ := page(mb.convMessages.Cursor(), m.ConversationID[:], nil, 1); len(newest) == 1 && orderKeyID(newest[0]) == m.ID {
			next = next.WithLatest(&m)
		}
		if err := putConversation(mb, next, conv); err != nil {
			return err
		}
		stored, created = m, true
		return nil
	})
	if err != nil {
		return store.Message{}, false, err
	}
	return stored, created, nil
}

// indexMessage adds m's index entries (not the record itself).
func indexMessage(mb mailbox, m store.Message, dedup []byte) error {
	if err := mb.dedup.Put(dedup, idKey(m.ID)); err != nil {
		return err
	}
	if err := mb.convMessages.Put(convMessageKey(m), nil); err != nil {
		return err
	}
	if m.MessageID != "" {
		return mb.messageIDs.Put(messageIDKey(m), nil)
	}
	return nil
}

// unindexMessage deletes m's record and index entries, not its
// conversation's summary.
func unindexMessage(mb mailbox, m store.Message) error {
	// The dedup entry goes too: a message the user deleted comes back if it
	// is delivered again, as it would on any mail server.
	if v := mb.dedup.Get(digest(m.DedupKey)); bytes.Equal(v, m.ID[:]) {
		if err := mb.dedup.Delete(digest(m.DedupKey)); err != nil {
			return err
		}
	}
	if err := mb.convMessages.Delete(convMessageKey(m)); err != nil {
		return err
	}
	if m.MessageID != "" {
		if err := mb.messageIDs.Delete(messageIDKey(m)); err != nil {
			return err
		}
	}
	return deleteSegmented(mb.messages, idKey(m.ID))
}

// getMessage loads the user's message id.
func getMessage(mb mailbox, id uuid.UUID) (store.Message, error) {
	m, ok, err := getMessageRecord(mb.messages, idKey(id))
	if err == nil && !ok {
		err = notFound("message %s", id)
	}
	return m, err
}

func (s *Store) GetMessage(ctx context.Context, userID, id uuid.UUID) (store.Message, error) {
	var m store.Message
	err := s.view(ctx, "get message", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("message %s", id)
		}
		m, err = getMessage(mb, id)
		return err
	})
	return m, err
}

func (s *Store) FindMessageByMessageID(ctx context.Context, userID uuid.UUID, messageID string) (store.Message, error) {
	var m store.Message
	err := s.view(ctx, "find message by Message-ID", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		if !ok || messageID == "" {
			return notFound("message with Message-ID %q", messageID)
		}
		// Several messages may share a Message-ID (a copy sent and received):
		// the first stored wins, as UUIDv7 IDs sort by time.
		prefix := digest(messageID)
		k, _ := mb.messageIDs.Cursor().Seek(prefix)
		if !bytes.HasPrefix(k, prefix) {
			return notFound("message with Message-ID %q", messageID)
		}
		id, err := idFrom(k[len(prefix):])
		if err != nil {
			return err
		}
		m, err = getMessage(mb, id)
		return err
	})
	return m, err
}

func (s *Store) ListMessages(ctx context.Context, userID, conversationID uuid.UUID, p store.Page) ([]store.Message, string, error) {
	after, err := decodeCursor(p.Cursor)
	if err != nil {
		return nil, "", s.wrap("list messages", err)
	}
	limit := p.ClampLimit()
	var (
		out  []store.Message
		next string
	)
	err = s.view(ctx, "list messages", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		if !ok || mb.convs.Get(idKey(conversationID)) == nil {
			return notFound("conversation %s", conversationID)
		}
		keys, more := page(mb.convMessages.Cursor(), conversationID[:], after, limit)
		out = make([]store.Message, 0, len(keys))
		for _, k := range keys {
			m, err := getMessage(mb, orderKeyID(k))
			if err != nil {
				return fmt.Errorf("conversation index points to a missing message: %w", err)
			}
			out = append(out, m)
		}
		if more {
			next = encodeCursor(keys[len(keys)-1])
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// changeMessage loads the user's message id, lets fn change it and the
// conversation, and writes both back.
func (s *Store) changeMessage(ctx context.Context, op string, userID, id uuid.UUID, fn func(m *store.Message, c *store.Conversation)) error {
	return s.update(ctx, op, func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("message %s", id)
		}
		m, err := getMessage(mb, id)
		if err != nil {
			return err
		}
		conv, err := getConversation(mb, m.ConversationID)
		if err != nil {
			return fmt.Errorf("message %s: %w", id, err)
		}
		next := conv
		fn(&m, &next)
		if err := putMessageRecord(mb.messages, m); err != nil {
			return err
		}
		return putConversation(mb, next, conv)
	})
}

func (s *Store) SetFlags(ctx context.Context, userID, id uuid.UUID, f store.Flags) error {
	return s.changeMessage(ctx, "set flags", userID, id, func(m *store.Message, c *store.Conversation) {
		*c = c.Apply(store.FlagsDelta(m.Flags, f))
		m.Flags = f
	})
}

func (s *Store) SetSecurity(ctx context.Context, userID, id uuid.UUID, security []byte, pi store.PI) error {
	return s.changeMessage(ctx, "set security", userID, id, func(m *store.Message, _ *store.Conversation) {
		m.Security, m.PI = security, pi
	})
}

func (s *Store) DeleteMessage(ctx context.Context, userID, id uuid.UUID) error {
	return s.update(ctx, "delete message", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("message %s", id)
		}
		m, err := getMessage(mb, id)
		if err != nil {
			return err
		}
		if err := unindexMessage(mb, m); err != nil {
			return err
		}
		if err := messageGone(tx, m); err != nil {
			return err
		}
		conv, err := getConversation(mb, m.ConversationID)
		if err != nil {
			return fmt.Errorf("message %s: %w", id, err)
		}
		next := conv.Apply(store.DeleteDelta(m))
		if next.LastMessageID == m.ID { // the summary shows the newest left
			var latest *store.Message
			if newest, _ := page(mb.convMessages.Cursor(), m.ConversationID[:], nil, 1); len(newest) == 1 {
				last, err := getMessage(mb, orderKeyID(newest[0]))
				if err != nil {
					return err
				}
				latest = &last
			}
			next = next.WithLatest(latest)
		}
		return putConversation(mb, next, conv)
	})
}
