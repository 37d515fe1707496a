// Package ingest is the single path every message takes into the store,
// whatever brought it (the milter, `caliopen deliver`, an import, the API
// storing a sent message): parse, resolve participants to contacts, assign
// the conversation, gather security facts, compute the message PI, write
// idempotently.
//
// # Robustness
//
// A message that cannot be parsed is never an error and is never lost: its
// raw bytes are stored whole and byte-identical, and the message carries
// whatever could be read (Security.ParseProblems says what could not).
//
// # Idempotency
//
// The dedup key of a delivery is "in:" + the hex SHA-256 of the raw bytes
// (the blob hash); a message the user sent is "out:" + the same. The key is
// stable across Postfix retries: the queue id changes but the bytes the
// milter sees do not (Postfix's own Received header is not passed to the
// milter; an adapter must not add per-attempt headers either). A sender's
// duplicate with the same bytes is stored once; one with different bytes
// (e.g. re-signed) is a different message. Message-ID is not used because it
// is optional, forgeable, and shared by a list copy and a direct copy that
// differ in content. The store makes (user, key) unique, also under
// concurrent delivery.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
)

// Store is the part of the store ingest writes to: the mailbox, contacts and
// blobs, and the directory reads that tell a user's own addresses.
type Store interface {
	store.Mailbox
	store.Contacts
	store.Blobs
	GetDomain(ctx context.Context, name string) (store.Domain, error)
	ListAddresses(ctx context.Context, userID uuid.UUID) ([]store.Address, error)
}

// Quota tells whether a user's mailbox can take adding more bytes.
type Quota interface {
	Check(ctx context.Context, userID uuid.UUID, adding int64) error
}

// Config is what an Ingester is built from: settings and dependencies.
type Config struct {
	// Store is where messages go. Required.
	Store Store
	// Resolver expands envelope recipients to hosted users and tells which
	// participant addresses are the user's own. Required.
	Resolver *resolve.Resolver
	// Verifier checks authenticity (DKIM, SPF, DMARC, OpenPGP); nil keeps
	// only what ingest sees itself.
	Verifier Verifier
	// Quota refuses mail for a user whose mailbox it would take over quota
	// (an error wrapping store.ErrOverQuota, before anything is stored for
	// anyone); nil: no quota. *quota.Checker implements it.
	Quota Quota
	// Logger: nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Ingester stores messages. One Ingester serves concurrent calls.
type Ingester struct {
	store    Store
	resolver *resolve.Resolver
	verifier Verifier
	quota    Quota
	logger   *slog.Logger
	clock    func() time.Time
}

// New returns an Ingester, or an error naming a missing dependency.
func New(cfg Config) (*Ingester, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("ingest: Config.Store is required")
	case cfg.Resolver == nil:
		return nil, errors.New("ingest: Config.Resolver is required")
	}
	in := &Ingester{store: cfg.Store, resolver: cfg.Resolver, verifier: cfg.Verifier, quota: cfg.Quota, logger: cfg.Logger, clock: cfg.Now}
	if in.logger == nil {
		in.logger = slog.New(slog.DiscardHandler)
	}
	if in.clock == nil {
		in.clock = time.Now
	}
	return in, nil
}

func (in *Ingester) log() *slog.Logger { return in.logger }

func (in *Ingester) now() time.Time { return in.clock() }

// dedupKey is the idempotency key of a message in one user's mailbox.
func dedupKey(inbound bool, rawHash string) string {
	if inbound {
		return "in:" + rawHash
	}
	return "out:" + rawHash
}

// msTime is t in UTC at millisecond precision (Cassandra's).
func msTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Millisecond)
}

