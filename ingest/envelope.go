package ingest

import (
	"time"

	"github.com/google/uuid"
)

// Envelope is what an adapter (milter, deliver, import) knows about a message
// besides its bytes. Adapters fill what they have; zero values mean unknown.
type Envelope struct {
	// MailFrom is the envelope sender (SMTP MAIL FROM) without <>; "" for the null sender.
	MailFrom string
	// Recipients are envelope recipients as given by the sender (RCPT TO). Ingest
	// resolves each (lowercase, +extension, aliases, catch-all) to hosted users;
	// recipients that are not hosted are ignored.
	Recipients []string

	ClientAddr string // connecting client IP, "" if local
	ClientName string // its verified reverse name, "unknown" if none
	Helo       string

	TLSVersion string // e.g. "TLSv1.3", "" when the hop was in clear
	TLSCipher  string
	TLSBits    int

	AuthUser string // SASL login of the client, if it authenticated
	QueueID  string // Postfix queue id (changes on retry: never a dedup key)

	ReceivedAt time.Time // zero means now
	Protocol   string    // "email" when empty

	// OwnReceived is the number of topmost Received: fields our own MTA
	// added, which are not upstream hops (fact T3): 0 for the milter (Postfix
	// does not pass its own Received header to it), usually 1 for
	// `caliopen deliver` run as a Postfix pipe transport.
	OwnReceived int
}

// Result says what Ingest stored: one Delivery per hosted user the message
// reached (several recipients may resolve to one user: stored once).
type Result struct {
	Deliveries []Delivery
	// Complete: every envelope recipient reaches hosted users only (no
	// remote forward, no unknown address) and the message is stored for
	// each of them. Nothing is left for the MTA to deliver.
	Complete bool
}

// Delivery is the message as stored for one user.
type Delivery struct {
	UserID         uuid.UUID
	MessageID      uuid.UUID // store.Message.ID
	ConversationID uuid.UUID
	Created        bool // false: this exact message was already stored (a retry or duplicate)
	// Pending: some checks could not complete (DNS down, verification
	// budget spent); the message is to be re-verified (keytrust.Queue).
	Pending bool
}

// The ingest entry point, implemented in ingest.go:
//
//	func (in *Ingester) Ingest(ctx context.Context, env Envelope, raw []byte) (Result, error)
//
// An error means nothing may be acknowledged to the sender: adapters turn it
// into a 4xx (milter) or EX_TEMPFAIL (deliver). Errors wrapping
// store.ErrUnavailable are temporary; a message that cannot be parsed is
// never an error (it is stored as received).
