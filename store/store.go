// Package store defines Caliopen's data model and the one interface that every
// storage engine implements. Two engines exist: store/embedded (bbolt, one
// file, the default) and store/cassandra. Both must pass the conformance suite
// in store/storetest.
//
// Every per-user method takes the user's ID and must never return or change
// another user's data: an ID that belongs to someone else is ErrNotFound.
//
// Store is made of role interfaces (Directory, Contacts, Mailbox, Blobs,
// Tokens); the conversation summary's arithmetic is in this package
// (summary.go) and the engines only persist it. Both engines share one file
// map: directory.go, contacts.go, conversations.go, messages.go, blobs.go and
// tokens.go implement the same things in each; the other files are
// engine-specific (embedded.go, layout.go, codec.go, segments.go...;
// cassandra.go, migrate.go).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Errors every engine returns (wrapped, test with errors.Is).
var (
	// ErrNotFound: no such entity, or it belongs to another user.
	ErrNotFound = errors.New("not found")
	// ErrExists: a create collided with an existing unique key.
	ErrExists = errors.New("already exists")
	// ErrUnavailable: the engine cannot be reached or timed out; a retry may succeed.
	ErrUnavailable = errors.New("store unavailable")
	// ErrInvalid: the caller passed something the model does not accept.
	ErrInvalid = errors.New("invalid")
	// ErrOverQuota: the user's mailbox is full (package quota decides it);
	// mail for them is deferred (452 4.2.2) until they delete some.
	ErrOverQuota = errors.New("mailbox over quota")
)

// Domain is a mail domain hosted here.
type Domain struct {
	Name      string    `json:"name"` // lowercased, no trailing dot
	CreatedAt time.Time `json:"created_at"`
}

// User is an account. Name is the login (e.g. "alice"); addresses are separate.
type User struct {
	ID           uuid.UUID `json:"id"`
	Name         string    `json:"name"`
	DisplayName  string    `json:"display_name,omitempty"`
	PasswordHash string    `json:"-"` // PHC string, see internal/password
	CreatedAt    time.Time `json:"created_at"`
	// Quota is the most bytes the user's messages may take (see
	// Mailbox.Usage): 0 means the operator's default, below 0 unlimited.
	Quota int64 `json:"quota,omitempty"`
	// Account set-up facts that feed the account Privacy Index.
	Setup AccountSetup `json:"setup"`
}

// AccountSetup holds the account's security set-up (PRIVACY-INDEX.md, account).
type AccountSetup struct {
	HasKeyPair       bool   `json:"has_key_pair"`
	KeyCustody       string `json:"key_custody,omitempty"` // "device", "server" or ""
	KeyPublished     bool   `json:"key_published"`
	SecondFactor     bool   `json:"second_factor"`
	PasswordStrength int    `json:"password_strength"` // 0–4
	// PrivateKey is the armored private key when custody is "server".
	PrivateKey string `json:"-"`
	PublicKey  string `json:"public_key,omitempty"`
}

// Address is a mailbox address owned by a user ("alice@example.org").
type Address struct {
	Address string    `json:"address"` // lowercased local@domain
	UserID  uuid.UUID `json:"user_id"`
}

// Alias maps an address, or a catch-all "@domain", to one or more targets.
type Alias struct {
	Address string   `json:"address"`
	Targets []string `json:"targets"`
}

// Channel is one way to reach a contact.
type Channel struct {
	Protocol string    `json:"protocol"` // "email", "xmpp", "phone", "matrix", …
	Address  string    `json:"address"`  // normalised: lowercased for email
	LastUsed time.Time `json:"last_used,omitempty"`
}

