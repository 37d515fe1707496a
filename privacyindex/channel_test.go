package privacyindex

import (
	"testing"
	"time"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func days(n float64) time.Duration { return time.Duration(n * 24 * float64(time.Hour)) }

// bobEmail is vector 11's contact: one email address, no key, a domain our
// deliveries reach over TLS 1.3; our outgoing mail is DKIM-signed and
// aligned with DMARC (without that, TLS 1.3 alone is 22, band D).
func bobEmail() ChannelInput {
	return ChannelInput{
		Protocol: ProtoEmail, Address: "bob@example.net",
		TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384",
		Sender:   SenderSetup{Authenticated: true},
		LastUsed: now.Add(-days(3)), Now: now,
	}
}

func TestVector11(t *testing.T) {
	in := ContactInput{Channels: []ChannelInput{bobEmail()}, Current: ChannelRef{ProtoEmail, "bob@example.net"}, Now: now}

	// No key: email over TLS, band C (15 + 2 + 8 + 3 + 2 = 30).
	r := Contact(in)
	rec := r.Recommendation
	if !rec.Found || rec.Band != "C" || rec.Score != 30 || rec.Mode != "email over TLS" || rec.Autocrypt != AutocryptDisable {
		t.Fatalf("no key: %+v", rec)
	}
	if g := adviceGain(r.Advice, ActGetKey); g != 76-30 {
		t.Errorf("get_key gain %d, want 46; advice %+v", g, r.Advice)
	}
	if r.Observed || r.Band != "" {
		t.Errorf("no traffic yet, but observed %v band %q", r.Observed, r.Band)
	}

	// The user imports a key: email + OpenPGP, band B (capped by K4 until verified).
	in.Channels[0].Key = ChannelKey{Trust: KeyFirstSeen, Strength: StrengthStrong}
	r = Contact(in)
	rec = r.Recommendation
	if rec.Band != "B" || rec.Score != 76 || rec.Mode != "email + OpenPGP" || rec.Switch || rec.Autocrypt != AutocryptAvailable {
		t.Fatalf("key imported: %+v", rec)
	}
	if g := adviceGain(r.Advice, ActVerifyKey); g != 82-76 {
		t.Errorf("verify_key gain %d, want 6; advice %+v", g, r.Advice)
	}

	// The user confirms the fingerprint: A.
	in.Channels[0].Key.Trust = KeyVerified
	r = Contact(in)
	rec = r.Recommendation
	if rec.Band != "A" || rec.Score != 82 || rec.Autocrypt != AutocryptEncrypt {
		t.Fatalf("key verified: %+v", rec)
	}
	if len(r.Channels) != 1 || len(r.Channels[0].Caps) != 0 {
		t.Errorf("verified OpenPGP email still capped: %+v", r.Channels)
	}
}

func TestProtocolCeilings(t *testing.T) {
	best := func(c ChannelInput) ChannelInput {
		c.TLSVersion, c.TLSCipher, c.Posture, c.Messages = "TLSv1.3", "TLS_AES_256_GCM_SHA384", PostureEnforced, 10
		c.Sender = SenderSetup{Authenticated: true, Signs: true, ProtectedHeaders: true}
		c.Now = now
		return c
	}
	key := func(tr KeyTrust) ChannelKey { return ChannelKey{Trust: tr, Strength: StrengthStrong} }
	for _, c := range []struct {
		name string
		in   ChannelInput
		band string
		mode string
		fs   bool
	}{
		{"email in clear", ChannelInput{Protocol: "email", Now: now}, "E", "email in clear", false},
		{"email over TLS, at best", best(ChannelInput{Protocol: "email"}), "C", "email over TLS", false},
		{"email + OpenPGP", best(ChannelInput{Protocol: "email", Key: key(KeyConsistent)}), "B", "email + OpenPGP", false},
		{"email + OpenPGP verified", best(ChannelInput{Protocol: "email", Key: key(KeyVerified)}), "A", "email + OpenPGP", false},
		{"XMPP without OMEMO", best(ChannelInput{Protocol: "xmpp"}), "C", "XMPP", false},
		{"XMPP + OMEMO", best(ChannelInput{Protocol: "xmpp", Key: key(KeyConsistent)}), "B", "XMPP + OMEMO", true},
		{"XMPP + OMEMO verified", best(ChannelInput{Protocol: "xmpp", Key: key(KeyVerified)}), "A", "XMPP + OMEMO", true},
		{"Matrix E2EE", best(ChannelInput{Protocol: "matrix", Key: key(KeyFirstSeen)}), "B", "Matrix, end-to-end encrypted", true},
		{"Matrix E2EE verified", best(ChannelInput{Protocol: "matrix", Key: key(KeyVerified)}), "A", "Matrix, end-to-end encrypted", true},
		{"SMS, whatever we pass", best(ChannelInput{Protocol: "phone", Key: key(KeyVerified)}), "E", "SMS", false},
		{"fediverse DM, at best", best(ChannelInput{Protocol: "fediverse", Key: key(KeyVerified)}), "C", "fediverse direct message", false},
	} {
		r := Channel(c.in)
		if r.Band != c.band || r.Mode != c.mode || r.ForwardSecrecy != c.fs || r.Version != Version {
			t.Errorf("%s: band %s (%d) mode %q fs %v, want %s %q %v", c.name, r.Band, r.Score, r.Mode, r.ForwardSecrecy, c.band, c.mode, c.fs)
		}
	}
}

func TestStaleAndChangedKeys(t *testing.T) {
	in := bobEmail()
	in.Key = ChannelKey{Trust: KeyConsistent, Strength: StrengthStrong, LastSeen: in.LastUsed.Add(-days(36))}
	r := Channel(in)
	if !r.StaleKey || r.Autocrypt != AutocryptDiscourage || r.Mode != "email over TLS" {
		t.Fatalf("stale key: %+v", r)
	}
	if g := adviceGain(r.Advice, ActRefreshKey); g <= 0 {
		t.Errorf("no refresh_key advice for a stale key: %+v", r.Advice)
	}
	in.Key.LastSeen = in.LastUsed.Add(-days(34))
	if r := Channel(in); r.StaleKey || r.Mode != "email + OpenPGP" {
		t.Errorf("key seen 34 days before the last message is fresh: %+v", r)
	}

	in.Key.Changed = true
	r = Channel(in)
	if !r.KeyChanged || !r.Warning || r.Score > 24 || r.Autocrypt != AutocryptDiscourage {
		t.Fatalf("changed key: %+v", r)
	}
	other := Channel(ChannelInput{Protocol: ProtoSMS, Address: "+33600000000", LastUsed: now, Now: now})
	rec := Recommend([]ChannelResult{r, other}, ChannelRef{})
	if !rec.Found || rec.Channel.Protocol != ProtoSMS {
		t.Errorf("a channel with an unresolved key change was recommended: %+v", rec)
	}
}

func TestRecommend(t *testing.T) {
	key := ChannelKey{Trust: KeyConsistent, Strength: StrengthStrong}
	mail := bobEmail()
	mail.Key, mail.Sender.Signs = key, true // signed like OMEMO: same uncapped score
	xmpp := ChannelInput{Protocol: ProtoXMPP, Address: "bob@jabber.example", Key: key,
		TLSVersion: "TLSv1.3", Sender: SenderSetup{Authenticated: true}, LastUsed: now.Add(-days(100)), Now: now}
	m, x := Channel(mail), Channel(xmpp)
	if m.Uncapped != x.Uncapped || m.Band != x.Band {
		t.Fatalf("test set-up: want a tie, got %d/%s and %d/%s", m.Uncapped, m.Band, x.Uncapped, x.Band)
	}
	// Same band and uncapped score: forward secrecy (OMEMO) wins over the
	// more recently used OpenPGP channel, but is not worth a switch.
	rec := Recommend([]ChannelResult{m, x}, m.Ref())
	if rec.Switch || rec.Channel != m.Ref() || rec.Best != x.Ref() || rec.BestMode != "XMPP + OMEMO" {
		t.Errorf("switch proposed for no gain, or best not reported: %+v", rec)
	}
	rec = Recommend([]ChannelResult{m, x}, ChannelRef{})
	if rec.Channel != x.Ref() || rec.Mode != "XMPP + OMEMO" {
		t.Errorf("forward secrecy should break the tie: %+v", rec)
	}

	// Gaining a band: switch proposed, with its gain.
	clear := Channel(ChannelInput{Protocol: ProtoEmail, Address: "bob@old.example", LastUsed: now, Now: now})
	rec = Recommend([]ChannelResult{clear, m}, clear.Ref())
	if !rec.Switch || rec.Channel != m.Ref() || rec.Gain != m.Score-clear.Score || rec.Current != clear.Ref() {
		t.Errorf("band gain, want switch: %+v", rec)
	}

	// Same band, fewer than 15 points: stay. Same band, 15 or more: switch.
	tls := Channel(ChannelInput{Protocol: ProtoEmail, Address: "a@x", TLSVersion: "TLSv1.3", Sender: SenderSetup{Authenticated: true}, Now: now})                                                              // 30
	tls12 := Channel(ChannelInput{Protocol: ProtoEmail, Address: "b@x", TLSVersion: "TLSv1.2", Sender: SenderSetup{Authenticated: true}, Now: now})                                                            // 23, D
	fedi := Channel(ChannelInput{Protocol: ProtoFediverse, Address: "@b@x", TLSVersion: "TLSv1.2", TLSCipher: "ECDHE-RSA-AES128-GCM-SHA256", Sender: SenderSetup{Authenticated: true}, Messages: 5, Now: now}) // 12+2+8+3+4 = 29, C
	if tls.Band != "C" || fedi.Band != "C" || tls.Score-fedi.Score >= 15 || tls12.Band != "D" {
		t.Fatalf("test set-up: %d%s %d%s %d%s", tls.Score, tls.Band, fedi.Score, fedi.Band, tls12.Score, tls12.Band)
	}
	if rec := Recommend([]ChannelResult{tls, fedi}, fedi.Ref()); rec.Switch || rec.Channel != fedi.Ref() {
		t.Errorf("switch for %d points in the same band: %+v", tls.Score-fedi.Score, rec)
	}
	if rec := Recommend([]ChannelResult{tls, tls12}, tls12.Ref()); !rec.Switch {
		t.Errorf("D → C is a band: want a switch: %+v", rec)
	}

	// A channel unused for more than 180 days is not recommended.
	old := xmpp
	old.LastUsed = now.Add(-days(181))
	if rec := Recommend([]ChannelResult{Channel(old), clear}, ChannelRef{}); rec.Channel != clear.Ref() {
		t.Errorf("inactive channel recommended: %+v", rec)
	}
	if rec := Recommend(nil, ChannelRef{}); rec.Found {
		t.Errorf("recommendation from no channel: %+v", rec)
	}
}

// A channel's potential is a message score: it must obey the same caps.
func TestChannelPotentialUsesMessageCaps(t *testing.T) {
	for _, tr := range []KeyTrust{KeyNone, KeyFirstSeen, KeyConsistent, KeyDiscovered, KeyVerified} {
		for _, proto := range []string{ProtoEmail, ProtoXMPP, ProtoMatrix, ProtoSMS, ProtoFediverse, "irc"} {
			in := bobEmail()
			in.Protocol, in.Key = proto, ChannelKey{Trust: tr, Strength: StrengthStrong}
			r := Channel(in)
			f, _, _ := channelFeatures(in)
			if e := evaluateOutbound(f); e.score != r.Score || e.uncapped != r.Uncapped {
				t.Errorf("%s/%v: channel %d, message %d", proto, tr, r.Score, e.score)
			}
			// A message the user sends and signs is scored exactly like a
			// received one.
			if f.Signature == SigValid || f.Key == KeyNone {
				if m := Message(f); m.Score != r.Score {
					t.Errorf("%s/%v: channel %d, same message received %d", proto, tr, r.Score, m.Score)
				}
			}
			for _, a := range r.Advice {
				g := in
				switch a.Action { // the gains must be what rescoring gives
				case ActVerifyKey:
					g.Key.Trust = KeyVerified
				default:
					continue
				}
				if got := Channel(g).Score - r.Score; got != a.Gain {
					t.Errorf("%s/%v: verify gain %d, rescored %d", proto, tr, a.Gain, got)
				}
			}
		}
	}
}
