package storetest

import (
	"testing"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// testBlobReferences: a blob shared by the recipients of one message lives
// as long as one of their messages does, however the messages go (one by
// one, with their conversation, with their user), and a redelivery that
// dedup answers takes no second reference. Usage follows the same events.
func testBlobReferences(t *testing.T, s store.Store) {
	ctx := t.Context()
	put := func(data []byte, users ...uuid.UUID) (string, []store.Message) {
		t.Helper()
		hash, err := s.PutBlob(ctx, data)
		mustNil(t, err, "PutBlob")
		var msgs []store.Message
		for _, u := range users {
			m := newMessage(u, newConversation(t, s, u, base()).ID, base())
			m.RawHash, m.RawSize = hash, int64(len(data))
			msgs = append(msgs, putMessage(t, s, m))
		}
		return hash, msgs
	}
	present := func(hash, when string) {
		t.Helper()
		if _, err := s.GetBlob(ctx, hash); err != nil {
			t.Fatalf("%s: GetBlob: %v, want the blob still there", when, err)
		}
	}
	gone := func(hash, when string) {
		t.Helper()
		_, err := s.GetBlob(ctx, hash)
		wantErr(t, err, store.ErrNotFound, when+": GetBlob")
	}

	usage := func(u uuid.UUID, want int64, when string) {
		t.Helper()
		got, err := s.Usage(ctx, u)
		mustNil(t, err, "Usage")
		if got != want {
			t.Errorf("%s: Usage = %d, want %d", when, got, want)
		}
	}

	a, b, c := newUser(t, s), newUser(t, s), newUser(t, s)
	usage(a.ID, 0, "new user")
	hash, msgs := put(randBytes(store.BlobChunkSize+1), a.ID, b.ID, c.ID)
	size := int64(store.BlobChunkSize + 1)
	usage(a.ID, size, "after one message")
	// A redelivery to a answered by dedup must not hold the blob alive.
	again := msgs[0]
	again.ID = uuid.Nil
	if _, created, err := s.PutMessage(ctx, again); err != nil || created {
		t.Fatalf("redelivery: created=%v err=%v, want the stored message", created, err)
	}
	usage(a.ID, size, "after a redelivery")
	mustNil(t, s.DeleteMessage(ctx, a.ID, msgs[0].ID), "DeleteMessage a")
	present(hash, "after a's message is deleted")
	usage(a.ID, 0, "after the delete")
	usage(b.ID, size, "b, after a's delete")
	mustNil(t, s.DeleteConversation(ctx, b.ID, msgs[1].ConversationID), "DeleteConversation b")
	present(hash, "after b's conversation is deleted")
	usage(b.ID, 0, "after the conversation's delete")
	mustNil(t, s.DeleteUser(ctx, c.ID), "DeleteUser c")
	gone(hash, "after the last message's user is deleted")

	// Deleting the last message itself deletes the blob too, and a blob
	// stored again afterwards is whole.
	data := []byte("raw " + randHex(16))
	hash, msgs = put(data, a.ID)
	mustNil(t, s.DeleteMessage(ctx, a.ID, msgs[0].ID), "DeleteMessage")
	gone(hash, "after its only message is deleted")
	hash, _ = put(data, a.ID)
	got, err := s.GetBlob(ctx, hash)
	if err != nil || string(got) != string(data) {
		t.Fatalf("blob stored again: %q, %v", got, err)
	}
	usage(a.ID, int64(len(data)), "after a new message")

	// The quota is the user's own setting, kept by UpdateUser.
	a.Quota = 5 << 20
	mustNil(t, s.UpdateUser(ctx, a), "UpdateUser quota")
	u, err := s.GetUser(ctx, a.ID)
	mustNil(t, err, "GetUser")
	if u.Quota != a.Quota || u.Setup.PrivateKey != a.Setup.PrivateKey {
		t.Errorf("GetUser after a quota change: quota %d, want %d (set-up kept: %v)", u.Quota, a.Quota, u.Setup.PrivateKey == a.Setup.PrivateKey)
	}
}