// PublicKey is a contact's key (OpenPGP for now).
type PublicKey struct {
	Fingerprint string    `json:"fingerprint"` // upper-case hex
	Algorithm   string    `json:"algorithm"`   // "rsa", "ed25519", "ecdsa", …
	Bits        int       `json:"bits"`
	Armored     string    `json:"armored"`
	Source      string    `json:"source"` // "import", "autocrypt", "attachment", "wkd", "dns"
	Verified    bool      `json:"verified"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	SeenCount   int       `json:"seen_count"`
}

// Contact is a person or organisation the user corresponds with.
type Contact struct {
	ID        uuid.UUID   `json:"id"`
	UserID    uuid.UUID   `json:"user_id"`
	Name      string      `json:"name"`
	Channels  []Channel   `json:"channels"`
	Keys      []PublicKey `json:"keys"`
	CreatedAt time.Time   `json:"created_at"`
	UpdatedAt time.Time   `json:"updated_at"`
	// History is ingest's summary of the latest inbound messages from this
	// contact (the PI's "usual protection"), kept up to date as messages are
	// stored so that a delivery reads no earlier message. Opaque to the
	// engines, which store it as given; nil when never recorded.
	History json.RawMessage `json:"history,omitempty"`
}

// Participant is one party to a message, resolved to a contact when known.
type Participant struct {
	Role      string    `json:"role"` // "from", "sender", "reply-to", "to", "cc", "bcc"
	Protocol  string    `json:"protocol"`
	Address   string    `json:"address"`
	Name      string    `json:"name,omitempty"`
	ContactID uuid.UUID `json:"contact_id,omitempty"`
}

// Flags are the user's marks on a message.
type Flags struct {
	Read    bool     `json:"read"`
	Starred bool     `json:"starred"`
	Tags    []string `json:"tags"`
}

// Attachment describes one attached part; its bytes stay in the raw message.
type Attachment struct {
	PartPath    string `json:"part_path"` // e.g. "2.1": MIME part path for download
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
}

// PI is a Privacy Index snapshot stored with a message. Details is the
// privacyindex result (facts, caps, advice) as JSON, opaque to the store.
type PI struct {
	Version int    `json:"version"`
	Score   int    `json:"score"`
	Band    string `json:"band"`
	Warning bool   `json:"warning"`
	Details []byte `json:"details,omitempty"`
}

// Message is one message in one user's mailbox. The same RFC 5322 message
// delivered to two users is two Messages sharing one raw blob.
type Message struct {
	ID             uuid.UUID `json:"id"` // UUIDv7: sorts by time
	UserID         uuid.UUID `json:"user_id"`
	ConversationID uuid.UUID `json:"conversation_id"`
	// DedupKey makes delivery idempotent: (UserID, DedupKey) is stored once.
	DedupKey     string        `json:"-"`
	Protocol     string        `json:"protocol"` // "email"
	Inbound      bool          `json:"inbound"`
	Date         time.Time     `json:"date"`        // the message's own date
	ReceivedAt   time.Time     `json:"received_at"` // when we stored it; orders the conversation
	MessageID    string        `json:"message_id"`  // RFC 5322 Message-ID without <>
	InReplyTo    []string      `json:"in_reply_to,omitempty"`
	References   []string      `json:"references,omitempty"`
	Subject      string        `json:"subject"`
	Participants []Participant `json:"participants"`
	Excerpt      string        `json:"excerpt"`
	// TextBody and HTMLBody are set only on messages stored before the
	// bodies were read from the raw message (RawHash) when served: ingest
	// leaves them empty, so that a message's text is not stored twice.
	TextBody    string       `json:"text_body,omitempty"`
	HTMLBody    string       `json:"html_body,omitempty"`
	Attachments []Attachment `json:"attachments,omitempty"`
	Flags       Flags        `json:"flags"`
	// Security is the verified security facts as JSON (ingest's feature set),
	// opaque to the store.
	Security []byte `json:"security,omitempty"`
	PI       PI     `json:"pi"`
	RawHash  string `json:"raw_hash"` // blob holding the RFC 5322 bytes
	RawSize  int64  `json:"raw_size"`
}

// Conversation groups messages exchanged with one set of contacts, whatever
// the protocol. Its summary fields are maintained by the store as messages
// are put, flagged and deleted.
type Conversation struct {
	ID     uuid.UUID `json:"id"`
	UserID uuid.UUID `json:"user_id"`
	// Key identifies the participant set (e.g. sorted contact IDs); unique per user.
	Key          string        `json:"key"`
	ContactIDs   []uuid.UUID   `json:"contact_ids"`
	Participants []Participant `json:"participants"`
	Subject      string        `json:"subject"`
	CreatedAt    time.Time     `json:"created_at"`
	// Maintained by the store:
	LastActivity  time.Time `json:"last_activity"`
	LastMessageID uuid.UUID `json:"last_message_id"`
	Excerpt       string    `json:"excerpt"`
	MessageCount  int       `json:"message_count"`
	UnreadCount   int       `json:"unread_count"`
	Protocols     []string  `json:"protocols"`
}

// Token is an API session token; only its hash is stored.
type Token struct {
	Hash      string    `json:"hash"`
	UserID    uuid.UUID `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Page asks for one page of a list. Cursor is "" for the first page, else the
// Next of the previous page; it is opaque and engine-specific.
type Page struct {
	Limit  int // <= 0 means DefaultLimit; capped at MaxLimit
	Cursor string
}

const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// Store is the one interface every engine implements: the role interfaces
// below plus Ping and Close. Methods are safe for concurrent use. Errors wrap
// ErrNotFound, ErrExists, ErrUnavailable or ErrInvalid. A consumer takes the
// smallest role (or an interface of its own) that covers what it calls.
type Store interface {
	Directory
	Contacts
	Mailbox
	Blobs
	Tokens

	// Ping checks the engine is reachable (ErrUnavailable if not).
	Ping(ctx context.Context) error
	Close() error
}

// Directory is who and what is hosted: domains, users, addresses, aliases.
// lookupd (through resolve) and the admin commands use it.
type Directory interface {
	// Domains.
	AddDomain(ctx context.Context, d Domain) error // ErrExists
	GetDomain(ctx context.Context, name string) (Domain, error)
	ListDomains(ctx context.Context) ([]Domain, error)
	// RemoveDomain refuses (ErrInvalid) while addresses or aliases use it.
	RemoveDomain(ctx context.Context, name string) error

	// Users. CreateUser fails with ErrExists when the name is taken.
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, id uuid.UUID) (User, error)
	GetUserByName(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	UpdateUser(ctx context.Context, u User) error // by ID; Name cannot change
	// DeleteUser removes the user, its addresses and everything it owns.
	DeleteUser(ctx context.Context, id uuid.UUID) error

	// Addresses: the domain must exist; an address has one owner (ErrExists).
	AddAddress(ctx context.Context, a Address) error
	GetAddress(ctx context.Context, address string) (Address, error)
	ListAddresses(ctx context.Context, userID uuid.UUID) ([]Address, error)
	RemoveAddress(ctx context.Context, address string) error

	// Aliases: PutAlias creates or replaces the target list.
	PutAlias(ctx context.Context, a Alias) error
	GetAlias(ctx context.Context, address string) (Alias, error)
	ListAliases(ctx context.Context, domain string) ([]Alias, error)
	RemoveAlias(ctx context.Context, address string) error
}

// Contacts is a user's address book, with the contacts' channels and keys.
type Contacts interface {
	// PutContact creates or replaces (by ID) and keeps the channel index in
	// step; a channel (protocol, address) belongs to at most one of the
	// user's contacts (ErrExists).
	PutContact(ctx context.Context, c Contact) error
	GetContact(ctx context.Context, userID, id uuid.UUID) (Contact, error)
	ListContacts(ctx context.Context, userID uuid.UUID) ([]Contact, error)
	FindContactByChannel(ctx context.Context, userID uuid.UUID, protocol, address string) (Contact, error)
	DeleteContact(ctx context.Context, userID, id uuid.UUID) error
	// SetContactHistory sets only the History of an existing contact, so
	// that a delivery recording it keeps whatever else was written to the
	// contact meanwhile (keys verified, channels); ErrNotFound when the
	// contact does not exist, which it never creates.
	SetContactHistory(ctx context.Context, userID, id uuid.UUID, history json.RawMessage) error
}

// Mailbox is a user's conversations and the messages in them. The engine
// maintains each conversation's summary (see Summary).
type Mailbox interface {
	// GetOrCreateConversation returns the user's conversation with c.Key,
	// creating c if none exists; concurrent callers get the same one.
	GetOrCreateConversation(ctx context.Context, c Conversation) (Conversation, error)
	GetConversation(ctx context.Context, userID, id uuid.UUID) (Conversation, error)
	GetConversationByKey(ctx context.Context, userID uuid.UUID, key string) (Conversation, error)
	// UpdateConversation changes Key, ContactIDs, Participants and Subject only.
	UpdateConversation(ctx context.Context, c Conversation) error
	// ListConversations: most recent activity first, ties by ID descending.
	ListConversations(ctx context.Context, userID uuid.UUID, p Page) ([]Conversation, string, error)
	// DeleteConversation deletes it and its messages.
	DeleteConversation(ctx context.Context, userID, id uuid.UUID) error

	// PutMessage stores m once per (UserID, DedupKey): when that key is
	// already stored it returns the stored message and created=false, also
	// under concurrent calls. The conversation must exist. On create the
	// store updates the conversation's summary.
	PutMessage(ctx context.Context, m Message) (stored Message, created bool, err error)
	GetMessage(ctx context.Context, userID, id uuid.UUID) (Message, error)
	// FindMessageByMessageID finds the user's message with that RFC 5322 Message-ID.
	FindMessageByMessageID(ctx context.Context, userID uuid.UUID, messageID string) (Message, error)
	// ListMessages: newest first (by ReceivedAt, then ID).
	ListMessages(ctx context.Context, userID, conversationID uuid.UUID, p Page) ([]Message, string, error)
	SetFlags(ctx context.Context, userID, id uuid.UUID, f Flags) error
	// SetSecurity replaces the security facts and PI (recompute, client reports).
	SetSecurity(ctx context.Context, userID, id uuid.UUID, security []byte, pi PI) error
	DeleteMessage(ctx context.Context, userID, id uuid.UUID) error

	// Usage is the bytes of the user's messages (the sum of their RawSize),
	// what their quota limits: a redelivery that dedup answers adds nothing,
	// a delete gives its bytes back. An unknown user uses 0.
	Usage(ctx context.Context, userID uuid.UUID) (int64, error)
}

// Blobs hold raw message bytes: content-addressed (hex SHA-256), shared
// between users, chunked by the engine.
type Blobs interface {
	// PutBlob is idempotent.
	PutBlob(ctx context.Context, data []byte) (hash string, err error)
	GetBlob(ctx context.Context, hash string) ([]byte, error)
}

// Tokens are the API's session tokens.
type Tokens interface {
	PutToken(ctx context.Context, t Token) error
	GetToken(ctx context.Context, hash string) (Token, error) // expired ⇒ ErrNotFound
	DeleteToken(ctx context.Context, hash string) error
	// DeleteUserTokens deletes every token of the user except the one whose
	// hash is except ("" deletes them all): a password change ends the other
	// sessions. An unknown user has no tokens (nil).
	DeleteUserTokens(ctx context.Context, userID uuid.UUID, except string) error
}
