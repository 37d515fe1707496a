package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

// DomainFacts tells the Privacy Index what it knows of mail domains. It is
// optional: without it the API claims nothing it has not seen (no TLS known
// for our deliveries, no inbound policy), which scores low but honestly.
type DomainFacts interface {
	// Delivery is what our own deliveries to domain achieved (TLS version
	// and cipher, "" for none or never) and the domain's published posture.
	Delivery(ctx context.Context, domain string) (tlsVersion, tlsCipher string, posture privacyindex.Posture)
	// InboundPolicy: domain (one of ours) enforces MTA-STS or DANE inbound.
	InboundPolicy(ctx context.Context, domain string) bool
}

// piView is a conversation's PI as the model computes it.
type piView = privacyindex.ConversationResult

// Windows and bounds of the read-time PI computations.
const (
	contactWindow = 180 * 24 * time.Hour // the contact model's window
	trafficWindow = 90 * 24 * time.Hour  // the account model's traffic window
	// observeConversations bounds the conversations read to observe
	// contacts (most recently active first), observeMessages the messages
	// read in each: a contact or account PI costs at most their product.
	observeConversations = 200
	observeMessages      = 50
)

func scored(m store.Message) (privacyindex.ScoredMessage, bool) {
	if m.PI.Version == 0 || m.PI.Band == "" {
		return privacyindex.ScoredMessage{}, false // never scored
	}
	return privacyindex.ScoredMessage{At: m.ReceivedAt, Score: m.PI.Score, Warning: m.PI.Warning, Inbound: m.Inbound}, true
}

func involves(m store.Message, contact uuid.UUID) bool {
	return slices.ContainsFunc(m.Participants, func(p store.Participant) bool { return p.ContactID == contact })
}

// conversationPI is the weakest link: each participant's observed PI over
// the conversation's recent messages that involve them, and no more than the
// mean of those messages. A participant's traffic in other conversations is
// not read here, to keep a conversation list at a bounded cost; the contact's
// own page (GET /contacts/{id}/privacy) reads across conversations.
func conversationPI(conv store.Conversation, recent []store.Message, now time.Time) piView {
	var in privacyindex.ConversationInput
	for _, m := range recent {
		if sm, ok := scored(m); ok {
			in.Messages = append(in.Messages, sm)
		}
	}
	for _, cid := range conv.ContactIDs {
		var msgs []privacyindex.ScoredMessage
		for _, m := range recent {
			if sm, ok := scored(m); ok && involves(m, cid) {
				msgs = append(msgs, sm)
			}
		}
		// Contact applies the model's warning cap to the observed mean.
		obs := privacyindex.Contact(privacyindex.ContactInput{Messages: msgs, Now: now})
		if !obs.Observed {
			continue
		}
		in.Participants = append(in.Participants, privacyindex.ParticipantScore{ID: cid.String(), Score: obs.Score})
	}
	return privacyindex.Conversation(in)
}

// observation is what the recent traffic says about one contact.
type observation struct {
	msgs      []privacyindex.ScoredMessage
	traffic   int // messages in the account's traffic window
	channels  map[privacyindex.ChannelRef]int
	current   privacyindex.ChannelRef // channel of the most recent message
	currentAt time.Time
}

// observe reads the user's recent traffic (bounded: the most recently
// active conversations within the contact window) and groups the scored
// messages by contact. With only set, conversations without that contact
// are skipped unread.
func (s *Server) observe(ctx context.Context, uid uuid.UUID, now time.Time, only uuid.UUID) (map[uuid.UUID]*observation, error) {
	out := map[uuid.UUID]*observation{}
	cur := ""
	seen := 0
	for seen < observeConversations {
		convs, next, err := s.st.ListConversations(ctx, uid, store.Page{Limit: min(100, observeConversations-seen), Cursor: cur})
		if err != nil {
			return nil, fmt.Errorf("observe: list conversations: %w", err)
		}
		for _, conv := range convs {
			seen++
			if now.Sub(conv.LastActivity) > contactWindow {
				return out, nil // sorted by activity: the rest is older still
			}
			if only != uuid.Nil && !slices.Contains(conv.ContactIDs, only) {
				continue
			}
			msgs, _, err := s.st.ListMessages(ctx, uid, conv.ID, store.Page{Limit: observeMessages})
			if err != nil {
				return nil, fmt.Errorf("observe: list messages: %w", err)
			}
			for _, m := range msgs {
				sm, ok := scored(m)
				if !ok || now.Sub(m.ReceivedAt) > contactWindow {
					continue
				}
				counted := map[uuid.UUID]bool{}
				for _, p := range m.Participants {
					if p.ContactID == uuid.Nil || counted[p.ContactID] || (only != uuid.Nil && p.ContactID != only) {
						continue
					}
					counted[p.ContactID] = true
					o := out[p.ContactID]
					if o == nil {
						o = &observation{channels: map[privacyindex.ChannelRef]int{}}
						out[p.ContactID] = o
					}
					o.msgs = append(o.msgs, sm)
					if now.Sub(m.ReceivedAt) <= trafficWindow {
						o.traffic++
					}
					ref := privacyindex.ChannelRef{Protocol: p.Protocol, Address: strings.ToLower(p.Address)}
					o.channels[ref]++
					if m.ReceivedAt.After(o.currentAt) {
						o.current, o.currentAt = ref, m.ReceivedAt
					}
				}
			}
		}
		if next == "" || len(convs) == 0 {
			break
		}
		cur = next
	}
	return out, nil
}

