package ingest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

// historyMessages is how many of the latest inbound messages from a
// correspondent make their history (fact X3).
const historyMessages = 10

// historyVersion is the version of the summary stored on contacts.
const historyVersion = 1

// senderHistory is what store.Contact.History holds: the few facts history
// needs from each of the latest inbound messages from the contact, oldest
// first. Kept as messages are stored, it spares each delivery reading and
// decoding up to ten earlier messages.
type senderHistory struct {
	Version  int            `json:"v"`
	Messages []historyEntry `json:"m"`
}

// historyEntry is one inbound message, as history sees it.
type historyEntry struct {
	// Key names the message by its raw hash (a prefix is enough): a retry
	// of the same bytes replaces its entry instead of counting twice, and
	// a re-verification finds it.
	Key        string                  `json:"k"`
	At         int64                   `json:"a"` // received, Unix ms: orders entries when contacts merge
	Encryption privacyindex.Encryption `json:"e,omitempty"`
	TLS        string                  `json:"t,omitempty"`
	Cipher     string                  `json:"c,omitempty"`
	DKIM       privacyindex.AuthResult `json:"d,omitempty"`
}

func historyKey(rawHash string) string {
	if len(rawHash) > 16 {
		return rawHash[:16]
	}
	return rawHash
}

func newHistoryEntry(rawHash string, atMs int64, f privacyindex.MessageFeatures) historyEntry {
	return historyEntry{Key: historyKey(rawHash), At: atMs, Encryption: f.Encryption, TLS: f.TLSVersion, Cipher: f.TLSCipher, DKIM: f.DKIM}
}

// emptyHistory is the summary of a contact ingest creates: no messages yet.
var emptyHistory = json.RawMessage(`{"v":1,"m":[]}`)

// decodeHistory reads a contact's summary; false when there is none (a
// contact written before summaries existed, or by a newer version).
func decodeHistory(c *store.Contact) ([]historyEntry, bool) {
	if c == nil || len(c.History) == 0 {
		return nil, false
	}
	var h senderHistory
	if json.Unmarshal(c.History, &h) != nil || h.Version != historyVersion {
		return nil, false
	}
	return h.Messages, true
}

func encodeHistory(es []historyEntry) (json.RawMessage, error) {
	if es == nil {
		es = []historyEntry{}
	}
	return json.Marshal(senderHistory{Version: historyVersion, Messages: es})
}

// withEntry adds e (or replaces the entry with its key) and keeps the
// latest historyMessages entries.
func withEntry(es []historyEntry, e historyEntry) []historyEntry {
	out := slices.DeleteFunc(slices.Clone(es), func(x historyEntry) bool { return x.Key == e.Key })
	out = append(out, e)
	return latest(out)
}

// latest orders entries by reception and keeps the last historyMessages.
func latest(es []historyEntry) []historyEntry {
	slices.SortStableFunc(es, func(a, b historyEntry) int { return cmp.Compare(a.At, b.At) })
	if len(es) > historyMessages {
		es = es[len(es)-historyMessages:]
	}
	return es
}

// summarise is fact X3's input: the usual classes of the entries.
func summarise(es []historyEntry) privacyindex.History {
	h := privacyindex.History{Messages: len(es)}
	if len(es) == 0 {
		return h
	}
	enc := map[privacyindex.Encryption]int{}
	tls := map[string]int{}
	cipher := map[string]int{}
	dkim, dkimKnown := 0, 0
	for _, e := range es {
		enc[e.Encryption]++
		tls[e.TLS]++
		cipher[e.Cipher]++
		// A DKIM check that could not complete (temperror) says nothing of
		// the sender: counting it as "not passing" would let a DNS outage
		// teach the history that DKIM fails, and a later forgery pass as
		// consistent (PI v1.1).
		switch e.DKIM {
		case privacyindex.AuthTempError:
			continue
		case privacyindex.AuthPass:
			dkim++
		}
		dkimKnown++
	}
	h.UsualEncryption = mode(enc, func(a, b privacyindex.Encryption) bool { return a > b })
	h.UsualTLS = mode(tls, func(a, b string) bool { return a > b })
	h.UsualTLSCipher = mode(cipher, func(a, b string) bool { return a > b })
	h.DKIMUsuallyPass = dkim*2 > dkimKnown
	return h
}

// mode returns the most frequent key; ties go to the key better says is greater.
func mode[K comparable](counts map[K]int, better func(a, b K) bool) K {
	var best K
	n := -1
	for k, c := range counts {
		if c > n || c == n && better(k, best) {
			best, n = k, c
		}
	}
	return best
}

