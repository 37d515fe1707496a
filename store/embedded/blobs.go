package embedded

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

// A blob is a meta entry under its hash (total size) followed by its chunks
// under hash ‖ uint32 index. Chunks are segmentSize long (segments.go: a
// long value rewrites its neighbours in bbolt); files written before that
// have chunks of up to store.BlobChunkSize, and read the same way.

func blobChunkKey(hash []byte, i int) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), hash...), uint32(i))
}

func (s *Store) PutBlob(ctx context.Context, data []byte) (string, error) {
	hash := store.BlobHash(data)
	key := []byte(hash)
	// A blob already stored (a redelivery, a message sent to users one by
	// one) costs a read, not a commit and its fsyncs.
	var there bool
	if err := s.view(ctx, "put blob", func(tx *bolt.Tx) error {
		there = tx.Bucket(bBlobs).Get(key) != nil
		return nil
	}); err != nil {
		return "", err
	}
	if there {
		return hash, nil
	}
	err := s.update(ctx, "put blob", func(tx *bolt.Tx) error {
		b := tx.Bucket(bBlobs)
		if b.Get(key) != nil {
			return nil // content-addressed: already there is the same bytes
		}
		b.FillPercent = 0.95 // a blob's chunks are one run of keys
		for i, off := 0, 0; off < len(data); i, off = i+1, off+segmentSize {
			if err := b.Put(blobChunkKey(key, i), data[off:min(off+segmentSize, len(data))]); err != nil {
				return err
			}
		}
		return b.Put(key, binary.BigEndian.AppendUint64(nil, uint64(len(data))))
	})
	if err != nil {
		return "", err
	}
	return hash, nil
}

func (s *Store) GetBlob(ctx context.Context, hash string) ([]byte, error) {
	h := strings.ToLower(hash)
	if _, err := hex.DecodeString(h); err != nil || len(h) != 64 {
		return nil, s.wrap("get blob", notFound("blob %q", hash))
	}
	var out []byte
	err := s.view(ctx, "get blob", func(tx *bolt.Tx) error {
		b := tx.Bucket(bBlobs)
		meta := b.Get([]byte(h))
		if meta == nil {
			return notFound("blob %s", h)
		}
		if len(meta) != 8 {
			return fmt.Errorf("blob %s: corrupt size entry", h)
		}
		size := binary.BigEndian.Uint64(meta)
		// Gather the chunks before allocating: a damaged size entry must
		// give an error, not a giant allocation.
		var chunks [][]byte
		for got := uint64(0); got < size; {
			chunk := b.Get(blobChunkKey([]byte(h), len(chunks)))
			if len(chunk) == 0 {
				return fmt.Errorf("blob %s: chunk %d missing", h, len(chunks))
			}
			chunks = append(chunks, chunk)
			got += uint64(len(chunk))
		}
		out = make([]byte, 0, size)
		for _, c := range chunks {
			out = append(out, c...) // copies out of the mapped file
		}
		if uint64(len(out)) != size {
			return fmt.Errorf("blob %s: %d bytes stored, %d expected", h, len(out), size)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
