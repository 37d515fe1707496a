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
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/verify"
)

// ConsistentAfter is how many messages must carry the same key before trust
// on first use counts it as consistent (PRIVACY-INDEX.md, A3).
const ConsistentAfter = 3

// Verifier implements ingest.Verifier.
type Verifier struct {
	// Base is the configured verifier (DNS resolver, trusted sealers…);
	// its Keys field is set per call from the sender's contact.
	Base  *verify.Verifier
	Store store.Store
	Log   *slog.Logger
	Now   func() time.Time
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

func (k *Verifier) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

func (k *Verifier) log() *slog.Logger {
	if k.Log != nil {
		return k.Log
	}
	return slog.Default()
}

// Verify runs verification for one delivery and returns the full feature set.
func (k *Verifier) Verify(ctx context.Context, in ingest.VerifyInput) (ingest.Verification, error) {
	v := *k.Base
	var sender *store.Contact
	if in.Sender != nil {
		// Re-read: ingest saved the contact just before, and another delivery
		// may have recorded a key since.
		c, err := k.Store.GetContact(ctx, in.UserID, in.Sender.ID)
		if err != nil {
			return ingest.Verification{}, fmt.Errorf("keytrust: sender contact: %w", err)
		}
		sender = &c
		keys := make(contactKeys, 0, len(c.Keys))
		for _, key := range c.Keys {
			keys = append(keys, key.Armored)
		}
		v.Keys = keys
	}
	input := verify.Input{
		Raw: in.Raw, MailFrom: in.Envelope.MailFrom, ClientIP: in.Envelope.ClientAddr,
		Helo: in.Envelope.Helo, From: in.From,
	}
	user, err := k.Store.GetUser(ctx, in.UserID)
	if err != nil {
		return ingest.Verification{}, fmt.Errorf("keytrust: user: %w", err)
	}
	if user.Setup.KeyCustody == "server" && user.Setup.PrivateKey != "" {
		input.RecipientKeys = []string{user.Setup.PrivateKey}
	}
	facts, err := v.Verify(ctx, input)
	if err != nil {
		return ingest.Verification{}, err
	}
	features := in.Features
	facts.Apply(&features)

	state := "none"
	if sender != nil {
		state, err = k.recordKeys(ctx, sender, facts)
		if err != nil {
			return ingest.Verification{}, err
		}
	}
	switch state {
	case "verified":
		features.Key = privacyindex.KeyVerified
	case "discovered":
		features.Key = privacyindex.KeyDiscovered
	case "consistent":
		features.Key = privacyindex.KeyConsistent
	case "first_seen":
		features.Key = privacyindex.KeyFirstSeen
	case "changed":
		features.Key = privacyindex.KeyFirstSeen
		features.KeyChanged = true
	default:
		features.Key = privacyindex.KeyNone
	}
	return ingest.Verification{Features: features, Details: Details{Facts: facts, KeyState: state}}, nil
}

// recordKeys updates the sender contact's keys from this message and says
// what is known of the key that signed it.
func (k *Verifier) recordKeys(ctx context.Context, c *store.Contact, f verify.Facts) (string, error) {
	now := k.now().UTC()
	changed := false
	state := "none"
	hadVerified := false
	for _, key := range c.Keys {
		hadVerified = hadVerified || key.Verified
	}
	// The signing key: trust follows its record.
	if fp := f.PGP.SignerFingerprint; fp != "" && f.PGP.Signature == privacyindex.SigValid {
		if i := keyIndex(c.Keys, fp); i >= 0 {
			key := &c.Keys[i]
			key.SeenCount++
			key.LastSeen = now
			changed = true
			switch {
			case key.Verified:
				state = "verified"
			case key.Source == "dns" || key.Source == "wkd":
				state = "discovered"
			case key.SeenCount >= ConsistentAfter:
				state = "consistent"
			default:
				state = "first_seen"
			}
			if hadVerified && !key.Verified {
				state = "changed"
			}
		}
	}
	// Keys the message carries are added, never replacing a verified one.
	for _, h := range f.PGP.Keys {
		if h.Error != "" || h.Key.Fingerprint == "" {
			continue
		}
		if h.Addr != "" && !hasChannel(c, h.Addr) {
			continue // an Autocrypt key for another address is not this contact's
		}
		if i := keyIndex(c.Keys, h.Key.Fingerprint); i >= 0 {
			if c.Keys[i].LastSeen.Before(now) {
				c.Keys[i].LastSeen = now
				changed = true
			}
			continue
		}
		key := h.Key
		key.FirstSeen, key.LastSeen, key.SeenCount, key.Verified = now, now, 1, false
		c.Keys = append(c.Keys, key)
		changed = true
		if hadVerified {
			k.log().Warn("keytrust: a contact whose key the user verified sent a different key",
				"user", c.UserID, "contact", c.ID, "fingerprint", key.Fingerprint)
			if state == "none" || state == "first_seen" {
				state = "changed"
			}
		}
	}
	if !changed {
		return state, nil
	}
	c.UpdatedAt = now
	if err := k.Store.PutContact(ctx, *c); err != nil && !errors.Is(err, store.ErrExists) {
		return "", fmt.Errorf("keytrust: record keys: %w", err)
	}
	return state, nil
}

func keyIndex(keys []store.PublicKey, fp string) int {
	for i, k := range keys {
		if strings.EqualFold(k.Fingerprint, fp) {
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
