package privacyindex

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Protocols a channel can use. Other values are accepted and scored as a
// protocol without end-to-end encryption.
const (
	ProtoEmail     = "email"
	ProtoXMPP      = "xmpp"
	ProtoMatrix    = "matrix"
	ProtoSMS       = "sms" // "phone" is accepted as an alias (store.Channel uses it)
	ProtoFediverse = "fediverse"
)

// Autocrypt recommendation levels for email (Autocrypt Level 1, §2.7).
const (
	AutocryptEncrypt    = "encrypt"    // encrypt by default
	AutocryptAvailable  = "available"  // offer encryption
	AutocryptDiscourage = "discourage" // encryption possible but risky: warn
	AutocryptDisable    = "disable"    // no usable key: show the predicted band
)

// Channel advice action codes (also used in contact advice).
const (
	ActGetKey         = "get_key"           // obtain the contact's OpenPGP key
	ActEnableE2EE     = "enable_e2ee"       // turn on OMEMO / Matrix end-to-end encryption
	ActRefreshKey     = "refresh_key"       // the key is stale: get the contact's current key
	ActCreateKey      = "create_key"        // create your own key pair so your messages are signed
	ActOwnDKIM        = "own_dkim_dmarc"    // operator: DKIM-sign outgoing mail and publish DMARC
	ActProtectHeaders = "protected_headers" // use a client that hides the Subject
	ActSwitchChannel  = "switch_channel"    // move the conversation to a better channel
)

// Windows of the channel and contact model.
const (
	activeWindow = 180 * 24 * time.Hour // a channel unused for longer is not recommended
	staleAfter   = 35 * 24 * time.Hour  // Autocrypt: key unseen this long before the last message
)

// ChannelKey is what we know of the contact's end-to-end key on a channel:
// OpenPGP for email, OMEMO or Matrix device keys for XMPP and Matrix.
type ChannelKey struct {
	Trust    KeyTrust `json:"trust"` // KeyNone: no key
	Strength Strength `json:"strength"`
	// LastSeen is when the key was last seen (Autocrypt header, import);
	// zero when unknown (a manually imported key), which is never stale.
	LastSeen time.Time `json:"last_seen"`
	// Changed: a different key appeared and the user has not verified it.
	Changed bool `json:"changed"`
	// PreferEncrypt: Autocrypt prefer-encrypt=mutual on both sides.
	PreferEncrypt bool `json:"prefer_encrypt"`
}

// SenderSetup is our side of a channel: what a message the user sends on it
// carries, which the recipient's side will verify.
type SenderSetup struct {
	// Authenticated: our server authenticates what it sends in a way the
	// recipient verifies — DKIM aligned with the From domain plus DMARC for
	// email, HTTP signatures for the fediverse, server-to-server
	// authentication for XMPP and Matrix.
	Authenticated bool `json:"authenticated"`
	// Signs: the user has an OpenPGP key pair, so OpenPGP mail is signed.
	Signs bool `json:"signs"`
	// ProtectedHeaders: outgoing encrypted mail hides the Subject.
	ProtectedHeaders bool `json:"protected_headers"`
}

// ChannelInput is everything known about one way to reach a contact.
type ChannelInput struct {
	Protocol string     `json:"protocol"`
	Address  string     `json:"address"`
	Key      ChannelKey `json:"key"`
	// Posture is the recipient domain's MTA-STS/DANE policy.
	Posture Posture `json:"posture"`
	// TLSVersion and TLSCipher are what our own outbound deliveries to the
	// recipient's server achieved ("" if never delivered or in clear).
	TLSVersion string      `json:"tls_version"`
	TLSCipher  string      `json:"tls_cipher"`
	Sender     SenderSetup `json:"sender"`
	// Messages exchanged on this channel so far (both directions).
	Messages int       `json:"messages"`
	LastUsed time.Time `json:"last_used"` // zero: never used
	Now      time.Time `json:"now"`
}

// ChannelRef names a channel.
type ChannelRef struct {
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
}

