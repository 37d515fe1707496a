package embedded

import (
	"bytes"
	"context"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

func keyCount(t *testing.T, db *bolt.DB) int {
	t.Helper()
	n := 0
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("b")).ForEach(func(_, _ []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSegmentedValues(t *testing.T) {
	db := openBolt(t)
	key := []byte("0123456789abcdef")
	next := []byte("0123456789abcdeg") // the following record: never touched
	long := make([]byte, 10*segmentSize+17)
	rand.Read(long)
	check := func(want []byte, keys int) {
		t.Helper()
		if err := db.View(func(tx *bolt.Tx) error {
			got, err := getSegmented(tx.Bucket([]byte("b")), key)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes, want %d", len(got), len(want))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n := keyCount(t, db); n != keys {
			t.Errorf("%d keys in the bucket, want %d", n, keys)
		}
	}
	update := func(fn func(b *bolt.Bucket) error) {
		t.Helper()
		if err := db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket([]byte("b"))) }); err != nil {
			t.Fatal(err)
		}
	}
	update(func(b *bolt.Bucket) error { return b.Put(next, []byte{1, 2}) })

	update(func(b *bolt.Bucket) error { return putSegmented(b, key, long) })
	check(long, 11+1) // a head and 10 segments, and next
	// Each segment is short enough for two to share a page.
	if err := db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("b")).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) > segmentSize {
				t.Errorf("key %x holds %d bytes", k, len(v))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Replacing a long value by a short one leaves no segment behind.
	short := []byte{1, 'x'}
	update(func(b *bolt.Bucket) error { return putSegmented(b, key, short) })
	check(short, 2)
	update(func(b *bolt.Bucket) error { return putSegmented(b, key, long[:3*segmentSize]) })
	check(long[:3*segmentSize], 1+4)
	update(func(b *bolt.Bucket) error { return deleteSegmented(b, key) })
	check(nil, 1)

	// A missing segment is an error, not a short value.
	update(func(b *bolt.Bucket) error { return putSegmented(b, key, long) })
	update(func(b *bolt.Bucket) error { return b.Delete(segmentKey(key, 5)) })
	if err := db.View(func(tx *bolt.Tx) error {
		_, err := getSegmented(tx.Bucket([]byte("b")), key)
		return err
	}); err == nil || !strings.Contains(err.Error(), "segment 5 missing") {
		t.Errorf("read with a segment missing: %v", err)
	}
}

// A message record stored whole, as files written before segmenting have
// them, still reads, and is segmented the next time it is written.
func TestWholeMessageRecordStillReads(t *testing.T) {
	ctx := context.Background()
	st, err := Open(filepath.Join(t.TempDir(), "c.db"), WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	user := store.User{ID: uuid.Must(uuid.NewV7()), Name: "alice"}
	if err := st.CreateUser(ctx, user); err != nil {
		t.Fatal(err)
	}
	conv, err := st.GetOrCreateConversation(ctx, store.Conversation{ID: uuid.Must(uuid.NewV7()), UserID: user.ID, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	m := store.Message{ID: uuid.Must(uuid.NewV7()), UserID: user.ID, ConversationID: conv.ID, DedupKey: "d",
		TextBody: strings.Repeat("long body ", 2000), Flags: store.Flags{Tags: []string{}}}
	if _, _, err := st.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	// Rewrite the record whole, the old way.
	if err := st.db.Update(func(tx *bolt.Tx) error {
		mb, _, err := openMailbox(tx, user.ID)
		if err != nil {
			return err
		}
		stored, _, err := getMessageRecord(mb.messages, idKey(m.ID))
		if err != nil {
			return err
		}
		if err := deleteSegmented(mb.messages, idKey(m.ID)); err != nil {
			return err
		}
		return mb.messages.Put(idKey(m.ID), encodeMessage(stored))
	}); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetMessage(ctx, user.ID, m.ID)
	if err != nil || got.TextBody != m.TextBody {
		t.Fatalf("whole record: %d bytes of body, %v", len(got.TextBody), err)
	}
	if err := st.SetFlags(ctx, user.ID, m.ID, store.Flags{Read: true, Tags: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	got, err = st.GetMessage(ctx, user.ID, m.ID)
	if err != nil || got.TextBody != m.TextBody || !got.Flags.Read {
		t.Fatalf("after rewrite: %d bytes of body, read %v, %v", len(got.TextBody), got.Flags.Read, err)
	}
	if err := st.db.View(func(tx *bolt.Tx) error {
		mb, _, err := openMailbox(tx, user.ID)
		if err != nil {
			return err
		}
		if v := mb.messages.Get(idKey(m.ID)); len(v) == 0 || v[0] != segmentedFormat {
			t.Error("the rewritten record is not segmented")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