// history returns the entries of sender's latest inbound messages: the
// summary on the contact, or, for a contact that has none yet (written
// before summaries existed), the newest messages of conv and, when conv is
// a group, of the 1:1 conversation with sender, read once here and then
// recorded with the next message.
func (in *Ingester) history(ctx context.Context, userID uuid.UUID, sender *store.Contact, conv store.Conversation) ([]historyEntry, error) {
	if sender == nil {
		return nil, nil
	}
	if es, ok := decodeHistory(sender); ok {
		return es, nil
	}
	convs := []store.Conversation{conv}
	if one := convKey([]uuid.UUID{sender.ID}); conv.Key != one {
		c, err := in.store.GetConversationByKey(ctx, userID, one)
		switch {
		case err == nil:
			convs = append(convs, c)
		case !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("ingest: history: %w", err)
		}
	}
	addrs := map[string]bool{}
	for _, ch := range sender.Channels {
		if ch.Protocol == "email" {
			addrs[ch.Address] = true
		}
	}
	var es []historyEntry
	for _, c := range convs {
		if c.MessageCount == 0 {
			continue
		}
		msgs, _, err := in.store.ListMessages(ctx, userID, c.ID, store.Page{Limit: historyMessages})
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return nil, fmt.Errorf("ingest: history: %w", err)
		}
		for _, m := range msgs {
			if !m.Inbound || !fromContact(m, sender.ID, addrs) || len(m.Security) == 0 {
				continue
			}
			var s Security
			if json.Unmarshal(m.Security, &s) != nil {
				continue
			}
			es = append(es, newHistoryEntry(m.RawHash, m.ReceivedAt.UnixMilli(), s.Features))
		}
	}
	// Both conversations may hold up to ten each, as the summary did not
	// exist: all count this once, the recorded summary keeps the latest.
	slices.SortStableFunc(es, func(a, b historyEntry) int { return cmp.Compare(a.At, b.At) })
	return es, nil
}

func fromContact(m store.Message, contactID uuid.UUID, addrs map[string]bool) bool {
	for _, p := range m.Participants {
		if p.Role != "from" {
			continue
		}
		if p.ContactID == contactID || addrs[p.Address] {
			return true
		}
	}
	return false
}

// recordHistory adds a stored inbound message to its sender's summary.
// Only the history is written (SetContactHistory): writing the whole
// contact back would undo keys, verifications or a delete recorded
// meanwhile. base is the history the message was compared with, the
// starting point of a contact without a summary.
func (in *Ingester) recordHistory(ctx context.Context, userID, contactID uuid.UUID, base []historyEntry, e historyEntry) error {
	c, err := in.store.GetContact(ctx, userID, contactID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted or merged meanwhile
	}
	if err != nil {
		return fmt.Errorf("ingest: record history: %w", err)
	}
	es, ok := decodeHistory(&c)
	if !ok {
		es = base
	}
	h, err := encodeHistory(withEntry(es, e))
	if err != nil {
		return fmt.Errorf("ingest: record history: %w", err)
	}
	err = in.store.SetContactHistory(ctx, userID, contactID, h)
	if err != nil && !errors.Is(err, store.ErrNotFound) { // not found: deleted or merged meanwhile
		return fmt.Errorf("ingest: record history: %w", err)
	}
	return nil
}

// UpdateHistory brings the entry of a stored inbound message in its
// sender's summary up to date with its features, once a pending check
// has completed (keytrust.Reverify): a DKIM result that was pending then
// counts. A message no longer in the summary changes nothing.
func UpdateHistory(ctx context.Context, st store.Contacts, m store.Message, f privacyindex.MessageFeatures) error {
	if !m.Inbound {
		return nil
	}
	for _, p := range m.Participants {
		if p.Role != "from" || p.ContactID == uuid.Nil {
			continue
		}
		c, err := st.GetContact(ctx, m.UserID, p.ContactID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("ingest: update history: %w", err)
		}
		es, ok := decodeHistory(&c)
		i := slices.IndexFunc(es, func(e historyEntry) bool { return e.Key == historyKey(m.RawHash) })
		if !ok || i < 0 {
			return nil
		}
		e := newHistoryEntry(m.RawHash, es[i].At, f)
		if e == es[i] {
			return nil
		}
		es[i] = e
		h, err := encodeHistory(es)
		if err != nil {
			return fmt.Errorf("ingest: update history: %w", err)
		}
		err = st.SetContactHistory(ctx, m.UserID, p.ContactID, h)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("ingest: update history: %w", err)
		}
		return nil
	}
	return nil
}

// mergeHistory is the summary of two contacts merged into one.
func mergeHistory(into, from *store.Contact) (json.RawMessage, error) {
	a, okA := decodeHistory(into)
	b, okB := decodeHistory(from)
	if !okA || !okB {
		return nil, nil // read from the messages once, at the next delivery
	}
	return encodeHistory(latest(append(slices.Clone(a), b...)))
}
