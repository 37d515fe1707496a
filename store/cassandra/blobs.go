package cassandra

import (
	"context"
	"fmt"
	"strings"

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
