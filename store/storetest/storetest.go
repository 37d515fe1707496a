// Package storetest is the conformance suite every store engine must pass,
// plus the benchmarks that compare engines. Engines call it from their own
// _test.go files:
//
//	func TestConformance(t *testing.T) { storetest.Run(t, openForTest) }
//	func TestUnavailable(t *testing.T) { storetest.RunUnavailable(t, openClosed) }
//	func BenchmarkStore(b *testing.B)  { storetest.Bench(b, openForBench) }
//
// The suite never assumes an empty store: the Cassandra keyspace is shared by
// tests and runs, so every test works on fresh random users, names and
// domains, and list checks assert "contains" unless the list is scoped to
// something the test just created.
//
// Semantics the suite pins down beyond the comments in package store:
//   - Domain names and addresses are normalised (store.NormalizeDomain,
//     store.NormalizeAddress) on write and on lookup.
//   - CreateUser needs a non-nil ID and a name (else ErrInvalid); UpdateUser
//     with a different Name is ErrInvalid and keeps CreatedAt. PasswordHash
//     and Setup.PrivateKey are stored even though JSON hides them.
//   - AddAddress and PutAlias on an unknown domain are ErrInvalid.
//   - GetOrCreateConversation assigns a UUIDv7 when c.ID is nil and keeps
//     c.CreatedAt when set; a new conversation's LastActivity is its
//     CreatedAt and its counters start at zero, whatever the caller passed.
//   - PutMessage needs a DedupKey (else ErrInvalid), assigns a UUIDv7 when
//     m.ID is nil and ReceivedAt = now when zero; a conversation the user does
//     not own is ErrNotFound. LastActivity only moves forward; LastMessageID
//     and Excerpt follow the newest message.
//   - ListMessages on a conversation the user does not own is ErrNotFound.
//   - Message.DedupKey is returned by reads like every other field.
//   - A page shorter than its limit has next == "".
//   - Times the suite writes are whole milliseconds (Cassandra's precision);
//     engines return them equal (time.Time.Equal) to what was written.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// Run runs the conformance suite against the store open returns. open is
// called once; it must return a ready store and arrange for its Close (for
// example with t.Cleanup). Subtests run in parallel on that one store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	s := open(t)
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"Domains", testDomains},
		{"RemoveDomainInUse", testRemoveDomainInUse},
		{"Users", testUsers},
		{"Addresses", testAddresses},
		{"Aliases", testAliases},
		{"Contacts", testContacts},
		{"ContactChannelIndex", testContactChannelIndex},
		{"SetContactHistory", testSetContactHistory},
		{"Conversations", testConversations},
		{"ConversationOrder", testConversationOrder},
		{"ConversationPagination", testConversationPagination},
		{"ConversationSummary", testConversationSummary},
		{"GetOrCreateConversationConcurrent", testGetOrCreateConcurrent},
		{"Messages", testMessages},
		{"MessagePagination", testMessagePagination},
		{"PutMessageIdempotent", testPutMessageIdempotent},
		{"PutMessageConcurrent", testPutMessageConcurrent},
		{"DeleteConversation", testDeleteConversation},
		{"Isolation", testIsolation},
		{"Blobs", testBlobs},
		{"BlobReferences", testBlobReferences},
		{"Tokens", testTokens},
		{"DeleteUserTokens", testDeleteUserTokens},
		{"DeleteUser", testDeleteUser},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, s)
		})
	}
}

// ---- helpers shared by the tests and the benchmarks ----

// randHex returns n random bytes in hex: names that no earlier run used.
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func newV7() uuid.UUID { return uuid.Must(uuid.NewV7()) }

// ms is t at Cassandra's precision, in UTC.
func ms(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// base is a fixed, millisecond-exact instant the tests offset from.
func base() time.Time { return ms(time.Now()) }

func mustNil(tb testing.TB, err error, what string) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

func wantErr(tb testing.TB, err, want error, what string) {
	tb.Helper()
	if !errors.Is(err, want) {
		tb.Errorf("%s: got error %v, want one wrapping %q", what, err, want)
	}
}

func newDomain(tb testing.TB, s store.Store) string {
	tb.Helper()
	name := "d" + randHex(6) + ".test"
	mustNil(tb, s.AddDomain(tb.Context(), store.Domain{Name: name, CreatedAt: base()}), "AddDomain "+name)
	return name
}

func newUser(tb testing.TB, s store.Store) store.User {
	tb.Helper()
	u := store.User{
		ID:           newV7(),
		Name:         "u" + randHex(8),
		DisplayName:  "Test User",
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=2$" + randHex(8),
		CreatedAt:    base(),
		Setup: store.AccountSetup{
			HasKeyPair:       true,
			KeyCustody:       "server",
			PasswordStrength: 3,
			PrivateKey:       "-----BEGIN PGP PRIVATE KEY BLOCK-----" + randHex(4),
			PublicKey:        "-----BEGIN PGP PUBLIC KEY BLOCK-----" + randHex(4),
		},
	}
	mustNil(tb, s.CreateUser(tb.Context(), u), "CreateUser")
	return u
}

func newConversation(tb testing.TB, s store.Store, userID uuid.UUID, created time.Time) store.Conversation {
	tb.Helper()
	c, err := s.GetOrCreateConversation(tb.Context(), store.Conversation{
		UserID:    userID,
		Key:       "k-" + randHex(8),
		Subject:   "subject " + randHex(2),
		CreatedAt: created,
	})
	mustNil(tb, err, "GetOrCreateConversation")
	return c
}

func newMessage(userID, convID uuid.UUID, received time.Time) store.Message {
	mid := randHex(8) + "@example.net"
	return store.Message{
		UserID:         userID,
		ConversationID: convID,
		DedupKey:       "dk-" + mid,
		Protocol:       "email",
		Inbound:        true,
		Date:           received.Add(-time.Minute),
		ReceivedAt:     received,
		MessageID:      mid,
		Subject:        "hello " + mid,
		Participants: []store.Participant{
			{Role: "from", Protocol: "email", Address: "bob@example.net", Name: "Bob"},
			{Role: "to", Protocol: "email", Address: "alice@example.org"},
		},
		Excerpt:  "excerpt of " + mid,
		TextBody: "body of " + mid,
		RawHash:  store.BlobHash([]byte(mid)),
		RawSize:  int64(len(mid)),
	}
}

func putMessage(tb testing.TB, s store.Store, m store.Message) store.Message {
	tb.Helper()
	got, created, err := s.PutMessage(tb.Context(), m)
	mustNil(tb, err, "PutMessage")
	if !created {
		tb.Fatalf("PutMessage %s: created = false for a new DedupKey", m.DedupKey)
	}
	return got
}

// forEach calls fn(0..n-1) on workers goroutines and returns the first error.
func forEach(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(fmt.Errorf("item %d: %w", i, err))
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx) // nil unless a call failed or the parent ended
}

// compareID orders UUIDs by bytes: for UUIDv7 that is by time.
func compareID(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }
