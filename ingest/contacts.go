package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// SelfKey is the conversation key of messages with no correspondent: only
// the user's own addresses (a note to self), or no readable address at all.
const SelfKey = "self"

// convKey is the conversation key of a set of correspondent contacts: their
// sorted IDs joined by ",". The same people make the same key whatever
// addresses or protocols they used.
func convKey(ids []uuid.UUID) string {
	if len(ids) == 0 {
		return SelfKey
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}

func sortedIDs(set map[uuid.UUID]bool) []uuid.UUID {
	ids := make([]uuid.UUID, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	return ids
}

// ownership tells whether an address is the user's own: one of their
// mailboxes, or an address that reaches them (alias, +extension, catch-all).
// It caches across the users of one message.
type ownership struct {
	in      *Ingester
	domains map[string]bool               // hosted?
	reaches map[string]map[uuid.UUID]bool // address → users it reaches
	mine    map[uuid.UUID]map[string]bool // user → mailbox addresses
}

func newOwnership(in *Ingester) *ownership {
	return &ownership{in: in, domains: map[string]bool{}, reaches: map[string]map[uuid.UUID]bool{}, mine: map[uuid.UUID]map[string]bool{}}
}

func (o *ownership) isOwn(ctx context.Context, userID uuid.UUID, addr string) (bool, error) {
	mine, ok := o.mine[userID]
	if !ok {
		as, err := o.in.store.ListAddresses(ctx, userID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, fmt.Errorf("ingest: addresses of %s: %w", userID, err)
		}
		mine = map[string]bool{}
		for _, a := range as {
			mine[a.Address] = true
		}
		o.mine[userID] = mine
	}
	if mine[addr] {
		return true, nil
	}
	if o.in.resolver == nil {
		return false, nil
	}
	users, ok := o.reaches[addr]
	if !ok {
		d := store.AddressDomain(addr)
		hosted, ok := o.domains[d]
		if !ok {
			_, err := o.in.store.GetDomain(ctx, d)
			switch {
			case err == nil:
				hosted = true
			case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
			default:
				return false, fmt.Errorf("ingest: domain %q: %w", d, err)
			}
			o.domains[d] = hosted
		}
		users = map[uuid.UUID]bool{}
		if hosted {
			as, err := o.in.resolver.Users(ctx, addr)
			switch {
			case err == nil:
				for _, a := range as {
					users[a.UserID] = true
				}
			case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
			default:
				return false, fmt.Errorf("ingest: resolve %q: %w", addr, err)
			}
		}
		o.reaches[addr] = users
	}
	return users[userID], nil
}

// people is the participants of one message for one user, resolved to
// contacts.
type people struct {
	participants   []store.Participant
	correspondents map[uuid.UUID]bool
	sender         *store.Contact // contact of the From address
	from           string         // From address
	// pending are new contacts not stored yet (resolvePeople with defer):
	// their IDs are already in participants and correspondents.
	pending []*store.Contact
}

// role is one header role and whether unknown addresses in it get a contact
// and count as correspondents.
type role struct {
	name  string
	addrs []Addr
	party bool
}

// resolvePeople resolves roles to the user's contacts. Addresses that are
// the user's own are kept as participants without a contact. In "party"
// roles (from, to, cc, bcc) an unknown address gets an automatic contact and
// counts as a correspondent; sender and reply-to only link to existing ones.
//
// With deferNew, an unknown party address gets a new contact that is not
// stored but listed in pending: the caller stores it (storePending).
func (in *Ingester) resolvePeople(ctx context.Context, userID uuid.UUID, roles []role, own *ownership, now time.Time, deferNew bool) (people, error) {
	pp := people{correspondents: map[uuid.UUID]bool{}}
	cache := map[string]*store.Contact{}
	for _, r := range roles {
		for _, a := range r.addrs {
			part := store.Participant{Role: r.name, Protocol: "email", Address: a.Address, Name: a.Name}
			mine, err := own.isOwn(ctx, userID, a.Address)
			if err != nil {
				return pp, err
			}
			var c *store.Contact
			if !mine {
				cached, seen := cache[a.Address]
				switch {
				case seen:
					c = cached
				case r.party && deferNew:
					if c, err = in.findContact(ctx, userID, a.Address); c == nil && err == nil {
						if c, err = newContact(userID, a, now); err == nil {
							pp.pending = append(pp.pending, c)
						}
					}
				case r.party:
					c, err = in.contactFor(ctx, userID, a, now)
				default:
					c, err = in.findContact(ctx, userID, a.Address)
				}
				if err != nil {
					return pp, err
				}
				if c != nil || r.party {
					cache[a.Address] = c
				}
			}
			if c != nil {
				part.ContactID = c.ID
				if r.party {
					pp.correspondents[c.ID] = true
				}
			}
			if r.name == "from" && pp.from == "" {
				pp.from = a.Address
				pp.sender = c
			}
			pp.participants = append(pp.participants, part)
		}
	}
	return pp, nil
}

func (in *Ingester) findContact(ctx context.Context, userID uuid.UUID, addr string) (*store.Contact, error) {
	c, err := in.store.FindContactByChannel(ctx, userID, "email", addr)
	switch {
	case err == nil:
		return &c, nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return nil, nil
	}
	return nil, fmt.Errorf("ingest: contact for %q: %w", addr, err)
}

// contactFor returns the user's contact for a, creating it when unknown.
// Concurrent creators race on the store's channel index: the loser gets
// ErrExists and reads the winner's contact.
func (in *Ingester) contactFor(ctx context.Context, userID uuid.UUID, a Addr, now time.Time) (*store.Contact, error) {
	if c, err := in.findContact(ctx, userID, a.Address); c != nil || err != nil {
		return c, err
	}
	c, err := newContact(userID, a, now)
	if err != nil {
		return nil, err
	}
	err = in.store.PutContact(ctx, *c)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, store.ErrExists):
		c, err := in.findContact(ctx, userID, a.Address)
		if err == nil && c == nil {
			err = fmt.Errorf("ingest: contact for %q: exists but cannot be found: %w", a.Address, store.ErrUnavailable)
		}
		return c, err
	case errors.Is(err, store.ErrInvalid):
		// An address the store does not accept as a channel: a participant without contact.
		in.log().Debug("ingest: address not accepted as a contact channel", "address", a.Address, "err", err)
		return nil, nil
	}
	return nil, fmt.Errorf("ingest: create contact for %q: %w", a.Address, err)
}

// newContact is the automatic contact of an unknown address, not stored.
func newContact(userID uuid.UUID, a Addr, now time.Time) (*store.Contact, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("ingest: new contact id: %w", err)
	}
	name := a.Name
	if name == "" {
		name = a.Address
	}
	return &store.Contact{
		ID: id, UserID: userID, Name: name,
		Channels:  []store.Channel{{Protocol: "email", Address: a.Address, LastUsed: now}},
		Keys:      []store.PublicKey{},
		CreatedAt: now, UpdatedAt: now,
		History: emptyHistory, // a new contact has no earlier message to read
	}, nil
}

// peopleAndConversation resolves the participants of a message and its
// conversation. A message from or to new people needs their contacts and
// then a new conversation keyed by their IDs: both are written at once
// (their IDs are chosen here), so that they share one group commit instead
// of costing two in a row. When a contact cannot be stored as planned (a
// concurrent delivery created it first, or the store refuses the address),
// the conversation made for it is removed, unused, and everything is
// resolved again one step after the other, as without this shortcut.
func (in *Ingester) peopleAndConversation(ctx context.Context, userID uuid.UUID, roles []role, own *ownership, p *Parsed, at time.Time) (people, store.Conversation, error) {
	pp, err := in.resolvePeople(ctx, userID, roles, own, at, true)
	if err != nil {
		return pp, store.Conversation{}, err
	}
	if len(pp.pending) == 0 {
		conv, err := in.conversation(ctx, userID, pp, p, at)
		return pp, conv, err
	}
	errs := make([]error, len(pp.pending))
	var wg sync.WaitGroup
	for i, c := range pp.pending {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { // a store bug must not take the process down from here
				if r := recover(); r != nil {
					errs[i] = fmt.Errorf("panic: %v: %w", r, store.ErrUnavailable)
				}
			}()
			errs[i] = in.store.PutContact(ctx, *c)
		}()
	}
	conv, convErr := in.conversation(ctx, userID, pp, p, at)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// The conversation is keyed by a contact that does not exist: no
		// one else can reach it, and no message is in it yet.
		if convErr == nil {
			if derr := in.store.DeleteConversation(ctx, userID, conv.ID); derr != nil && !errors.Is(derr, store.ErrNotFound) {
				return pp, store.Conversation{}, fmt.Errorf("ingest: drop unused conversation: %w", derr)
			}
		}
		pp, err = in.resolvePeople(ctx, userID, roles, own, at, false)
		if err != nil {
			return pp, store.Conversation{}, err
		}
		conv, convErr = in.conversation(ctx, userID, pp, p, at)
	}
	pp.pending = nil
	return pp, conv, convErr
}

// maxThreadLookups bounds the References followed to find a thread.
const maxThreadLookups = 5

// conversation picks the user's conversation for a message: the one keyed
// by its set of correspondents, except that a reply whose correspondents all
// belong to the conversation of the message it answers (someone answering
// only some members of a group) stays in that conversation.
func (in *Ingester) conversation(ctx context.Context, userID uuid.UUID, pp people, p *Parsed, at time.Time) (store.Conversation, error) {
	ids := sortedIDs(pp.correspondents)
	key := convKey(ids)

	// With no correspondent (From is one of the user's own addresses, which
	// anyone can forge) thread headers are not followed: every thread would
	// otherwise "contain" the empty set of people.
	var refs []string
	if len(ids) > 0 {
		refs = slices.Clone(p.InReplyTo)
		for i := len(p.References) - 1; i >= 0; i-- {
			refs = append(refs, p.References[i])
		}
	}
	seen := map[string]bool{}
	lookups := 0
	for _, ref := range refs {
		if seen[ref] || lookups >= maxThreadLookups {
			continue
		}
		seen[ref] = true
		lookups++
		m, err := in.store.FindMessageByMessageID(ctx, userID, ref)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
			continue
		}
		if err != nil {
			return store.Conversation{}, fmt.Errorf("ingest: thread %q: %w", ref, err)
		}
		c, err := in.store.GetConversation(ctx, userID, m.ConversationID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return store.Conversation{}, fmt.Errorf("ingest: thread conversation: %w", err)
		}
		if c.Key == key || subset(ids, c.ContactIDs) {
			return c, nil
		}
		break // the thread is known but these people are not all in it
	}

	// Most messages go to an existing conversation: a read, not a write.
	if c, err := in.store.GetConversationByKey(ctx, userID, key); err == nil {
		return c, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Conversation{}, fmt.Errorf("ingest: conversation %q: %w", key, err)
	}
	var cparts []store.Participant
	done := map[uuid.UUID]bool{}
	for _, part := range pp.participants {
		if part.ContactID == uuid.Nil || !pp.correspondents[part.ContactID] || done[part.ContactID] {
			continue
		}
		done[part.ContactID] = true
		cp := part
		cp.Role = ""
		cparts = append(cparts, cp)
	}
	c, err := in.store.GetOrCreateConversation(ctx, store.Conversation{
		UserID: userID, Key: key, ContactIDs: ids, Participants: cparts,
		Subject: p.Subject, CreatedAt: at,
	})
	if err != nil {
		return store.Conversation{}, fmt.Errorf("ingest: conversation %q: %w", key, err)
	}
	return c, nil
}

func subset(ids, of []uuid.UUID) bool {
	for _, id := range ids {
		if !slices.Contains(of, id) {
			return false
		}
	}
	return true
}

// MergeContacts merges contact from into contact into (same person): from's
// channels and keys move to into, every conversation with from is re-keyed
// to into, and when that re-keyed conversation already exists (e.g. "from"
// alone and "into" alone) its messages move into the existing one, keeping
// their IDs, flags and dedup keys. Finally from is deleted.
//
// It is not atomic (the store has no transactions) but it is safe to run
// again with the same arguments after a failure: every step is idempotent
// and a half-merged state (from without channels) is finished by a rerun.
// A message being moved is deleted, then put back in its new conversation;
// if that put fails the message is put back where it was.
func (in *Ingester) MergeContacts(ctx context.Context, userID, into, from uuid.UUID) error {
	if into == from {
		return fmt.Errorf("ingest: merge a contact into itself: %w", store.ErrInvalid)
	}
	ci, err := in.store.GetContact(ctx, userID, into)
	if err != nil {
		return fmt.Errorf("ingest: merge into %s: %w", into, err)
	}
	cf, err := in.store.GetContact(ctx, userID, from)
	if err != nil {
		return fmt.Errorf("ingest: merge from %s: %w", from, err)
	}
	now := in.now()

	// 1. Channels and keys. The channel index allows one owner per channel:
	// empty from first, then give them to into.
	merged := ci
	for _, ch := range cf.Channels {
		if !slices.ContainsFunc(merged.Channels, func(c store.Channel) bool {
			return c.Protocol == ch.Protocol && c.Address == ch.Address
		}) {
			merged.Channels = append(merged.Channels, ch)
		}
	}
	for _, k := range cf.Keys {
		if !slices.ContainsFunc(merged.Keys, func(x store.PublicKey) bool { return x.Fingerprint == k.Fingerprint }) {
			merged.Keys = append(merged.Keys, k)
		}
	}
	if merged.Name == "" {
		merged.Name = cf.Name
	}
	if merged.History, err = mergeHistory(&ci, &cf); err != nil {
		return fmt.Errorf("ingest: merge: history: %w", err)
	}
	merged.UpdatedAt = now
	if len(cf.Channels) > 0 || len(cf.Keys) > 0 {
		emptied := cf
		emptied.Channels, emptied.Keys, emptied.UpdatedAt = []store.Channel{}, []store.PublicKey{}, now
		if err := in.store.PutContact(ctx, emptied); err != nil {
			return fmt.Errorf("ingest: merge: empty %s: %w", from, err)
		}
	}
	if err := in.store.PutContact(ctx, merged); err != nil {
		if rerr := in.store.PutContact(ctx, cf); rerr != nil {
			in.log().Error("ingest: merge: cannot restore contact", "contact", from, "err", rerr)
		}
		return fmt.Errorf("ingest: merge: update %s: %w", into, err)
	}

	// 2. Conversations with from: re-key, or fold into the existing one.
	var affected []store.Conversation
	cursor := ""
	for {
		page, next, err := in.store.ListConversations(ctx, userID, store.Page{Limit: store.MaxLimit, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("ingest: merge: list conversations: %w", err)
		}
		for _, c := range page {
			if slices.Contains(c.ContactIDs, from) {
				affected = append(affected, c)
			}
		}
		if next == "" || len(page) == 0 {
			break
		}
		cursor = next
	}
	for _, c := range affected {
		if err := in.rekey(ctx, userID, c, into, from); err != nil {
			return err
		}
	}

	// 3. from is gone.
	if err := in.store.DeleteContact(ctx, userID, from); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("ingest: merge: delete %s: %w", from, err)
	}
	return nil
}

// AddChannel gives contact contactID one more channel (an address the user
// says is theirs). When an automatic contact (one with only that channel)
// already holds it, that contact is merged into contactID, so its
// conversations join the contact's. When a contact with other channels holds
// it, AddChannel refuses with store.ErrExists: merging two curated contacts
// is the user's explicit MergeContacts.
func (in *Ingester) AddChannel(ctx context.Context, userID, contactID uuid.UUID, ch store.Channel) error {
	ch.Protocol = strings.ToLower(strings.TrimSpace(ch.Protocol))
	if ch.Protocol == "email" {
		a, ok := normAddr(ch.Address)
		if !ok {
			return fmt.Errorf("ingest: channel address %q: %w", ch.Address, store.ErrInvalid)
		}
		ch.Address = a
	}
	owner, err := in.store.FindContactByChannel(ctx, userID, ch.Protocol, ch.Address)
	switch {
	case err == nil && owner.ID == contactID:
		return nil
	case err == nil && len(owner.Channels) <= 1:
		return in.MergeContacts(ctx, userID, contactID, owner.ID)
	case err == nil:
		return fmt.Errorf("ingest: %s:%s belongs to contact %s: %w", ch.Protocol, ch.Address, owner.ID, store.ErrExists)
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("ingest: channel owner: %w", err)
	}
	c, err := in.store.GetContact(ctx, userID, contactID)
	if err != nil {
		return fmt.Errorf("ingest: contact %s: %w", contactID, err)
	}
	c.Channels = append(c.Channels, ch)
	c.UpdatedAt = in.now()
	if err := in.store.PutContact(ctx, c); err != nil {
		return fmt.Errorf("ingest: add channel: %w", err)
	}
	return nil
}