// channelKey summarises a contact's keys for a channel's potential.
func channelKey(keys []store.PublicKey) privacyindex.ChannelKey {
	if len(keys) == 0 {
		return privacyindex.ChannelKey{}
	}
	ks := slices.Clone(keys)
	slices.SortStableFunc(ks, func(a, b store.PublicKey) int {
		if a.Verified != b.Verified {
			if a.Verified {
				return -1
			}
			return 1
		}
		return b.LastSeen.Compare(a.LastSeen)
	})
	k := ks[0]
	ck := privacyindex.ChannelKey{Strength: keyStrength(k)}
	switch {
	case k.Verified:
		ck.Trust = privacyindex.KeyVerified
	case k.Source == "wkd" || k.Source == "dns":
		ck.Trust = privacyindex.KeyDiscovered
	case k.SeenCount >= 3:
		ck.Trust = privacyindex.KeyConsistent
	default:
		ck.Trust = privacyindex.KeyFirstSeen
	}
	if k.Source != "import" {
		// An imported key has no "last seen in mail": never stale.
		ck.LastSeen = k.LastSeen
	}
	// A key change: the newest key arrived by mail, is unverified, and
	// another key was known before it.
	newest := slices.MaxFunc(keys, func(a, b store.PublicKey) int { return a.FirstSeen.Compare(b.FirstSeen) })
	ck.Changed = len(keys) > 1 && !newest.Verified && newest.Source != "import"
	return ck
}

func keyStrength(k store.PublicKey) privacyindex.Strength {
	switch k.Algorithm {
	case "ed25519", "x25519", "ed448", "x448", "ecdh", "ecdsa":
		return privacyindex.StrengthStrong
	case "rsa":
		switch {
		case k.Bits >= 3072:
			return privacyindex.StrengthStrong
		case k.Bits >= 2048:
			return privacyindex.StrengthRSA2048
		}
	}
	return privacyindex.StrengthWeak
}

// contactResult computes a contact's PI from its observation.
func (s *Server) contactResult(ctx context.Context, u store.User, c store.Contact, o *observation, now time.Time) privacyindex.ContactResult {
	in := privacyindex.ContactInput{Now: now}
	if o != nil {
		in.Messages, in.Current = o.msgs, o.current
	}
	sender := privacyindex.SenderSetup{Authenticated: s.cfg.OutboundAuthenticated, Signs: u.Setup.HasKeyPair}
	for _, ch := range c.Channels {
		ci := privacyindex.ChannelInput{Protocol: ch.Protocol, Address: ch.Address, Sender: sender, LastUsed: ch.LastUsed, Now: now}
		if ch.Protocol == "email" {
			ci.Key = channelKey(c.Keys)
			if s.domains != nil {
				ci.TLSVersion, ci.TLSCipher, ci.Posture = s.domains.Delivery(ctx, store.AddressDomain(ch.Address))
			}
		}
		if o != nil {
			ci.Messages = o.channels[privacyindex.ChannelRef{Protocol: ch.Protocol, Address: ch.Address}]
		}
		in.Channels = append(in.Channels, ci)
	}
	return privacyindex.Contact(in)
}

func (s *Server) contactPrivacy(c echo.Context) error {
	ct, err := s.loadContact(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	uid := userID(c)
	u, err := s.st.GetUser(ctx, uid)
	if err != nil {
		return fmt.Errorf("contact privacy: get user: %w", err)
	}
	now := s.now()
	obs, err := s.observe(ctx, uid, now, ct.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.contactResult(ctx, u, ct, obs[ct.ID], now))
}

// accountPI is the account's PI: its set-up and its contacts' observed PI
// weighted by the messages exchanged in the last 90 days.
func (s *Server) accountPI(ctx context.Context, u store.User, addrs []store.Address, now time.Time) (privacyindex.AccountResult, error) {
	in := privacyindex.AccountInput{Setup: privacyindex.AccountSetup{
		HasKeyPair:       u.Setup.HasKeyPair,
		KeyCustody:       u.Setup.KeyCustody,
		KeyPublished:     u.Setup.KeyPublished,
		SecondFactor:     u.Setup.SecondFactor,
		PasswordStrength: u.Setup.PasswordStrength,
	}}
	if s.domains != nil && len(addrs) > 0 {
		in.Setup.DomainPolicy = s.domains.InboundPolicy(ctx, store.AddressDomain(addrs[0].Address))
	}
	obs, err := s.observe(ctx, u.ID, now, uuid.Nil)
	if err != nil {
		return privacyindex.AccountResult{}, err
	}
	ids := make([]uuid.UUID, 0, len(obs))
	for id := range obs {
		ids = append(ids, id)
	}
	// A stable order: same traffic, same facts, same score.
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	for _, id := range ids {
		o := obs[id]
		if o.traffic == 0 {
			continue
		}
		r := privacyindex.Contact(privacyindex.ContactInput{Messages: o.msgs, Now: now})
		if !r.Observed {
			continue
		}
		in.Contacts = append(in.Contacts, privacyindex.ContactTraffic{ID: id.String(), Observed: r.Score, Messages: o.traffic})
	}
	return privacyindex.Account(in), nil
}

// contactPIView is GET /contacts/{id}/privacy's answer.
type contactPIView = privacyindex.ContactResult
