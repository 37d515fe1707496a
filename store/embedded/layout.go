package embedded

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

// Top-level buckets.
var (
	bMeta        = []byte("meta")
	bDomains     = []byte("domains")     // domain → Domain
	bUsers       = []byte("users")       // user ID → userRecord
	bUserNames   = []byte("usernames")   // name → user ID
	bAddresses   = []byte("addresses")   // address → owner's user ID
	bDomainAddrs = []byte("domainaddrs") // domain 0x00 address → nil: "is the domain in use"
	bAliases     = []byte("aliases")     // domain 0x00 address → Alias (catch-all has an empty local part)
	bMailboxes   = []byte("mailboxes")   // user ID → nested bucket, see mailbox
	bBlobs       = []byte("blobs")       // hash → size (uint64); hash ‖ uint32 index → chunk
	bTokens      = []byte("tokens")      // hash → Token
	bTokenExpiry = []byte("tokenexpiry") // expiry time ‖ hash → nil, for purging
	bBlobRefs    = []byte("blobrefs")    // hash → uint64: messages (of all users) whose raw bytes it is
	bUsage       = []byte("usage")       // user ID → uint64: bytes of the user's messages (RawSize)

	topBuckets = [][]byte{bMeta, bDomains, bUsers, bUserNames, bAddresses, bDomainAddrs,
		bAliases, bMailboxes, bBlobs, bTokens, bTokenExpiry, bBlobRefs, bUsage}

	keySchema = []byte("schema")
)

// Buckets nested in each user's mailbox bucket.
var (
	mbAddresses    = []byte("addresses")    // address → nil
	mbContacts     = []byte("contacts")     // contact ID → Contact
	mbChannels     = []byte("channels")     // digest(protocol, address) → contact ID
	mbConvs        = []byte("convs")        // conversation ID → Conversation (codec.go)
	mbConvKeys     = []byte("convkeys")     // digest(key) → conversation ID
	mbConvActivity = []byte("convactivity") // desc(LastActivity) ‖ desc(ID) → nil
	mbMessages     = []byte("messages")     // message ID → Message (codec.go)
	mbConvMessages = []byte("convmessages") // conversation ID ‖ desc(ReceivedAt) ‖ desc(ID) → nil
	mbDedup        = []byte("dedup")        // digest(DedupKey) → message ID
	mbMessageIDs   = []byte("messageids")   // digest(Message-ID) ‖ message ID → nil
	mbTokens       = []byte("tokens")       // token hash → nil

	mailboxBuckets = [][]byte{mbAddresses, mbContacts, mbChannels, mbConvs, mbConvKeys,
		mbConvActivity, mbMessages, mbConvMessages, mbDedup, mbMessageIDs, mbTokens}
	errNoSuchBucket = errors.New("store file is damaged: a bucket is missing")
)

// mailbox is one user's nested buckets, opened for one transaction.
type mailbox struct {
	addresses, contacts, channels, convs, convKeys, convActivity,
	messages, convMessages, dedup, messageIDs, tokens *bolt.Bucket
}

// openMailbox returns the user's buckets, or ok=false when the user does
// not exist (callers turn that into ErrNotFound for what they looked up).
func openMailbox(tx *bolt.Tx, userID uuid.UUID) (mb mailbox, ok bool, err error) {
	root := tx.Bucket(bMailboxes).Bucket(userID[:])
	if root == nil {
		return mailbox{}, false, nil
	}
	ptrs := []**bolt.Bucket{&mb.addresses, &mb.contacts, &mb.channels, &mb.convs, &mb.convKeys,
		&mb.convActivity, &mb.messages, &mb.convMessages, &mb.dedup, &mb.messageIDs, &mb.tokens}
	for i, name := range mailboxBuckets {
		if *ptrs[i] = root.Bucket(name); *ptrs[i] == nil {
			return mailbox{}, false, fmt.Errorf("%w: mailbox %s/%s", errNoSuchBucket, userID, name)
		}
	}
	return mb, true, nil
}

// createMailbox creates the user's nested buckets.
func createMailbox(tx *bolt.Tx, userID uuid.UUID) error {
	root, err := tx.Bucket(bMailboxes).CreateBucket(userID[:])
	if err != nil {
		return fmt.Errorf("create mailbox %s: %w", userID, err)
	}
	for _, name := range mailboxBuckets {
		if _, err := root.CreateBucket(name); err != nil {
			return fmt.Errorf("create mailbox %s/%s: %w", userID, name, err)
		}
	}
	return nil
}

// digest turns caller strings of any length (conversation keys, dedup keys,
// Message-IDs, channel addresses) into fixed 32-byte keys: bbolt keys are
// bounded and these lookups are exact-match only. Parts are length-prefixed
// so ("ab","c") and ("a","bc") differ.
func digest(parts ...string) []byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write([]byte(p))
	}
	return h.Sum(nil)
}

// timeLen is the size of an encoded time: seconds and nanoseconds are kept
// apart so any time.Time fits (UnixNano covers only 1678–2262).
const timeLen = 12

// putTime writes t into b[:timeLen] so that bytewise order is time order.
func putTime(b []byte, t time.Time) {
	binary.BigEndian.PutUint64(b, uint64(t.Unix())^1<<63)
	binary.BigEndian.PutUint32(b[8:], uint32(t.Nanosecond()))
}

// orderKeyLen is the size of a descending (time, ID) key.
const orderKeyLen = timeLen + 16

// orderKey encodes (t, id) so that bytewise ascending order is (t, id)
// descending: newest first, ties by ID descending, as the lists need, with
// a plain forward cursor.
func orderKey(t time.Time, id uuid.UUID) []byte {
	k := make([]byte, orderKeyLen)
	putTime(k, t)
	copy(k[timeLen:], id[:])
	for i := range k {
		k[i] = ^k[i]
	}
	return k
}

// orderKeyID is the ID inside an orderKey.
func orderKeyID(k []byte) uuid.UUID {
	var id uuid.UUID
	for i := range id {
		id[i] = ^k[timeLen+i]
	}
	return id
}

// Cursors are the last listed item's order key, base64url; a version byte
// leaves room to change the format.
const cursorVersion = 1

func encodeCursor(k []byte) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{cursorVersion}, k...))
}

func decodeCursor(c string) ([]byte, error) {
	if c == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 1+orderKeyLen || b[0] != cursorVersion {
		return nil, invalid("malformed page cursor")
	}
	return b[1:], nil
}

// idKey is the 16 bytes of a UUID as a bbolt key.
func idKey(id uuid.UUID) []byte { return id[:] }

// idFrom reads a UUID stored as 16 bytes.
func idFrom(b []byte) (uuid.UUID, error) {
	var id uuid.UUID
	if len(b) != len(id) {
		return id, fmt.Errorf("corrupt ID of %d bytes", len(b))
	}
	copy(id[:], b)
	return id, nil
}

// domainKey is domain 0x00 address: all of a domain's entries are adjacent.
func domainKey(address string) []byte {
	d := store.AddressDomain(address)
	k := make([]byte, 0, len(d)+1+len(address))
	k = append(k, d...)
	k = append(k, 0)
	return append(k, address...)
}

func domainPrefix(domain string) []byte { return append([]byte(domain), 0) }
