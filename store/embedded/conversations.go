package embedded

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

func (s *Store) GetOrCreateConversation(ctx context.Context, c store.Conversation) (store.Conversation, error) {
	if c.UserID == uuid.Nil || c.Key == "" {
		return store.Conversation{}, s.wrap("get or create conversation", invalid("conversation needs a user ID and a key"))
	}
	// Decided before the transaction so that a rerun (group commit) makes the
	// same choice.
	if c.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return store.Conversation{}, s.wrap("get or create conversation", err)
		}
		c.ID = id
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = now()
	}
	c = c.EmptySummary()

	var out store.Conversation
	err := s.update(ctx, "get or create conversation", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, c.UserID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("user %s", c.UserID)
		}
		if v := mb.convKeys.Get(digest(c.Key)); v != nil {
			id, err := idFrom(v)
			if err != nil {
				return err
			}
			out, err = getConversation(mb, id)
			return err
		}
		if mb.convs.Get(idKey(c.ID)) != nil {
			return exists("conversation %s", c.ID)
		}
		if err := mb.convKeys.Put(digest(c.Key), idKey(c.ID)); err != nil {
			return err
		}
		if err := mb.convActivity.Put(orderKey(c.LastActivity, c.ID), nil); err != nil {
			return err
		}
		out = c
		return mb.convs.Put(idKey(c.ID), encodeConversation(c))
	})
	return out, err
}

func getConversation(mb mailbox, id uuid.UUID) (store.Conversation, error) {
	v := mb.convs.Get(idKey(id))
	if v == nil {
		return store.Conversation{}, notFound("conversation %s", id)
	}
	return decodeConversation(v)
}

// putConversation writes c, moving its activity index entry when
// LastActivity changed from before.
func putConversation(mb mailbox, c store.Conversation, before store.Conversation) error {
	if !c.LastActivity.Equal(before.LastActivity) {
		if err := mb.convActivity.Delete(orderKey(before.LastActivity, c.ID)); err != nil {
			return err
		}
		if err := mb.convActivity.Put(orderKey(c.LastActivity, c.ID), nil); err != nil {
			return err
		}
	}
	return mb.convs.Put(idKey(c.ID), encodeConversation(c))
}

func (s *Store) GetConversation(ctx context.Context, userID, id uuid.UUID) (store.Conversation, error) {
	var c store.Conversation
	err := s.view(ctx, "get conversation", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("conversation %s", id)
		}
		c, err = getConversation(mb, id)
		return err
	})
	return c, err
}

func (s *Store) GetConversationByKey(ctx context.Context, userID uuid.UUID, key string) (store.Conversation, error) {
	var c store.Conversation
	err := s.view(ctx, "get conversation by key", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		var v []byte
		if ok {
			v = mb.convKeys.Get(digest(key))
		}
		if v == nil {
			return notFound("conversation with key %q", key)
		}
		id, err := idFrom(v)
		if err != nil {
			return err
		}
		c, err = getConversation(mb, id)
		return err
	})
	return c, err
}

func (s *Store) UpdateConversation(ctx context.Context, c store.Conversation) error {
	if c.Key == "" {
		return s.wrap("update conversation", invalid("conversation %s: empty key", c.ID))
	}
	return s.update(ctx, "update conversation", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, c.UserID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("conversation %s", c.ID)
		}
		old, err := getConversation(mb, c.ID)
		if err != nil {
			return err
		}
		if c.Key != old.Key {
			if mb.convKeys.Get(digest(c.Key)) != nil {
				return exists("conversation key %q", c.Key)
			}
			if err := mb.convKeys.Delete(digest(old.Key)); err != nil {
				return err
			}
			if err := mb.convKeys.Put(digest(c.Key), idKey(c.ID)); err != nil {
				return err
			}
		}
		next := old
		next.Key, next.ContactIDs, next.Participants, next.Subject = c.Key, c.ContactIDs, c.Participants, c.Subject
		return mb.convs.Put(idKey(c.ID), encodeConversation(next))
	})
}

func (s *Store) ListConversations(ctx context.Context, userID uuid.UUID, p store.Page) ([]store.Conversation, string, error) {
	after, err := decodeCursor(p.Cursor)
	if err != nil {
		return nil, "", s.wrap("list conversations", err)
	}
	limit := p.ClampLimit()
	var (
		out  []store.Conversation
		next string
	)
	err = s.view(ctx, "list conversations", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if !ok || err != nil {
			return err
		}
		out = make([]store.Conversation, 0, limit)
		keys, more := page(mb.convActivity.Cursor(), nil, after, limit)
		for _, k := range keys {
			c, err := getConversation(mb, orderKeyID(k))
			if err != nil {
				return fmt.Errorf("activity index points to a missing conversation: %w", err)
			}
			out = append(out, c)
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

// page returns up to limit order keys (without prefix) under prefix, after
// the key after (exclusive; nil: from the start), and whether more follow.
// The keys alias bbolt memory: use them inside the transaction only.
func page(c *bolt.Cursor, prefix, after []byte, limit int) (keys [][]byte, more bool) {
	seek := append(bytes.Clone(prefix), after...)
	k, _ := c.Seek(seek)
	if after != nil && bytes.Equal(k, seek) {
		k, _ = c.Next() // the cursor's own item was on the previous page
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(keys) == limit {
			return keys, true
		}
		keys = append(keys, k[len(prefix):])
	}
	return keys, false
}

func (s *Store) DeleteConversation(ctx context.Context, userID, id uuid.UUID) error {
	return s.update(ctx, "delete conversation", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("conversation %s", id)
		}
		c, err := getConversation(mb, id)
		if err != nil {
			return err
		}
		var msgKeys [][]byte
		cur := mb.convMessages.Cursor()
		for k, _ := cur.Seek(id[:]); k != nil && bytes.HasPrefix(k, id[:]); k, _ = cur.Next() {
			msgKeys = append(msgKeys, bytes.Clone(k))
		}
		for _, k := range msgKeys {
			m, found, err := getMessageRecord(mb.messages, idKey(orderKeyID(k[len(id):])))
			if err != nil {
				return err
			}
			if found {
				if err := unindexMessage(mb, m); err != nil {
					return err
				}
				if err := messageGone(tx, m); err != nil {
					return err
				}
			} else if err := mb.convMessages.Delete(k); err != nil {
				return err
			}
		}
		if err := mb.convKeys.Delete(digest(c.Key)); err != nil {
			return err
		}
		if err := mb.convActivity.Delete(orderKey(c.LastActivity, c.ID)); err != nil {
			return err
		}
		return mb.convs.Delete(idKey(id))
	})
}