// ChannelResult is a channel's potential: the score of a message sent on it
// now, with how it would be sent (Mode).
type ChannelResult struct {
	Version  int    `json:"version"`
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
	// Mode is how a message would go: "email + OpenPGP", "XMPP + OMEMO", …
	Mode     string   `json:"mode"`
	Score    int      `json:"score"`
	Uncapped int      `json:"uncapped"`
	Band     string   `json:"band"`
	Warning  bool     `json:"warning"`
	Warnings []string `json:"warnings"`
	// ForwardSecrecy of the end-to-end layer (OMEMO, Megolm ratchets).
	ForwardSecrecy bool `json:"forward_secrecy"`
	// Active: used in the last 180 days, or never used yet.
	Active bool `json:"active"`
	// KeyChanged: a key change the user has not resolved (not recommended).
	KeyChanged bool `json:"key_changed"`
	// StaleKey: the key has not been seen for 35 days before the last message.
	StaleKey bool `json:"stale_key"`
	// Autocrypt is the email recommendation level; empty for other protocols.
	Autocrypt string    `json:"autocrypt,omitempty"`
	LastUsed  time.Time `json:"last_used"`
	Facts     []Fact    `json:"facts"`
	Caps      []Cap     `json:"caps"`
	Advice    []Advice  `json:"advice"`
}

// Ref returns the channel's reference.
func (c ChannelResult) Ref() ChannelRef { return ChannelRef{Protocol: c.Protocol, Address: c.Address} }

// normProtocol folds aliases so that ceilings apply whatever the spelling.
func normProtocol(p string) string {
	p = strings.ToLower(strings.TrimSpace(p))
	switch p {
	case "phone", "sms":
		return ProtoSMS
	case "fediverse", "activitypub", "mastodon":
		return ProtoFediverse
	}
	return p
}

func staleKey(in ChannelInput) bool {
	k := in.Key
	return k.Trust != KeyNone && k.Trust != KeyVerified && !k.LastSeen.IsZero() &&
		!in.LastUsed.IsZero() && in.LastUsed.Sub(k.LastSeen) > staleAfter
}

// usableKey: a stale key is not used by default (Autocrypt "discourage");
// a key the user verified always is (as Delta Chat's verified contacts).
func usableKey(in ChannelInput) bool {
	return in.Key.Trust != KeyNone && !staleKey(in)
}

// channelFeatures describes the message the user would send on the channel
// now, as the recipient's side would score it. Protocol ceilings follow from
// the message caps: no end-to-end encryption caps at C (K3), no TLS at E (K1),
// an unverified key at B (K4).
func channelFeatures(in ChannelInput) (f MessageFeatures, mode string, fs bool) {
	proto := normProtocol(in.Protocol)
	f.Hops = Hops{}                                    // we deliver directly: no upstream hop
	f.History = History{Messages: max(in.Messages, 0)} // sent at its best: never a downgrade
	// An unresolved key change is a warning on every end-to-end channel,
	// whether or not the new key would be used.
	if (proto == ProtoEmail || proto == ProtoXMPP || proto == ProtoMatrix) &&
		in.Key.Changed && in.Key.Trust != KeyVerified {
		f.KeyChanged = true
	}
	serverAuth := func() {
		if in.Sender.Authenticated {
			f.DKIM, f.DKIMAligned, f.DMARC = AuthPass, true, AuthPass
		}
	}
	e2ee := usableKey(in)
	switch proto {
	case ProtoEmail:
		f.TLSVersion, f.TLSCipher, f.Posture = in.TLSVersion, in.TLSCipher, in.Posture
		serverAuth()
		switch {
		case e2ee:
			f.Encryption, f.Strength, f.Key = EncMIME, in.Key.Strength, in.Key.Trust
			if in.Sender.Signs {
				f.Signature = SigValid
			}
			f.ProtectedHeaders = in.Sender.ProtectedHeaders
			mode = "email + OpenPGP"
		case T1Points(in.TLSVersion, in.TLSCipher) > 0:
			mode = "email over TLS"
		default:
			mode = "email in clear"
		}
	case ProtoXMPP, ProtoMatrix:
		f.TLSVersion, f.TLSCipher, f.Posture = in.TLSVersion, in.TLSCipher, in.Posture
		serverAuth()
		name := "XMPP"
		if proto == ProtoMatrix {
			name = "Matrix"
		}
		mode = name
		if e2ee {
			// OMEMO and Olm/Megolm: Curve25519 ratchets that authenticate
			// the sender end to end, whatever the caller passed as strength.
			f.Encryption, f.Strength, f.Key, f.Signature = EncMIME, StrengthStrong, in.Key.Trust, SigValid
			fs = true
			if proto == ProtoXMPP {
				mode = "XMPP + OMEMO"
			} else {
				mode = "Matrix, end-to-end encrypted"
			}
		}
	case ProtoSMS:
		// The carrier network is neither TLS nor end to end: a postcard (K1).
		mode = "SMS"
	case ProtoFediverse:
		// Both servers' admins read a direct message: never above C (K3).
		f.TLSVersion, f.TLSCipher = in.TLSVersion, in.TLSCipher
		serverAuth()
		mode = "fediverse direct message"
	default:
		f.TLSVersion, f.TLSCipher = in.TLSVersion, in.TLSCipher
		mode = proto
	}
	return f, mode, fs
}

