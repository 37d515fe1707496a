package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

// SecurityVersion is the version of the Security JSON stored on messages.
const SecurityVersion = 1

// Security is what store.Message.Security holds (as JSON): the facts the
// message PI was computed from, and where they came from, so that the PI can
// be recomputed and explained later.
type Security struct {
	Version int `json:"version"`
	// Features is the exact input of privacyindex.Message.
	Features privacyindex.MessageFeatures `json:"features"`
	// Structure is what ingest saw in the message's shape and header.
	Structure Structure `json:"structure"`
	// Envelope is what the SMTP session said (inbound only).
	Envelope *EnvelopeFacts `json:"envelope,omitempty"`
	// Verification is the Verifier's own report (DKIM/SPF/DMARC/PGP details).
	Verification json.RawMessage `json:"verification,omitempty"`
	// VerifyError says why verification did not run to the end; the
	// features then hold only what ingest saw itself.
	VerifyError string `json:"verify_error,omitempty"`
	// ParseProblems lists what could not be parsed; the raw message is kept whole.
	ParseProblems []string `json:"parse_problems,omitempty"`
}

// EnvelopeFacts is the part of Envelope worth keeping with the message.
type EnvelopeFacts struct {
	MailFrom   string `json:"mail_from,omitempty"`
	ClientAddr string `json:"client_addr,omitempty"`
	ClientName string `json:"client_name,omitempty"`
	Helo       string `json:"helo,omitempty"`
	TLSVersion string `json:"tls_version,omitempty"`
	TLSCipher  string `json:"tls_cipher,omitempty"`
	TLSBits    int    `json:"tls_bits,omitempty"`
	AuthUser   string `json:"auth_user,omitempty"`
	QueueID    string `json:"queue_id,omitempty"`
}

func envelopeFacts(env Envelope) *EnvelopeFacts {
	return &EnvelopeFacts{
		MailFrom: text(env.MailFrom, 320), ClientAddr: text(env.ClientAddr, 64),
		ClientName: text(env.ClientName, 255), Helo: text(env.Helo, 255),
		TLSVersion: text(env.TLSVersion, 32), TLSCipher: text(env.TLSCipher, 128),
		TLSBits: env.TLSBits, AuthUser: text(env.AuthUser, 255), QueueID: text(env.QueueID, 64),
	}
}

// Verifier is the pluggable authenticity step (DKIM, SPF, DMARC, ARC,
// OpenPGP signatures and keys). It is called once per delivery, because
// signature and key facts depend on the recipient user (their contacts'
// keys, their server-side private key); an implementation may cache the
// per-message DNS work across calls with the same Raw.
//
// It must start from in.Features (what ingest saw itself) and return the
// complete feature set; ingest keeps History as it computed it. A failed
// check is a fact, not an error: an error means verification could not run
// at all, and ingest then stores the message with in.Features alone (unless
// ctx is done or the store is unavailable, which fails the ingest so that
// the sender retries and the message is verified in full then).
type Verifier interface {
	Verify(ctx context.Context, in VerifyInput) (Verification, error)
}

// VerifierFunc adapts a function to Verifier.
type VerifierFunc func(ctx context.Context, in VerifyInput) (Verification, error)

// Verify calls f.
func (f VerifierFunc) Verify(ctx context.Context, in VerifyInput) (Verification, error) {
	return f(ctx, in)
}

// VerifyInput is everything a Verifier may look at. Raw and Parsed are
// shared between calls: read only.
type VerifyInput struct {
	UserID   uuid.UUID
	Envelope Envelope
	Raw      []byte
	// RawHash is the hex SHA-256 of Raw (the blob hash), computed once
	// per message: a Verifier keys per-message caches on it.
	RawHash string
	// From is the header From address (normalised), "" when there is none.
	From   string
	Parsed *Parsed
	// Sender is the user's contact for From, nil when none (e.g. a message
	// from the user's own address).
	Sender *store.Contact
	// Features is what ingest established by itself: TLS from the envelope,
	// Received hops, List-Id, ARC seal presence, encryption class from the
	// MIME structure, protected headers, and the correspondent's history.
	Features privacyindex.MessageFeatures
}

// Verification is a Verifier's answer.
type Verification struct {
	Features privacyindex.MessageFeatures
	// Details is stored as Security.Verification; it must marshal to JSON.
	Details any
	// AfterStore, when set, runs once the message is stored for the first
	// time (not for a retry or duplicate), so that what the verifier learnt
	// (keys seen, how often) counts each message once.
	AfterStore func(ctx context.Context) error
}

// baseFeatures is what ingest itself sees, with no key and no DNS.
func baseFeatures(env Envelope, p *Parsed, inbound bool) privacyindex.MessageFeatures {
	s := p.Structure
	f := privacyindex.MessageFeatures{
		Encryption:       s.Encryption,
		Hops:             s.Hops,
		ProtectedHeaders: s.ProtectedHeaders,
		ListID:           s.ListID != "",
		ARCSealed:        s.ARCSealed,
	}
	if inbound {
		f.TLSVersion = text(env.TLSVersion, 32)
		f.TLSCipher = text(env.TLSCipher, 128)
	}
	return f
}

// verify runs the Verifier, if any, and returns the features and the
// security record.
func (in *Ingester) verify(ctx context.Context, vin VerifyInput, sec *Security) (privacyindex.MessageFeatures, func(context.Context) error, error) {
	f := vin.Features
	if in.verifier == nil {
		return f, nil, nil
	}
	v, err := in.callVerifier(ctx, vin)
	if err != nil {
		if ctx.Err() != nil {
			return f, nil, fmt.Errorf("ingest: verify: %w", errors.Join(err, ctx.Err()))
		}
		// A store blip would otherwise lose every verified fact (and
		// warnings) for good: better the sender retries.
		if errors.Is(err, store.ErrUnavailable) {
			return f, nil, fmt.Errorf("ingest: verify: %w", err)
		}
		in.log().Warn("ingest: verification failed; storing with ingest's own facts", "user", vin.UserID, "err", err)
		sec.VerifyError = text(err.Error(), 500)
		// The encryption class was checked on the data (a label alone is
		// not encryption); its algorithms and key sizes were not.
		f.Strength = privacyindex.StrengthWeak
		return f, nil, nil
	}
	if v.Details != nil {
		if b, err := json.Marshal(v.Details); err == nil {
			sec.Verification = b
		} else {
			sec.VerifyError = text("details not serialisable: "+err.Error(), 500)
		}
	}
	out := v.Features
	out.History = f.History // ingest owns the history
	return out, v.AfterStore, nil
}

// callVerifier turns a Verifier panic into an error: a bug there must not
// take the milter down nor lose the message.
func (in *Ingester) callVerifier(ctx context.Context, vin VerifyInput) (v Verification, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("verifier panic: %v", r)
		}
	}()
	return in.verifier.Verify(ctx, vin)
}

// messagePI is the single call site of the message PI model.
func messagePI(f privacyindex.MessageFeatures) (store.PI, error) {
	r := privacyindex.Message(f)
	details, err := json.Marshal(r)
	if err != nil {
		return store.PI{}, err
	}
	return store.PI{Version: r.Version, Score: r.Score, Band: r.Band, Warning: r.Warning, Details: details}, nil
}

// DecodeSecurity reads the Security JSON stored on a message.
func DecodeSecurity(b []byte) (Security, error) {
	var s Security
	if len(b) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("ingest: security facts: %w", err)
	}
	return s, nil
}
