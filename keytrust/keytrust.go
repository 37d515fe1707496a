// Package keytrust is ingest's verification step: it runs verify on each
// delivery with what the recipient user knows (their contact's public keys,
// their server-held private key), turns the outcome into what the Privacy
// Index rewards — fact A3, how far the sender's key is trusted — and records
// the keys a message carries (Autocrypt, attached keys) on the sender's
// contact. A key the user verified is never silently replaced: a different
// key becomes a "key changed" warning until the user verifies again.
package keytrust

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/verify"
)

// ConsistentAfter is how many messages must carry the same key before trust
// on first use counts it as consistent (PRIVACY-INDEX.md, A3).
const ConsistentAfter = 3

// Store is the part of the store keytrust reads and writes: the sender's
// contact (its keys) and the user's own key set-up.
type Store interface {
	GetContact(ctx context.Context, userID, id uuid.UUID) (store.Contact, error)
	PutContact(ctx context.Context, c store.Contact) error
	GetUser(ctx context.Context, id uuid.UUID) (store.User, error)
}

// Config is what a Verifier is built from.
type Config struct {
	// Verify is the configured verifier (DNS resolver, trusted sealers…);
	// the sender's keys are handed to it per call. Required.
	Verify *verify.Verifier
	// Store holds contacts and users. Required.
	Store Store
	// Logger: nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier implements ingest.Verifier. One Verifier serves concurrent calls.
type Verifier struct {
	base   *verify.Verifier
	store  Store
	logger *slog.Logger
	clock  func() time.Time

	// The DNS checks (DKIM, SPF, DMARC, ARC) depend on the message only:
	// a message for several users is checked once, and each user gets only
	// the OpenPGP analysis, which depends on their keys.
	mu      sync.Mutex
	recent  map[[32]byte]recentFacts
	sweptAt time.Time // last scan of recent for expired entries
}

// New returns a Verifier, or an error naming a missing dependency.
func New(cfg Config) (*Verifier, error) {
	switch {
	case cfg.Verify == nil:
		return nil, errors.New("keytrust: Config.Verify is required")
	case cfg.Store == nil:
		return nil, errors.New("keytrust: Config.Store is required")
	}
	k := &Verifier{base: cfg.Verify, store: cfg.Store, logger: cfg.Logger, clock: cfg.Now, recent: map[[32]byte]recentFacts{}}
	if k.logger == nil {
		k.logger = slog.New(slog.DiscardHandler)
	}
	if k.clock == nil {
		k.clock = time.Now
	}
	return k, nil
}

type recentFacts struct {
	facts verify.Facts
	at    time.Time
}

// recentTTL bounds how long DNS facts are reused: the deliveries of one
// message follow each other within an ingest call.
const recentTTL = time.Minute

func (k *Verifier) verifyOnce(ctx context.Context, in verify.Input, rawHash string) (verify.Facts, error) {
	if rawHash == "" {
		rawHash = store.BlobHash(in.Raw)
	}
	// The SMTP facts are part of the key: the same bytes from another
	// client are checked again (SPF depends on it). The message itself is
	// named by the hash ingest computed once, not hashed again per user.
	h := sha256.New()
	for _, part := range []string{in.MailFrom, in.ClientIP, in.Helo, in.From, rawHash} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	var key [32]byte
	h.Sum(key[:0])
	now := time.Now()
	k.mu.Lock()
	r, ok := k.recent[key]
	k.mu.Unlock()
	if ok && now.Sub(r.at) < recentTTL {
		f := r.facts
		f.PGP = k.base.OpenPGP(ctx, in)
		return f, nil
	}
	f, err := k.base.Verify(ctx, in)
	if err != nil {
		return f, err
	}
	k.mu.Lock()
	// Sweep at most once a second: at a steady rate the map holds a
	// minute of messages (up to its cap), and scanning it on every
	// message was a tenth of the delivery path's CPU.
	if now.After(k.sweptAt.Add(time.Second)) {
		k.sweptAt = now
		for h, old := range k.recent {
			if now.Sub(old.at) >= recentTTL {
				delete(k.recent, h)
			}
		}
	}
	if len(k.recent) < 1024 {
		k.recent[key] = recentFacts{facts: f, at: now}
	}
	k.mu.Unlock()
	return f, nil
}

var _ ingest.Verifier = (*Verifier)(nil)

// Details is what keytrust stores as the message's verification details.
type Details struct {
	verify.Facts
	// KeyState says how A3 was decided: "none", "first_seen", "consistent",
	// "discovered", "verified", or "changed".
	KeyState string `json:"key_state"`
}

// contactKeys serves the sender contact's keys to verify.
type contactKeys []string

func (k contactKeys) PublicKeys(context.Context, string) ([]string, error) { return k, nil }

func (k *Verifier) now() time.Time { return k.clock() }

// Verify runs verification for one delivery and returns the full feature
// set. It changes nothing: what the message teaches about the sender's keys
// is written by the returned AfterStore, once the message is stored for the
// first time, so a retried or duplicated message counts once.
func (k *Verifier) Verify(ctx context.Context, in ingest.VerifyInput) (ingest.Verification, error) {
	var (
		sender *store.Contact
		keys   contactKeys
	)
	if in.Sender != nil {
		// Re-read: another delivery may have recorded a key since ingest
		// resolved the contact. Gone meanwhile (merged, deleted): no keys.
		c, err := k.store.GetContact(ctx, in.UserID, in.Sender.ID)
		switch {
		case err == nil:
			sender = &c
			keys = make(contactKeys, 0, len(c.Keys))
			for _, key := range c.Keys {
				keys = append(keys, key.Armored)
			}
		case !errors.Is(err, store.ErrNotFound):
			return ingest.Verification{}, fmt.Errorf("keytrust: sender contact: %w", err)
		}
	}
	input := verify.Input{
		Raw: in.Raw, Message: parsedMessage(in.Parsed), MailFrom: in.Envelope.MailFrom, ClientIP: in.Envelope.ClientAddr,
		Helo: in.Envelope.Helo, From: in.From,
	}
	if keys != nil { // the sender's keys as this user knows them
		input.Keys = keys
	}
	// The private key matters only for encrypted mail; plain mail needs no
	// user read.
	if in.Parsed == nil || in.Features.Encryption != privacyindex.EncNone {
		user, err := k.store.GetUser(ctx, in.UserID)
		if err != nil {
			return ingest.Verification{}, fmt.Errorf("keytrust: user: %w", err)
		}
		if user.Setup.KeyCustody == "server" && user.Setup.PrivateKey != "" {
			input.RecipientKeys = []string{user.Setup.PrivateKey}
		}
	}
	facts, err := k.verifyOnce(ctx, input, in.RawHash)
	if err != nil {
		return ingest.Verification{}, err
	}
	features := in.Features
	facts.Apply(&features)

	state, learn := "none", learnt{}
	if sender != nil {
		state, learn = assess(*sender, facts)
	}
	switch state {
	case "verified":
		features.Key = privacyindex.KeyVerified
	case "consistent":
		features.Key = privacyindex.KeyConsistent
	case "first_seen":
		features.Key = privacyindex.KeyFirstSeen
	case "changed":
		features.KeyChanged = true
		if learn.signer != "" {
			features.Key = privacyindex.KeyFirstSeen
		}
	}
	// Keep stored facts small: a harvested key is named by its fingerprint;
	// its armor goes to the contact.
	for i := range facts.PGP.Keys {
		facts.PGP.Keys[i].Key.Armored = ""
	}
	out := ingest.Verification{Features: features, Details: Details{Facts: facts, KeyState: state}}
	if sender != nil && (learn.signer != "" || len(learn.keys) > 0) {
		userID, contactID := sender.UserID, sender.ID
		out.AfterStore = func(ctx context.Context) error { return k.record(ctx, userID, contactID, learn) }
	}
	return out, nil
}

// MaxKeysPerContact bounds what messages can pile onto a contact.
const MaxKeysPerContact = 5

// learnt is what one message teaches about a contact's keys.
type learnt struct {
	signer string            // fingerprint of a known key that validly signed it
	keys   []store.PublicKey // new keys it carries for the contact
	// endorsed: the new keys came in a message signed by a key we trust (a
	// rollover), so using them next is no change to warn about.
	endorsed bool
}

// assess decides A3 for one message from the contact as it is, and what to
// record once the message is stored. Rules (PRIVACY-INDEX.md A3): only a
// valid signature by a key we hold for the contact earns trust; a key that
// differs from one the user verified, or from the key the contact has been
// signing with, is a change (a warning) until the user verifies it.
func assess(c store.Contact, f verify.Facts) (string, learnt) {
	var l learnt
	var verified, signing *store.PublicKey // a verified key; the key seen signing most recently
	for i := range c.Keys {
		key := &c.Keys[i]
		if key.Verified {
			verified = key
		}
		if key.SeenCount > 0 && (signing == nil || key.LastSeen.After(signing.LastSeen)) {
			signing = key
		}
	}
	state := "none"
	if fp := f.PGP.SignerFingerprint; fp != "" && f.PGP.Signature == privacyindex.SigValid {
		if i := keyIndex(c.Keys, fp); i >= 0 {
			key := c.Keys[i]
			l.signer = key.Fingerprint
			switch {
			case key.Verified:
				state = "verified"
			case verified != nil:
				state = "changed" // signs with another key than the one the user confirmed
			case signing != nil && !strings.EqualFold(signing.Fingerprint, key.Fingerprint) && key.SeenCount == 0:
				state = "changed" // a new key after another one signed before
			case key.SeenCount+1 >= ConsistentAfter:
				state = "consistent"
			default:
				state = "first_seen"
			}
		}
	}
	signedByTrusted := state == "verified" || state == "consistent" || state == "first_seen"
	l.endorsed = signedByTrusted
	for _, h := range f.PGP.Keys {
		if h.Error != "" || h.Key.Fingerprint == "" || keyIndex(c.Keys, h.Key.Fingerprint) >= 0 {
			continue
		}
		// Only a key that names one of the contact's addresses is theirs:
		// a forwarded or attached third-party key is not.
		if !namesContact(c, h) {
			continue
		}
		if len(c.Keys)+len(l.keys) >= MaxKeysPerContact {
			break
		}
		l.keys = append(l.keys, h.Key)
		// A new key beside one the user verified, or beside the key the
		// contact signs with, in a message that key did not sign: a change.
		if (verified != nil || signing != nil) && !signedByTrusted {
			state = "changed"
		}
	}
	return state, l
}

func namesContact(c store.Contact, h verify.HarvestedKey) bool {
	addrs := h.Emails
	if h.Addr != "" {
		addrs = append([]string{h.Addr}, addrs...)
	}
	for _, a := range addrs {
		if hasChannel(&c, a) {
			return true
		}
	}
	return false
}

// record applies what a stored message taught to the contact as it is now
// (read just before the write, so a fingerprint the user confirmed
// meanwhile is kept).
func (k *Verifier) record(ctx context.Context, userID, contactID uuid.UUID, l learnt) error {
	c, err := k.store.GetContact(ctx, userID, contactID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted or merged meanwhile: nothing to record
	}
	if err != nil {
		return fmt.Errorf("keytrust: record keys: %w", err)
	}
	now := k.now().UTC()
	if i := keyIndex(c.Keys, l.signer); l.signer != "" && i >= 0 {
		c.Keys[i].SeenCount++
		c.Keys[i].LastSeen = now
	}
	for _, key := range l.keys {
		if keyIndex(c.Keys, key.Fingerprint) >= 0 || len(c.Keys) >= MaxKeysPerContact {
			continue
		}
		key.FirstSeen, key.LastSeen, key.SeenCount, key.Verified = now, now, 0, false
		if l.endorsed {
			key.SeenCount = 1 // part of the contact's signing history from now on
		}
		c.Keys = append(c.Keys, key)
	}
	c.UpdatedAt = now
	if err := k.store.PutContact(ctx, c); err != nil {
		return fmt.Errorf("keytrust: record keys: %w", err)
	}
	return nil
}

func keyIndex(keys []store.PublicKey, fp string) int {
	for i, k := range keys {
		if fp != "" && strings.EqualFold(k.Fingerprint, fp) {
			return i
		}
	}
	return -1
}

func hasChannel(c *store.Contact, addr string) bool {
	for _, ch := range c.Channels {
		if ch.Protocol == "email" && strings.EqualFold(ch.Address, addr) {
			return true
		}
	}
	return false
}

// parsedMessage is the message ingest parsed, nil when there is none (verify
// then parses Raw itself).
func parsedMessage(p *ingest.Parsed) *message.Message {
	if p == nil {
		return nil
	}
	return p.Msg
}