func channelScore(in ChannelInput) int {
	f, _, _ := channelFeatures(in)
	return evaluateOutbound(f).score
}

// autocryptLevel follows Autocrypt's recommendation, with a verified key
// (Delta Chat's verified contacts) always meaning encrypt.
func autocryptLevel(in ChannelInput) string {
	switch {
	case in.Key.Trust == KeyNone:
		return AutocryptDisable
	case in.Key.Changed && in.Key.Trust != KeyVerified, staleKey(in):
		return AutocryptDiscourage
	case in.Key.Trust == KeyVerified, in.Key.PreferEncrypt:
		return AutocryptEncrypt
	}
	return AutocryptAvailable
}

// Channel computes a channel's potential.
func Channel(in ChannelInput) ChannelResult {
	f, mode, fs := channelFeatures(in)
	e := evaluateOutbound(f)
	proto := normProtocol(in.Protocol)
	r := ChannelResult{
		Version:        Version,
		Protocol:       in.Protocol,
		Address:        in.Address,
		Mode:           mode,
		Score:          e.score,
		Uncapped:       e.uncapped,
		Band:           BandOf(e.score),
		Warning:        len(e.warnings) > 0,
		Warnings:       append([]string{}, e.warnings...),
		ForwardSecrecy: fs,
		Active:         in.LastUsed.IsZero() || in.Now.Sub(in.LastUsed) <= activeWindow,
		KeyChanged:     in.Key.Changed && in.Key.Trust != KeyVerified,
		StaleKey:       staleKey(in),
		LastUsed:       in.LastUsed,
		Facts:          channelFacts(proto, f, e),
		Caps:           channelCaps(e.caps),
		Advice:         channelAdvice(proto, in, e.score),
	}
	if proto == ProtoEmail {
		r.Autocrypt = autocryptLevel(in)
	}
	return r
}

// channelCaps rewords the message caps for a message the user would send.
func channelCaps(caps []Cap) []Cap {
	out := make([]Cap, len(caps))
	for i, c := range caps {
		if c.ID == "K4" {
			c.Reason = "the contact's key is neither verified nor DNSSEC/WKD-published"
		}
		out[i] = c
	}
	return out
}