func replaceContact(ids []uuid.UUID, into, from uuid.UUID) []uuid.UUID {
	set := map[uuid.UUID]bool{}
	for _, id := range ids {
		if id == from {
			id = into
		}
		set[id] = true
	}
	return sortedIDs(set)
}

func replaceInParticipants(ps []store.Participant, into, from uuid.UUID, dedupe bool) []store.Participant {
	out := make([]store.Participant, 0, len(ps))
	seen := map[uuid.UUID]bool{}
	for _, p := range ps {
		if p.ContactID == from {
			p.ContactID = into
		}
		if dedupe && p.ContactID != uuid.Nil {
			if seen[p.ContactID] {
				continue
			}
			seen[p.ContactID] = true
		}
		out = append(out, p)
	}
	return out
}

func (in *Ingester) rekey(ctx context.Context, userID uuid.UUID, c store.Conversation, into, from uuid.UUID) error {
	ids := replaceContact(c.ContactIDs, into, from)
	key := convKey(ids)
	target, err := in.store.GetConversationByKey(ctx, userID, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.Key, c.ContactIDs = key, ids
		c.Participants = replaceInParticipants(c.Participants, into, from, true)
		if err := in.store.UpdateConversation(ctx, c); err != nil {
			return fmt.Errorf("ingest: merge: re-key conversation %s: %w", c.ID, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("ingest: merge: conversation %q: %w", key, err)
	case target.ID == c.ID:
		return nil
	}
	// Move every message of c into target, then drop c.
	for {
		msgs, _, err := in.store.ListMessages(ctx, userID, c.ID, store.Page{Limit: 100})
		if err != nil {
			return fmt.Errorf("ingest: merge: messages of %s: %w", c.ID, err)
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			if err := in.moveMessage(ctx, m, target.ID, into, from); err != nil {
				return err
			}
		}
	}
	if err := in.store.DeleteConversation(ctx, userID, c.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("ingest: merge: delete conversation %s: %w", c.ID, err)
	}
	return nil
}

func (in *Ingester) moveMessage(ctx context.Context, m store.Message, to, into, from uuid.UUID) error {
	if m.DedupKey == "" { // an engine that does not return it: ingest's keys derive from the raw hash
		m.DedupKey = dedupKey(m.Inbound, m.RawHash)
	}
	moved := m
	moved.ConversationID = to
	moved.Participants = replaceInParticipants(m.Participants, into, from, false)
	// The delete may give back the blob's last reference, which deletes
	// it: keep the bytes to store them again for the put.
	raw, err := in.store.GetBlob(ctx, m.RawHash)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("ingest: merge: move message %s: %w", m.ID, err)
	}
	// Delete then put (the dedup key must be free for the put): once the
	// delete is done, a cancelled request must not stop the put halfway.
	ctx = context.WithoutCancel(ctx)
	if err := in.store.DeleteMessage(ctx, m.UserID, m.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("ingest: merge: move message %s: %w", m.ID, err)
	}
	if raw != nil {
		if _, err := in.store.PutBlob(ctx, raw); err != nil {
			in.log().Error("ingest: merge: storing the raw message again failed", "message", m.ID, "raw", m.RawHash, "err", err)
		}
	}
	if _, _, err := in.store.PutMessage(ctx, moved); err != nil {
		if _, _, rerr := in.store.PutMessage(ctx, m); rerr != nil {
			in.log().Error("ingest: merge: message lost from its conversation; its raw blob remains",
				"message", m.ID, "raw", m.RawHash, "err", rerr)
		}
		return fmt.Errorf("ingest: merge: move message %s: %w", m.ID, err)
	}
	return nil
}
