package embedded

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/uuid"
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

// A blob lives as long as a message uses it: bBlobRefs counts the messages,
// of every user, whose RawHash it is. Storing a message takes a reference;
// deleting it (alone, with its conversation or with its user) gives it back,
// and the last one deletes the blob. bUsage keeps each user's bytes (the sum
// of their messages' RawSize) for the quota, in the same transactions.

// messageStored takes m's blob reference and counts its bytes.
func messageStored(tx *bolt.Tx, m store.Message) error {
	if m.RawHash != "" {
		if err := addCount(tx.Bucket(bBlobRefs), []byte(m.RawHash), 1); err != nil {
			return err
		}
	}
	return addCount(tx.Bucket(bUsage), idKey(m.UserID), m.RawSize)
}

// messageGone gives back what messageStored took, deleting the blob with its
// last reference.
func messageGone(tx *bolt.Tx, m store.Message) error {
	if err := addCount(tx.Bucket(bUsage), idKey(m.UserID), -m.RawSize); err != nil {
		return err
	}
	if m.RawHash == "" {
		return nil
	}
	refs := tx.Bucket(bBlobRefs)
	if err := addCount(refs, []byte(m.RawHash), -1); err != nil {
		return err
	}
	if refs.Get([]byte(m.RawHash)) != nil {
		return nil
	}
	return deleteBlob(tx.Bucket(bBlobs), []byte(m.RawHash))
}

// deleteBlob deletes the blob's size entry and its chunks.
func deleteBlob(b *bolt.Bucket, hash []byte) error {
	if b.Get(hash) == nil {
		return nil // never stored (or a test's made-up hash)
	}
	for i := 0; ; i++ {
		k := blobChunkKey(hash, i)
		if b.Get(k) == nil {
			break
		}
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return b.Delete(hash)
}

// addCount adds delta to the uint64 under key; a count that reaches zero
// (or would go below) is deleted.
func addCount(b *bolt.Bucket, key []byte, delta int64) error {
	if delta == 0 {
		return nil
	}
	var n int64
	if v := b.Get(key); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n += delta
	if n <= 0 {
		return b.Delete(key)
	}
	return b.Put(key, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// getCount reads a count kept by addCount.
func getCount(b *bolt.Bucket, key []byte) int64 {
	if v := b.Get(key); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// countRefs fills bBlobRefs and bUsage from the stored messages: files
// written before schema 2 kept neither.
func countRefs(tx *bolt.Tx) error {
	users := tx.Bucket(bMailboxes)
	return users.ForEach(func(uid, _ []byte) error {
		ub := users.Bucket(uid)
		if ub == nil {
			return nil
		}
		msgs := ub.Bucket(mbMessages)
		if msgs == nil {
			return errNoSuchBucket
		}
		return msgs.ForEach(func(k, _ []byte) error {
			if len(k) != len(uuid.UUID{}) {
				return nil // a segment of a long value (segments.go)
			}
			m, found, err := getMessageRecord(msgs, k)
			if err != nil || !found {
				return err
			}
			return messageStored(tx, m)
		})
	})
}

func (s *Store) Usage(ctx context.Context, userID uuid.UUID) (int64, error) {
	var n int64
	err := s.view(ctx, "usage", func(tx *bolt.Tx) error {
		n = getCount(tx.Bucket(bUsage), idKey(userID))
		return nil
	})
	return n, err
}
