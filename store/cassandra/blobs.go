package cassandra

import (
	"context"
	"errors"
	"fmt"
	"strings"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// Blobs: content-addressed raw messages, chunked.

func (st *Store) PutBlob(ctx context.Context, data []byte) (string, error) {
	hash := store.BlobHash(data)
	var size int64
	err := st.q(ctx, `SELECT size FROM blob_meta WHERE hash = ?`, hash).Scan(&size)
	if err == nil {
		return hash, nil // content-addressed: already there means identical
	}
	if err = wrap("put blob", err); !isNotFound(err) {
		return "", err
	}
	// At least one chunk, so the empty blob reads back like any other.
	chunks := max(1, (len(data)+store.BlobChunkSize-1)/store.BlobChunkSize)
	if _, err := parallel(ctx, chunks, func(ctx context.Context, i int) (struct{}, bool, error) {
		off := i * store.BlobChunkSize
		end := min(off+store.BlobChunkSize, len(data))
		err := st.q(ctx, `INSERT INTO blob_chunks (hash, chunk, data) VALUES (?, ?, ?)`, hash, i, data[off:end]).Idempotent(true).Exec()
		return struct{}{}, false, err
	}); err != nil {
		return "", wrap("put blob", err)
	}
	// Written last: a blob is visible only once all its chunks are.
	if err := st.q(ctx, `INSERT INTO blob_meta (hash, size, chunks) VALUES (?, ?, ?)`,
		hash, int64(len(data)), chunks).Idempotent(true).Exec(); err != nil {
		return "", wrap("put blob", err)
	}
	return hash, nil
}

func (st *Store) GetBlob(ctx context.Context, hash string) ([]byte, error) {
	hash = strings.ToLower(hash)
	var (
		size   int64
		chunks int
	)
	if err := st.q(ctx, `SELECT size, chunks FROM blob_meta WHERE hash = ?`, hash).Scan(&size, &chunks); err != nil {
		return nil, wrap("get blob "+hash, err)
	}
	parts, err := parallel(ctx, chunks, func(ctx context.Context, i int) ([]byte, bool, error) {
		var part []byte
		err := st.q(ctx, `SELECT data FROM blob_chunks WHERE hash = ? AND chunk = ?`, hash, i).Idempotent(true).Scan(&part)
		if err != nil {
			return nil, false, fmt.Errorf("chunk %d: %w", i, err)
		}
		return part, true, nil
	})
	if err != nil {
		return nil, wrap("get blob "+hash, err)
	}
	out := make([]byte, 0, size)
	for _, p := range parts {
		out = append(out, *p...)
	}
	if int64(len(out)) != size || store.BlobHash(out) != hash {
		return nil, fmt.Errorf("get blob %s: stored bytes do not match their hash", hash)
	}
	return out, nil
}

// A blob lives as long as a message uses it: blob_refs counts the messages,
// of every user, whose RawHash it is, and user_usage each user's bytes. Both
// are counters changed only by the winner of a message's dedup claim and of
// its delete, as conversation_counters are.

// messageStored takes m's blob reference and counts its bytes.
func (st *Store) messageStored(ctx context.Context, m store.Message) error {
	if err := st.q(ctx, `UPDATE user_usage SET bytes = bytes + ? WHERE user_id = ?`, m.RawSize, gu(m.UserID)).Exec(); err != nil {
		return err
	}
	if m.RawHash == "" {
		return nil
	}
	return st.q(ctx, `UPDATE blob_refs SET refs = refs + 1 WHERE hash = ?`, m.RawHash).Exec()
}

// messageUnstored gives back what messageStored took for a message that was
// not stored after all (it lost the dedup race); the winner holds its own
// reference, so the blob stays.
func (st *Store) messageUnstored(ctx context.Context, m store.Message) error {
	if err := st.q(ctx, `UPDATE user_usage SET bytes = bytes - ? WHERE user_id = ?`, m.RawSize, gu(m.UserID)).Exec(); err != nil {
		return err
	}
	if m.RawHash == "" {
		return nil
	}
	return st.q(ctx, `UPDATE blob_refs SET refs = refs - 1 WHERE hash = ?`, m.RawHash).Exec()
}

// messageGone gives back what messageStored took; the last reference
// deletes the blob.
func (st *Store) messageGone(ctx context.Context, m store.Message) error {
	if err := st.q(ctx, `UPDATE user_usage SET bytes = bytes - ? WHERE user_id = ?`, m.RawSize, gu(m.UserID)).Exec(); err != nil {
		return err
	}
	if m.RawHash == "" {
		return nil
	}
	if err := st.q(ctx, `UPDATE blob_refs SET refs = refs - 1 WHERE hash = ?`, m.RawHash).Exec(); err != nil {
		return err
	}
	if refs, err := st.blobRefs(ctx, m.RawHash); err != nil || refs > 0 {
		return err
	}
	return st.deleteBlob(ctx, m.RawHash)
}

func (st *Store) blobRefs(ctx context.Context, hash string) (int64, error) {
	var refs int64
	err := st.q(ctx, `SELECT refs FROM blob_refs WHERE hash = ?`, hash).Scan(&refs)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, nil
	}
	return refs, err
}

// deleteBlob deletes an unreferenced blob. Its size row goes first, which
// makes it invisible, then the count is read again: a message stored
// meanwhile (a redelivery of the same bytes, whose PutBlob found the blob
// still there) has taken a reference, and the size row is written back over
// the chunks, which are still whole. Otherwise the chunks go.
func (st *Store) deleteBlob(ctx context.Context, hash string) error {
	var (
		size   int64
		chunks int
	)
	err := st.q(ctx, `SELECT size, chunks FROM blob_meta WHERE hash = ?`, hash).Scan(&size, &chunks)
	if errors.Is(err, gocql.ErrNotFound) {
		return nil // never stored, or deleted by a racing delete
	}
	if err != nil {
		return err
	}
	if err := st.q(ctx, `DELETE FROM blob_meta WHERE hash = ?`, hash).Exec(); err != nil {
		return err
	}
	refs, err := st.blobRefs(ctx, hash)
	if err != nil {
		return err
	}
	if refs > 0 {
		return st.q(ctx, `INSERT INTO blob_meta (hash, size, chunks) VALUES (?, ?, ?)`, hash, size, chunks).Exec()
	}
	_, err = parallel(ctx, chunks, func(ctx context.Context, i int) (struct{}, bool, error) {
		return struct{}{}, false, st.q(ctx, `DELETE FROM blob_chunks WHERE hash = ? AND chunk = ?`, hash, i).Exec()
	})
	return err
}

// Usage returns the bytes of the user's messages.
func (st *Store) Usage(ctx context.Context, userID uuid.UUID) (int64, error) {
	var n int64
	err := st.q(ctx, `SELECT bytes FROM user_usage WHERE user_id = ?`, gu(userID)).Scan(&n)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, nil
	}
	return max(n, 0), wrap("usage", err)
}