// channelFacts reuses the message facts, reworded where the message labels
// would mislead: the potential is about a message we would send.
func channelFacts(proto string, f MessageFeatures, e evaluation) []Fact {
	facts := messageFacts(f, e)
	set := func(i int, label string) { facts[i].Label = label }
	switch proto {
	case ProtoXMPP, ProtoMatrix:
		if e.pts[fC1] > 0 {
			set(fC1, "end-to-end encrypted ("+map[string]string{ProtoXMPP: "OMEMO", ProtoMatrix: "Olm/Megolm"}[proto]+")")
			set(fA2, "messages authenticated end to end by the ratchet")
		}
	case ProtoSMS:
		set(fT1, "carried by the phone network, without TLS")
	}
	if e.pts[fT1] > 0 && proto != ProtoSMS {
		set(fT1, strings.Replace(facts[fT1].Label, "delivered to us", "our deliveries to their server go", 1))
	} else if proto != ProtoSMS {
		set(fT1, "no TLS known for our deliveries to their server")
	}
	set(fT2, strings.Replace(facts[fT2].Label, "sender's domain", "recipient's domain", 1))
	set(fT3, "delivered directly from our server")
	if e.pts[fA1] > 0 {
		set(fA1, "our server authenticates what it sends (for email: aligned DKIM and DMARC)")
	} else {
		set(fA1, "our server does not authenticate what it sends on this channel")
	}
	set(fX2, "delivered provider to provider directly")
	set(fA3, strings.NewReplacer("sender's key", "contact's key", "no key known for the sender", "no key known for the contact", "same sender key", "same contact key").Replace(facts[fA3].Label))
	if f.History.Messages < 3 {
		set(fX3, "fewer than 3 messages exchanged on this channel")
	} else {
		set(fX3, "consistent with the messages exchanged on this channel")
	}
	return facts
}

func channelAdvice(proto string, in ChannelInput, score int) []Advice {
	out := []Advice{}
	try := func(action, text string, change func(*ChannelInput)) {
		g := in
		change(&g)
		if gain := channelScore(g) - score; gain > 0 {
			out = append(out, Advice{Action: action, Text: text, Gain: gain})
		}
	}
	fresh := func(g *ChannelInput) {
		if !g.LastUsed.IsZero() {
			g.Key.LastSeen = g.LastUsed
		}
	}
	e2eeProto := proto == ProtoEmail || proto == ProtoXMPP || proto == ProtoMatrix
	switch {
	case !e2eeProto:
	case in.Key.Trust == KeyNone && proto == ProtoEmail:
		try(ActGetKey, "Get the contact's OpenPGP key (from an Autocrypt header, WKD, or by importing it).",
			func(g *ChannelInput) { g.Key.Trust, g.Key.Strength = KeyFirstSeen, StrengthStrong; fresh(g) })
	case in.Key.Trust == KeyNone:
		try(ActEnableE2EE, "Turn on end-to-end encryption with this contact.",
			func(g *ChannelInput) { g.Key.Trust = KeyFirstSeen; fresh(g) })
	case staleKey(in):
		try(ActRefreshKey, "The contact's key has not been seen for a long time: ask them for their current key.",
			func(g *ChannelInput) { fresh(g) })
	}
	if e2eeProto && (in.Key.Trust != KeyVerified || in.Key.Changed) {
		text := "Confirm the contact's key fingerprint with them (in person, or by another channel)."
		if in.Key.Trust == KeyNone {
			text = "Get the contact's key and confirm its fingerprint with them."
		}
		if in.Key.Changed && in.Key.Trust != KeyVerified {
			text = "The contact's key changed: confirm the new fingerprint with them before trusting it."
		}
		try(ActVerifyKey, text, func(g *ChannelInput) {
			g.Key.Trust, g.Key.Changed = KeyVerified, false
			if in.Key.Trust == KeyNone {
				g.Key.Strength = StrengthStrong
			}
		})
	}
	if proto == ProtoEmail && usableKey(in) {
		if !in.Sender.Signs {
			try(ActCreateKey, "Create your own OpenPGP key pair so that your messages are signed.",
				func(g *ChannelInput) { g.Sender.Signs = true })
		}
		if !in.Sender.ProtectedHeaders {
			try(ActProtectHeaders, "Use a client that hides the Subject of encrypted mail (protected headers).",
				func(g *ChannelInput) { g.Sender.ProtectedHeaders = true })
		}
	}
	if (proto == ProtoEmail || proto == ProtoFediverse || proto == ProtoXMPP || proto == ProtoMatrix) && !in.Sender.Authenticated {
		try(ActOwnDKIM, "Ask your administrator to authenticate outgoing messages (DKIM aligned with your address and DMARC, for email).",
			func(g *ChannelInput) { g.Sender.Authenticated = true })
	}
	sortAdvice(out)
	return out
}