// Ingest stores raw for every hosted user its envelope recipients reach.
// Recipients that are not hosted are ignored; when none is, the Result is
// empty and the error nil. Any store failure is returned (wrapped): the
// caller must then acknowledge nothing (4xx); a retry is safe since delivery
// is idempotent. A message that cannot be parsed is not an error.
func (in *Ingester) Ingest(ctx context.Context, env Envelope, raw []byte) (Result, error) {
	users, elsewhere, err := in.recipients(ctx, env.Recipients)
	if err != nil {
		return Result{}, err
	}
	if len(users) == 0 {
		in.log().Debug("ingest: no hosted recipient", "queue_id", env.QueueID, "recipients", env.Recipients)
		return Result{}, nil
	}
	m, err := in.prepare(ctx, raw, env.OwnReceived)
	if err != nil {
		return Result{}, err
	}
	defer m.blobStored() // never leave the blob write running past the return
	at := env.ReceivedAt
	if at.IsZero() {
		at = in.now()
	}
	m.at = msTime(at)
	m.env = env
	m.inbound = true
	m.protocol = env.Protocol
	if m.protocol == "" {
		m.protocol = "email"
	}
	if in.quota != nil {
		// All or nothing: the sender gets one answer for the message, and
		// a retry must not find it stored for some recipients only. A
		// recipient who already holds it (the retry of a delivery that
		// failed for another) adds nothing, whatever their usage.
		for _, u := range users {
			if err := in.quota.Check(ctx, u, int64(len(raw))); err != nil {
				if errors.Is(err, store.ErrOverQuota) && in.holds(ctx, u, m) {
					continue
				}
				return Result{}, fmt.Errorf("ingest: %w", err)
			}
		}
	}
	own := newOwnership(in)
	var res Result
	for _, u := range users {
		d, err := in.deliver(ctx, u, m, own, nil)
		if err != nil {
			return Result{}, err
		}
		res.Deliveries = append(res.Deliveries, d)
	}
	res.Complete = !elsewhere
	if len(m.parsed.Problems) > 0 {
		in.log().Info("ingest: stored with parse problems", "queue_id", env.QueueID, "raw", m.hash, "problems", len(m.parsed.Problems))
	}
	return res, nil
}

// StoreSent stores a message the user sent (Inbound=false, read) in the
// conversation with its recipients. recipients are the envelope recipients
// (they include Bcc recipients absent from the header); nil means those of
// the header. Storing the same bytes again returns the stored message.
func (in *Ingester) StoreSent(ctx context.Context, userID uuid.UUID, raw []byte, recipients []string) (Delivery, error) {
	m, err := in.prepare(ctx, raw, 0)
	if err != nil {
		return Delivery{}, err
	}
	defer m.blobStored() // never leave the blob write running past the return
	m.at = msTime(in.now())
	m.protocol = "email"
	return in.deliver(ctx, userID, m, newOwnership(in), recipients)
}

// recipients resolves envelope recipients to users, in order, once each,
// and reports whether some recipient also (or only) reaches addresses that
// are not hosted.
func (in *Ingester) recipients(ctx context.Context, rcpts []string) (users []uuid.UUID, elsewhere bool, err error) {
	seen := map[uuid.UUID]bool{}
	for _, r := range rcpts {
		as, out, err := in.resolver.Reach(ctx, r)
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
			elsewhere = true
			continue
		case err != nil:
			return nil, false, fmt.Errorf("ingest: recipient %q: %w", r, err)
		}
		elsewhere = elsewhere || out
		for _, a := range as {
			if !seen[a.UserID] {
				seen[a.UserID] = true
				users = append(users, a.UserID)
			}
		}
	}
	return users, elsewhere || len(rcpts) == 0, nil
}

// prepared is one message, parsed, with its blob being stored.
type prepared struct {
	raw      []byte
	hash     string
	parsed   *Parsed
	env      Envelope
	at       time.Time
	inbound  bool
	protocol string

	// The blob write runs while the message is parsed and its contacts and
	// conversation are resolved, so that it shares their group commit
	// instead of costing a commit (and an fsync) of its own on the
	// delivery's critical path. blobStored waits for it: every message put
	// comes after it, so no message ever points to a blob not stored.
	blobDone chan struct{}
	blobHash string // what PutBlob returned
	blobErr  error
}

// blobStored waits for the raw message's blob write and returns its error.
func (m *prepared) blobStored() error {
	<-m.blobDone
	switch {
	case m.blobErr != nil:
		return fmt.Errorf("ingest: store raw message: %w", m.blobErr)
	case m.blobHash != m.hash:
		return fmt.Errorf("ingest: store returned blob hash %q, want %q: %w", m.blobHash, m.hash, store.ErrUnavailable)
	}
	return nil
}

func (in *Ingester) prepare(ctx context.Context, raw []byte, ownReceived int) (*prepared, error) {
	if raw == nil {
		raw = []byte{}
	}
	m := &prepared{raw: raw, blobDone: make(chan struct{})}
	go func() {
		defer close(m.blobDone)
		defer func() { // a store bug must not take the process down from here
			if r := recover(); r != nil {
				m.blobErr = fmt.Errorf("panic: %v: %w", r, store.ErrUnavailable)
			}
		}()
		m.blobHash, m.blobErr = in.store.PutBlob(ctx, raw)
	}()
	m.hash = store.BlobHash(raw)
	p, err := parseSafely(raw, ownReceived)
	if err != nil {
		in.log().Error("ingest: parser failure; storing the raw message only", "raw", m.hash, "err", err)
	}
	m.parsed = p
	return m, nil
}

// parseSafely turns a parser panic (a bug) into a message with no parsed
// content: the raw bytes are still stored.
func parseSafely(raw []byte, ownReceived int) (p *Parsed, err error) {
	defer func() {
		if r := recover(); r != nil {
			p = &Parsed{Problems: []string{"parser failure: the message is kept raw only"}}
			err = fmt.Errorf("parse panic: %v", r)
		}
	}()
	return Parse(raw, ownReceived), nil
}

// holds reports whether the user already has m (found by its Message-ID
// with the same bytes); false when that cannot be told.
func (in *Ingester) holds(ctx context.Context, userID uuid.UUID, m *prepared) bool {
	if m.parsed.MessageID == "" {
		return false
	}
	old, err := in.store.FindMessageByMessageID(ctx, userID, m.parsed.MessageID)
	return err == nil && old.RawHash == m.hash && old.Inbound == m.inbound
}

// deliver stores m for one user. sentTo is nil for inbound messages, else
// the envelope recipients of a sent one.
func (in *Ingester) deliver(ctx context.Context, userID uuid.UUID, m *prepared, own *ownership, sentTo []string) (Delivery, error) {
	p := m.parsed
	key := dedupKey(m.inbound, m.hash)

	// A retry is usually found by its Message-ID before any work is redone.
	if p.MessageID != "" {
		old, err := in.store.FindMessageByMessageID(ctx, userID, p.MessageID)
		switch {
		case err == nil && old.RawHash == m.hash && old.Inbound == m.inbound:
			if err := m.blobStored(); err != nil {
				return Delivery{}, err
			}
			// Still pending (its first delivery failed for another user
			// before the retry queue heard of it): say so again.
			sec, _ := DecodeSecurity(old.Security)
			return Delivery{UserID: userID, MessageID: old.ID, ConversationID: old.ConversationID,
				Pending: len(sec.Features.Pending()) > 0}, nil
		case err == nil, errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		default:
			return Delivery{}, fmt.Errorf("ingest: find message: %w", err)
		}
	}

	pp, conv, err := in.peopleAndConversation(ctx, userID, m.roles(sentTo), own, p, m.at)
	if err != nil {
		return Delivery{}, err
	}

	sec := Security{Version: SecurityVersion, Structure: p.Structure, ParseProblems: p.Problems}
	features := baseFeatures(m.env, p, m.inbound)
	var (
		afterStore func(context.Context) error
		history    []historyEntry
	)
	if m.inbound {
		sec.Envelope = envelopeFacts(m.env)
		if history, err = in.history(ctx, userID, pp.sender, conv); err != nil {
			return Delivery{}, err
		}
		features.History = summarise(history)
		features, afterStore, err = in.verify(ctx, VerifyInput{
			UserID: userID, Envelope: m.env, Raw: m.raw, RawHash: m.hash, From: pp.from, Parsed: p,
			Sender: pp.sender, Features: features,
		}, &sec)
		if err != nil {
			return Delivery{}, err
		}
	}
	sec.Features = features
	secJSON, err := json.Marshal(sec)
	if err != nil {
		return Delivery{}, fmt.Errorf("ingest: security facts: %w", err)
	}
	pi, err := messagePI(features)
	if err != nil {
		return Delivery{}, fmt.Errorf("ingest: message PI: %w", err)
	}

	id, err := uuid.NewV7()
	if err != nil {
		return Delivery{}, fmt.Errorf("ingest: message id: %w", err)
	}
	date := m.at
	if !p.Date.IsZero() {
		date = msTime(p.Date)
	}
	msg := store.Message{
		ID: id, UserID: userID, ConversationID: conv.ID, DedupKey: key,
		Protocol: m.protocol, Inbound: m.inbound, Date: date, ReceivedAt: m.at,
		MessageID: p.MessageID, InReplyTo: p.InReplyTo, References: p.References,
		Subject: p.Subject, Participants: pp.participants, Excerpt: p.Excerpt,
		Attachments: p.Attachments, // the bodies stay in the raw blob only (the API reads them there)
		Flags:       store.Flags{Read: !m.inbound, Tags: []string{}},
		Security:    secJSON, PI: pi, RawHash: m.hash, RawSize: int64(len(m.raw)),
	}
	if err := m.blobStored(); err != nil {
		return Delivery{}, err
	}
	// The sender's history learns this message in a write that runs with
	// the message's own, so that both share one group commit. Keyed by the
	// raw hash, the entry of a message that turns out to be a duplicate (or
	// whose put fails and is retried) is the same entry, never a second one.
	var historyDone chan error
	if m.inbound && pp.sender != nil {
		historyDone = make(chan error, 1)
		e := newHistoryEntry(m.hash, m.at.UnixMilli(), features)
		go func() {
			defer func() { // a store bug must not take the process down from here
				if r := recover(); r != nil {
					historyDone <- fmt.Errorf("panic: %v", r)
				}
			}()
			historyDone <- in.recordHistory(ctx, userID, pp.sender.ID, history, e)
		}()
	}
	stored, created, err := in.store.PutMessage(ctx, msg)
	if historyDone != nil {
		// Only the history misses a message when this fails: it is a sample.
		if herr := <-historyDone; herr != nil {
			in.log().Warn("ingest: sender history not updated", "user", userID, "contact", pp.sender.ID, "err", herr)
		}
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("ingest: store message for %s: %w", userID, err)
	}
	if created && afterStore != nil {
		// The message is stored: a failure here only loses what the
		// verifier wanted to remember, never the message.
		if err := afterStore(ctx); err != nil {
			in.log().Warn("ingest: after-store step failed", "user", userID, "message", stored.ID, "err", err)
		}
	}
	in.log().Debug("ingest: delivered", "user", userID, "message", stored.ID, "conversation", stored.ConversationID, "created", created)
	return Delivery{UserID: userID, MessageID: stored.ID, ConversationID: stored.ConversationID, Created: created,
		Pending: len(features.Pending()) > 0}, nil
}

// roles lists the participants of m by role. An inbound message without a
// From takes the envelope sender as its author.
func (m *prepared) roles(sentTo []string) []role {
	p := m.parsed
	from := p.From
	if len(from) == 0 && m.inbound && m.env.MailFrom != "" {
		if a, ok := normAddr(m.env.MailFrom); ok {
			from = []Addr{{Address: a}}
		}
	}
	rs := []role{
		{"from", from, true},
		{"sender", p.Sender, false},
		{"reply-to", p.ReplyTo, false},
		{"to", p.To, true},
		{"cc", p.Cc, true},
	}
	if !m.inbound {
		bcc := slices.Clone(p.Bcc)
		listed := map[string]bool{}
		for _, l := range [][]Addr{p.To, p.Cc, p.Bcc} {
			for _, a := range l {
				listed[a.Address] = true
			}
		}
		for _, r := range sentTo {
			if a, ok := normAddr(r); ok && !listed[a] {
				listed[a] = true
				bcc = append(bcc, Addr{Address: a})
			}
		}
		rs = append(rs, role{"bcc", bcc, true})
	}
	return rs
}
