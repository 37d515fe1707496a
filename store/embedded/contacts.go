package embedded

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

// normalizeChannel is the form channels are stored and looked up in: the
// model keeps email addresses lowercased; other protocols stay as given.
func normalizeChannel(c store.Channel) store.Channel {
	c.Protocol = strings.ToLower(strings.TrimSpace(c.Protocol))
	c.Address = strings.TrimSpace(c.Address)
	if c.Protocol == "email" {
		c.Address = strings.ToLower(c.Address)
	}
	return c
}

func channelKey(c store.Channel) []byte { return digest(c.Protocol, c.Address) }

func (s *Store) PutContact(ctx context.Context, c store.Contact) error {
	if c.ID == uuid.Nil || c.UserID == uuid.Nil {
		return s.wrap("put contact", invalid("contact needs an ID and a user ID"))
	}
	channels := make([]store.Channel, 0, len(c.Channels))
	seen := make(map[string]bool, len(c.Channels))
	for _, ch := range c.Channels {
		ch = normalizeChannel(ch)
		if ch.Protocol == "" || ch.Address == "" {
			return s.wrap("put contact", invalid("contact %s: channel needs a protocol and an address", c.ID))
		}
		if k := string(channelKey(ch)); !seen[k] {
			seen[k] = true
			channels = append(channels, ch)
		}
	}
	c.Channels = channels
	at := now()
	return s.update(ctx, "put contact", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, c.UserID)
		if err != nil {
			return err
		}
		if !ok {
			return notFound("user %s", c.UserID)
		}
		for _, ch := range c.Channels {
			if owner := mb.channels.Get(channelKey(ch)); owner != nil && string(owner) != string(c.ID[:]) {
				return exists("channel %s:%s belongs to another contact", ch.Protocol, ch.Address)
			}
		}
		next := c
		var old store.Contact
		found, err := get(mb.contacts, idKey(c.ID), &old)
		if err != nil {
			return err
		}
		if found {
			for _, ch := range old.Channels {
				if k := channelKey(ch); !seen[string(k)] {
					if err := mb.channels.Delete(k); err != nil {
						return err
					}
				}
			}
			if next.CreatedAt.IsZero() {
				next.CreatedAt = old.CreatedAt
			}
		}
		if next.CreatedAt.IsZero() {
			next.CreatedAt = at
		}
		if next.UpdatedAt.IsZero() {
			next.UpdatedAt = at
		}
		for _, ch := range next.Channels {
			if err := mb.channels.Put(channelKey(ch), idKey(c.ID)); err != nil {
				return err
			}
		}
		return put(mb.contacts, idKey(c.ID), next)
	})
}

func getContact(mb mailbox, id uuid.UUID) (store.Contact, error) {
	var c store.Contact
	ok, err := get(mb.contacts, idKey(id), &c)
	if err == nil && !ok {
		err = notFound("contact %s", id)
	}
	return c, err
}

// userContact reads the user's contact id; ErrNotFound for an unknown user
// or contact.
func userContact(tx *bolt.Tx, userID, id uuid.UUID) (mailbox, store.Contact, error) {
	mb, ok, err := openMailbox(tx, userID)
	if err != nil {
		return mb, store.Contact{}, err
	}
	if !ok {
		return mb, store.Contact{}, notFound("contact %s", id)
	}
	c, err := getContact(mb, id)
	return mb, c, err
}

func (s *Store) GetContact(ctx context.Context, userID, id uuid.UUID) (store.Contact, error) {
	var c store.Contact
	err := s.view(ctx, "get contact", func(tx *bolt.Tx) (err error) {
		_, c, err = userContact(tx, userID, id)
		return err
	})
	return c, err
}

func (s *Store) ListContacts(ctx context.Context, userID uuid.UUID) ([]store.Contact, error) {
	var out []store.Contact
	err := s.view(ctx, "list contacts", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if !ok || err != nil {
			return err
		}
		return mb.contacts.ForEach(func(_, v []byte) error {
			var c store.Contact
			if err := decode(v, &c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

func (s *Store) FindContactByChannel(ctx context.Context, userID uuid.UUID, protocol, address string) (store.Contact, error) {
	ch := normalizeChannel(store.Channel{Protocol: protocol, Address: address})
	var c store.Contact
	err := s.view(ctx, "find contact by channel", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil {
			return err
		}
		var v []byte
		if ok {
			v = mb.channels.Get(channelKey(ch))
		}
		if v == nil {
			return notFound("contact with channel %s:%s", ch.Protocol, ch.Address)
		}
		id, err := idFrom(v)
		if err != nil {
			return err
		}
		c, err = getContact(mb, id)
		return err
	})
	return c, err
}

func (s *Store) DeleteContact(ctx context.Context, userID, id uuid.UUID) error {
	return s.update(ctx, "delete contact", func(tx *bolt.Tx) error {
		mb, c, err := userContact(tx, userID, id)
		if err != nil {
			return err
		}
		for _, ch := range c.Channels {
			if err := mb.channels.Delete(channelKey(ch)); err != nil {
				return err
			}
		}
		return mb.contacts.Delete(idKey(id))
	})
}

func (s *Store) SetContactHistory(ctx context.Context, userID, id uuid.UUID, history json.RawMessage) error {
	// One write transaction: the record read is the one written back, so a
	// PutContact or DeleteContact is either wholly before or wholly after.
	return s.update(ctx, "set contact history", func(tx *bolt.Tx) error {
		mb, c, err := userContact(tx, userID, id)
		if err != nil {
			return err
		}
		c.History = history
		return put(mb.contacts, idKey(id), c)
	})
}
