package embedded

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "caliopen.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bMeta).Put(keySchema, []byte{schemaVersion + 1})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a file with a newer schema succeeded")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open: %v; want it to say the file is newer", err)
	}
}

// TestSchema2CountsExistingMessages: a file written before blob references
// and usage were kept gets both from its messages when opened, so deleting
// an old message frees its blob and gives back its bytes.
func TestSchema2CountsExistingMessages(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "caliopen.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	u := store.User{ID: uuid.Must(uuid.NewV7()), Name: "alice", CreatedAt: time.Now()}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	conv, err := s.GetOrCreateConversation(ctx, store.Conversation{UserID: u.ID, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte("Subject: old\r\n\r\nold message")
	hash, err := s.PutBlob(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := s.PutMessage(ctx, store.Message{UserID: u.ID, ConversationID: conv.ID, DedupKey: "d",
		TextBody: strings.Repeat("long body ", 1000), RawHash: hash, RawSize: int64(len(raw))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it a schema 1 file: no counts.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bBlobRefs, bUsage} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bMeta).Put(keySchema, []byte{1})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.Usage(ctx, u.ID); err != nil || n != int64(len(raw)) {
		t.Fatalf("usage after migration: %d, %v; want %d", n, err, len(raw))
	}
	if err := s.DeleteMessage(ctx, u.ID, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBlob(ctx, hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old message's blob after its delete: %v, want ErrNotFound", err)
	}
}