// Recommendation is the best way to reach a contact and whether to propose
// moving there. A switch is only ever proposed, never made silently.
type Recommendation struct {
	Version int `json:"version"`
	// Found is false when no channel qualifies (none active, or all with an
	// unresolved key change).
	Found bool `json:"found"`
	// Channel is where to write: the best channel, or the current one when
	// switching would gain less than a band and less than 15 points.
	Channel ChannelRef `json:"channel"`
	// Best is the top-ranked channel (Channel, unless staying put).
	Best      ChannelRef `json:"best"`
	BestMode  string     `json:"best_mode"`
	BestScore int        `json:"best_score"`
	Mode      string     `json:"mode"`
	Score     int        `json:"score"`
	Band      string     `json:"band"`
	// Switch: propose moving from Current to Channel; Gain is what it adds.
	Switch    bool       `json:"switch"`
	Current   ChannelRef `json:"current"`
	Gain      int        `json:"gain"`
	Autocrypt string     `json:"autocrypt,omitempty"`
	Text      string     `json:"text"`
}

// minSwitchGain: below a band change, a switch must be worth this much.
const minSwitchGain = 15

// Recommend ranks channels and decides whether to propose leaving current
// (zero ChannelRef: no current channel). Ranking: active in the last 180 days
// and no unresolved key change; then band, uncapped score, forward secrecy,
// most recent use; then protocol and address for a stable order.
func Recommend(channels []ChannelResult, current ChannelRef) Recommendation {
	rec := Recommendation{Version: Version, Current: current}
	var ranked []ChannelResult
	for _, c := range channels {
		if c.Active && !c.KeyChanged {
			ranked = append(ranked, c)
		}
	}
	if len(ranked) == 0 {
		rec.Text = "No channel to recommend: none used in the last 180 days without an unresolved key change."
		return rec
	}
	slices.SortStableFunc(ranked, compareChannels)
	best := ranked[0]
	use := best
	var cur *ChannelResult
	for i := range channels {
		if current != (ChannelRef{}) && channels[i].Ref() == current {
			cur = &channels[i]
			break
		}
	}
	if cur != nil && cur.Ref() != best.Ref() {
		// Leaving a channel that no longer qualifies is always proposed;
		// otherwise only a band or 15 points are worth the churn.
		gain := best.Score - cur.Score
		eligible := cur.Active && !cur.KeyChanged
		if !eligible || bandRank(best.Band) < bandRank(cur.Band) || gain >= minSwitchGain {
			rec.Switch, rec.Gain = true, gain
		} else {
			use = *cur
		}
	}
	rec.Found = true
	rec.Best, rec.BestMode, rec.BestScore = best.Ref(), best.Mode, best.Score
	rec.Channel, rec.Mode, rec.Score, rec.Band, rec.Autocrypt = use.Ref(), use.Mode, use.Score, use.Band, use.Autocrypt
	switch {
	case rec.Switch:
		rec.Text = "Propose moving this conversation from " + cur.Mode + " (" + cur.Band + ") to " +
			use.Mode + " (" + use.Band + ")."
	default:
		rec.Text = "Use " + use.Mode + " (" + use.Band + ")."
	}
	return rec
}

func compareChannels(a, b ChannelResult) int {
	return cmp.Or(
		cmp.Compare(bandRank(a.Band), bandRank(b.Band)),
		cmp.Compare(b.Uncapped, a.Uncapped),
		cmp.Compare(boolRank(b.ForwardSecrecy), boolRank(a.ForwardSecrecy)),
		b.LastUsed.Compare(a.LastUsed),
		cmp.Compare(a.Protocol, b.Protocol),
		cmp.Compare(a.Address, b.Address),
	)
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}
