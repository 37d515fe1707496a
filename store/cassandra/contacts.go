package cassandra

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// channelKey is a contact channel in its canonical form: email addresses are
// case-insensitive, other protocols keep their case.
type channelKey struct{ protocol, address string }

func normChannel(protocol, address string) channelKey {
	p := strings.ToLower(strings.TrimSpace(protocol))
	a := strings.TrimSpace(address)
	if p == "email" {
		a = strings.ToLower(a)
	}
	return channelKey{p, a}
}

func (st *Store) PutContact(ctx context.Context, c store.Contact) error {
	if c.ID == uuid.Nil || c.UserID == uuid.Nil {
		return fmt.Errorf("put contact: %w: ID and UserID are required", store.ErrInvalid)
	}
	op := "put contact " + c.ID.String()
	c.Channels = append([]store.Channel(nil), c.Channels...) // normalised below; the caller's slice stays as is
	want := map[channelKey]bool{}
	for i, ch := range c.Channels {
		k := normChannel(ch.Protocol, ch.Address)
		if k.protocol == "" || k.address == "" {
			return fmt.Errorf("%s: %w: channel %d has no protocol or address", op, store.ErrInvalid, i)
		}
		c.Channels[i].Protocol, c.Channels[i].Address = k.protocol, k.address
		want[k] = true
	}
	old, err := st.GetContact(ctx, c.UserID, c.ID)
	switch {
	case err == nil:
		if c.CreatedAt.IsZero() {
			c.CreatedAt = old.CreatedAt
		}
	case isNotFound(err):
	default:
		return err
	}
	now := time.Now()
	if c.CreatedAt.IsZero() {
		c.CreatedAt = now
	}
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = now
	}

	// Claim the new channels; on a collision give back what this call claimed.
	had := map[channelKey]bool{}
	for _, ch := range old.Channels {
		had[normChannel(ch.Protocol, ch.Address)] = true
	}
	var claimed []channelKey
	release := func() {
		for _, k := range claimed {
			st.releaseChannel(context.WithoutCancel(ctx), c.UserID, c.ID, k)
		}
	}
	for k := range want {
		if had[k] {
			continue
		}
		ok, prev, err := casScan(st.q(ctx,
			`INSERT INTO contact_channels (user_id, protocol, address, contact_id) VALUES (?, ?, ?, ?) IF NOT EXISTS`,
			gu(c.UserID), k.protocol, k.address, gu(c.ID)))
		if err != nil {
			release()
			return wrap(op, err)
		}
		if !ok && prevUUID(prev, "contact_id") != c.ID {
			release()
			return fmt.Errorf("%s: %w: channel %s:%s belongs to contact %s", op, store.ErrExists, k.protocol, k.address, prevUUID(prev, "contact_id"))
		}
		if ok {
			claimed = append(claimed, k)
		}
	}

	channels, err := json.Marshal(c.Channels)
	if err != nil {
		release()
		return fmt.Errorf("%s: encode channels: %w", op, err)
	}
	keys, err := json.Marshal(c.Keys)
	if err != nil {
		release()
		return fmt.Errorf("%s: encode keys: %w", op, err)
	}
	if err := st.q(ctx, `INSERT INTO contacts (user_id, id, name, channels, public_keys, created_at, updated_at, history) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		gu(c.UserID), gu(c.ID), c.Name, channels, keys, tn(c.CreatedAt), tn(c.UpdatedAt), []byte(c.History)).Exec(); err != nil {
		release()
		return wrap(op, err)
	}
	for k := range had {
		if !want[k] {
			st.releaseChannel(ctx, c.UserID, c.ID, k)
		}
	}
	return nil
}

// releaseChannel frees a channel if it still belongs to the contact. A
// failure leaves a claim pointing at a contact without that channel:
// FindContactByChannel checks and ignores it, PutContact of another contact
// then reports ErrExists until retried; logged for the operator.
func (st *Store) releaseChannel(ctx context.Context, userID, contactID uuid.UUID, k channelKey) {
	_, _, err := casScan(st.q(ctx, `DELETE FROM contact_channels WHERE user_id = ? AND protocol = ? AND address = ? IF contact_id = ?`,
		gu(userID), k.protocol, k.address, gu(contactID)))
	if err != nil {
		st.log.WarnContext(ctx, "cassandra: releasing contact channel failed", "user", userID, "contact", contactID,
			"protocol", k.protocol, "err", err)
	}
}

const contactCols = `user_id, id, name, channels, public_keys, created_at, updated_at, history`

func scanContact(sc interface{ Scan(...any) error }) (store.Contact, error) {
	var (
		c                gocql.UUID
		id               gocql.UUID
		out              store.Contact
		channels, keys   []byte
		history          []byte
		created, updated int64
	)
	if err := sc.Scan(&c, &id, &out.Name, &channels, &keys, &created, &updated, &history); err != nil {
		return out, err
	}
	out.UserID, out.ID = ug(c), ug(id)
	out.CreatedAt, out.UpdatedAt = fromNanos(created), fromNanos(updated)
	if len(history) > 0 {
		out.History = history
	}
	if len(channels) > 0 {
		if err := json.Unmarshal(channels, &out.Channels); err != nil {
			return out, fmt.Errorf("decode channels of contact %s: %w", out.ID, err)
		}
	}
	if len(keys) > 0 {
		if err := json.Unmarshal(keys, &out.Keys); err != nil {
			return out, fmt.Errorf("decode keys of contact %s: %w", out.ID, err)
		}
	}
	return out, nil
}

func (st *Store) GetContact(ctx context.Context, userID, id uuid.UUID) (store.Contact, error) {
	c, err := scanContact(st.q(ctx, `SELECT `+contactCols+` FROM contacts WHERE user_id = ? AND id = ?`, gu(userID), gu(id)))
	if err == nil && partialContact(c) {
		return store.Contact{}, fmt.Errorf("get contact %s: %w", id, store.ErrNotFound)
	}
	return c, wrap("get contact "+id.String(), err)
}

// partialContact: a row without created_at, which PutContact always
// writes, holds only what a SetContactHistory racing a DeleteContact left.
func partialContact(c store.Contact) bool { return c.CreatedAt.IsZero() }

// SetContactHistory writes the history column alone, so that the other
// columns keep what a concurrent PutContact wrote. Not conditional, to keep
// Paxos off the delivery path: a delete between the check and the UPDATE
// leaves a partial row, which reads treat as absent (partialContact).
func (st *Store) SetContactHistory(ctx context.Context, userID, id uuid.UUID, history json.RawMessage) error {
	if _, err := st.GetContact(ctx, userID, id); err != nil {
		return err
	}
	return wrap("set contact history "+id.String(), st.q(ctx, `UPDATE contacts SET history = ? WHERE user_id = ? AND id = ?`,
		[]byte(history), gu(userID), gu(id)).Exec())
}

func (st *Store) ListContacts(ctx context.Context, userID uuid.UUID) ([]store.Contact, error) {
	iter := st.q(ctx, `SELECT `+contactCols+` FROM contacts WHERE user_id = ?`, gu(userID)).Iter()
	sc := iter.Scanner()
	var out []store.Contact
	for sc.Next() {
		c, err := scanContact(sc)
		if err != nil {
			_ = iter.Close()
			return nil, wrap("list contacts", err)
		}
		if !partialContact(c) {
			out = append(out, c)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, wrap("list contacts", err)
	}
	return out, nil
}

func (st *Store) FindContactByChannel(ctx context.Context, userID uuid.UUID, protocol, address string) (store.Contact, error) {
	k := normChannel(protocol, address)
	var cid gocql.UUID
	if err := st.q(ctx, `SELECT contact_id FROM contact_channels WHERE user_id = ? AND protocol = ? AND address = ?`,
		gu(userID), k.protocol, k.address).Scan(&cid); err != nil {
		return store.Contact{}, wrap("find contact", err)
	}
	c, err := st.GetContact(ctx, userID, ug(cid))
	if err != nil {
		return store.Contact{}, err
	}
	// Guard against a claim left behind by a failed release.
	for _, ch := range c.Channels {
		if normChannel(ch.Protocol, ch.Address) == k {
			return c, nil
		}
	}
	return store.Contact{}, fmt.Errorf("find contact: %w", store.ErrNotFound)
}

func (st *Store) DeleteContact(ctx context.Context, userID, id uuid.UUID) error {
	c, err := st.GetContact(ctx, userID, id)
	if err != nil {
		return err
	}
	if err := st.q(ctx, `DELETE FROM contacts WHERE user_id = ? AND id = ?`, gu(userID), gu(id)).Exec(); err != nil {
		return wrap("delete contact "+id.String(), err)
	}
	for _, ch := range c.Channels {
		st.releaseChannel(ctx, userID, id, normChannel(ch.Protocol, ch.Address))
	}
	return nil
}

// deleteUserContacts frees the channel claims of every contact of the user;
// DeleteUser then drops the contacts partition.
func (st *Store) deleteUserContacts(ctx context.Context, userID uuid.UUID) error {
	cs, err := st.ListContacts(ctx, userID)
	if err != nil {
		return err
	}
	for _, c := range cs {
		for _, ch := range c.Channels {
			k := normChannel(ch.Protocol, ch.Address)
			if err := st.q(ctx, `DELETE FROM contact_channels WHERE user_id = ? AND protocol = ? AND address = ?`,
				gu(userID), k.protocol, k.address).Exec(); err != nil {
				return wrap("delete user contacts", err)
			}
		}
	}
	return nil
}
