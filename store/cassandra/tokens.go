package cassandra

import (
	"context"
	"fmt"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// Tokens: the API's session tokens, by hash and by user.

func (st *Store) PutToken(ctx context.Context, t store.Token) error {
	if t.Hash == "" || t.UserID == uuid.Nil {
		return fmt.Errorf("put token: %w: hash and user are required", store.ErrInvalid)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	// TTL in whole seconds, rounded up; GetToken also checks ExpiresAt, so the
	// row outliving the token by under a second is harmless.
	ttl := int(time.Until(t.ExpiresAt).Seconds()) + 1
	if t.ExpiresAt.IsZero() || ttl <= 0 {
		return fmt.Errorf("put token: %w: already expired", store.ErrInvalid)
	}
	b := st.s.Batch(gocql.LoggedBatch).WithContext(ctx)
	b.Query(`INSERT INTO tokens (hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?) USING TTL ?`,
		t.Hash, gu(t.UserID), tn(t.CreatedAt), tn(t.ExpiresAt), ttl)
	b.Query(`INSERT INTO tokens_by_user (user_id, hash) VALUES (?, ?) USING TTL ?`, gu(t.UserID), t.Hash, ttl)
	return wrap("put token", b.Exec())
}

func (st *Store) GetToken(ctx context.Context, hash string) (store.Token, error) {
	var (
		uid              gocql.UUID
		created, expires int64
	)
	if err := st.q(ctx, `SELECT user_id, created_at, expires_at FROM tokens WHERE hash = ?`, hash).
		Scan(&uid, &created, &expires); err != nil {
		return store.Token{}, wrap("get token", err)
	}
	t := store.Token{Hash: hash, UserID: ug(uid), CreatedAt: fromNanos(created), ExpiresAt: fromNanos(expires)}
	if !t.ExpiresAt.After(time.Now()) {
		return store.Token{}, fmt.Errorf("get token: expired: %w", store.ErrNotFound)
	}
	return t, nil
}

func (st *Store) DeleteToken(ctx context.Context, hash string) error {
	var uid gocql.UUID
	if err := st.q(ctx, `SELECT user_id FROM tokens WHERE hash = ?`, hash).Scan(&uid); err != nil {
		return wrap("delete token", err)
	}
	b := st.s.Batch(gocql.LoggedBatch).WithContext(ctx)
	b.Query(`DELETE FROM tokens WHERE hash = ?`, hash)
	b.Query(`DELETE FROM tokens_by_user WHERE user_id = ? AND hash = ?`, uid, hash)
	return wrap("delete token", b.Exec())
}

func (st *Store) DeleteUserTokens(ctx context.Context, userID uuid.UUID, except string) error {
	const op = "delete user tokens"
	iter := st.q(ctx, `SELECT hash FROM tokens_by_user WHERE user_id = ?`, gu(userID)).Iter()
	var h string
	var hashes []string
	for iter.Scan(&h) {
		if h != except {
			hashes = append(hashes, h)
		}
	}
	if err := iter.Close(); err != nil {
		return wrap(op, err)
	}
	for _, h := range hashes {
		b := st.s.Batch(gocql.LoggedBatch).WithContext(ctx)
		b.Query(`DELETE FROM tokens WHERE hash = ?`, h)
		b.Query(`DELETE FROM tokens_by_user WHERE user_id = ? AND hash = ?`, gu(userID), h)
		if err := b.Exec(); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}
