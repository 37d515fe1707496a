package embedded

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

// purgeBatch bounds how many expired tokens one PutToken removes, so the
// purge never makes a login slow.
const purgeBatch = 64

func (s *Store) PutToken(ctx context.Context, t store.Token) error {
	if t.Hash == "" || len(t.Hash) > maxNameLen || t.ExpiresAt.IsZero() {
		return s.wrap("put token", invalid("token needs a hash and an expiry"))
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	at := now()
	return s.update(ctx, "put token", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, t.UserID)
		if err != nil {
			return err
		}
		if !ok {
			return invalid("token for unknown user %s", t.UserID)
		}
		// Tokens expire by themselves, so nothing else removes them.
		if err := purgeTokens(tx, at); err != nil {
			return err
		}
		if tx.Bucket(bTokens).Get([]byte(t.Hash)) != nil {
			if err := deleteToken(tx, t.Hash); err != nil {
				return err
			}
		}
		if err := put(tx.Bucket(bTokens), []byte(t.Hash), t); err != nil {
			return err
		}
		if err := tx.Bucket(bTokenExpiry).Put(expiryKey(t.ExpiresAt, t.Hash), nil); err != nil {
			return err
		}
		return mb.tokens.Put([]byte(t.Hash), nil)
	})
}

func (s *Store) GetToken(ctx context.Context, hash string) (store.Token, error) {
	var t store.Token
	at := now()
	err := s.view(ctx, "get token", func(tx *bolt.Tx) error {
		ok, err := get(tx.Bucket(bTokens), []byte(hash), &t)
		if err != nil {
			return err
		}
		if !ok || !at.Before(t.ExpiresAt) {
			t = store.Token{}
			return notFound("token")
		}
		return nil
	})
	return t, err
}

func (s *Store) DeleteToken(ctx context.Context, hash string) error {
	return s.update(ctx, "delete token", func(tx *bolt.Tx) error {
		return deleteToken(tx, hash)
	})
}

func (s *Store) DeleteUserTokens(ctx context.Context, userID uuid.UUID, except string) error {
	return s.update(ctx, "delete user tokens", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if err != nil || !ok {
			return err
		}
		var hashes []string
		err = mb.tokens.ForEach(func(k, _ []byte) error {
			if string(k) != except {
				hashes = append(hashes, string(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, h := range hashes {
			err := deleteToken(tx, h)
			if errors.Is(err, store.ErrNotFound) {
				err = mb.tokens.Delete([]byte(h)) // a stray index entry: drop it
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// deleteToken removes a token and its index entries.
func deleteToken(tx *bolt.Tx, hash string) error {
	var t store.Token
	ok, err := get(tx.Bucket(bTokens), []byte(hash), &t)
	if err != nil {
		return err
	}
	if !ok {
		return notFound("token")
	}
	if err := tx.Bucket(bTokens).Delete([]byte(hash)); err != nil {
		return err
	}
	if err := tx.Bucket(bTokenExpiry).Delete(expiryKey(t.ExpiresAt, hash)); err != nil {
		return err
	}
	mb, ok, err := openMailbox(tx, t.UserID)
	if !ok || err != nil {
		return err
	}
	return mb.tokens.Delete([]byte(hash))
}

// purgeTokens deletes up to purgeBatch tokens expired before at.
func purgeTokens(tx *bolt.Tx, at time.Time) error {
	limit := expiryKey(at, "")
	var keys [][]byte
	expiry := tx.Bucket(bTokenExpiry)
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, limit) < 0 && len(keys) < purgeBatch; k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		err := deleteToken(tx, string(k[timeLen:]))
		if errors.Is(err, store.ErrNotFound) {
			err = expiry.Delete(k) // a stray index entry: drop it
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// expiryKey orders tokens by expiry, oldest first.
func expiryKey(t time.Time, hash string) []byte {
	k := make([]byte, timeLen, timeLen+len(hash))
	putTime(k, t)
	return append(k, hash...)
}
