package privacyindex

import (
	"encoding/json"
	"math/rand"
	"reflect"
	"slices"
	"testing"
)

// tlsLadder holds one representative (version, cipher) per T1 class, in
// increasing order; improving T1 moves one rung up.
var tlsLadder = [][2]string{
	{"", ""},
	{"TLSv1", "ECDHE-RSA-AES256-SHA"},
	{"TLSv1.2", "AES256-SHA256"},
	{"TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"},
	{"TLSv1.3", "TLS_AES_256_GCM_SHA384"},
}

var (
	tlsVersions = []string{"", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "SSLv3", "TLS 1.2", "junk"}
	tlsCiphers  = []string{"", "ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
		"AES256-SHA", "ECDHE-RSA-AES256-SHA", "TLS_AES_256_GCM_SHA384", "DHE-RSA-AES128-GCM-SHA256"}
	authResults   = []AuthResult{AuthNone, AuthPass, AuthFail, AuthSoftFail, AuthNeutral, AuthTempError, AuthPermError, "bogus"}
	dmarcPolicies = []string{"", "none", "quarantine", "reject", "Reject", "junk"}
)

// randFeatures draws any combination, including out-of-range enums, which
// the model must treat as "none".
func randFeatures(r *rand.Rand) MessageFeatures {
	pick := func(n int) int { return r.Intn(n+2) - 1 } // -1 .. n: one out of range each side
	return MessageFeatures{
		Encryption: Encryption(pick(4)),
		Strength:   Strength(pick(3)),
		TLSVersion: tlsVersions[r.Intn(len(tlsVersions))],
		TLSCipher:  tlsCiphers[r.Intn(len(tlsCiphers))],
		Posture:    Posture(pick(3)),
		Hops:       Hops{Count: r.Intn(5) - 1, AllTLS: r.Intn(2) == 0, AnyClear: r.Intn(4) == 0},
		DKIM:       authResults[r.Intn(len(authResults))], DKIMAligned: r.Intn(2) == 0,
		SPF: authResults[r.Intn(len(authResults))], SPFAligned: r.Intn(2) == 0,
		DMARC:       authResults[r.Intn(len(authResults))],
		DMARCPolicy: dmarcPolicies[r.Intn(len(dmarcPolicies))],
		ARC:         authResults[r.Intn(len(authResults))], ARCTrusted: r.Intn(2) == 0,
		Signature:        Signature(pick(5)),
		Key:              KeyTrust(pick(5)),
		KeyChanged:       r.Intn(5) == 0,
		ProtectedHeaders: r.Intn(2) == 0,
		ListID:           r.Intn(3) == 0,
		ARCSealed:        r.Intn(3) == 0,
		History: History{
			Messages:        r.Intn(7) - 1,
			UsualEncryption: Encryption(pick(4)),
			UsualTLS:        tlsVersions[r.Intn(len(tlsVersions))],
			UsualTLSCipher:  tlsCiphers[r.Intn(len(tlsCiphers))],
			DKIMUsuallyPass: r.Intn(2) == 0,
		},
	}
}

// improvements returns f with one fact moved one step up, for every fact
// that has a step up. The steps never create a warning (checked by the test).
func improvements(f MessageFeatures) map[string]MessageFeatures {
	out := map[string]MessageFeatures{}
	add := func(name string, change func(*MessageFeatures)) {
		g := f
		change(&g)
		if !reflect.DeepEqual(g, f) {
			out[name] = g
		}
	}
	if f.Encryption >= EncNone && f.Encryption < EncMIME {
		add("C1", func(g *MessageFeatures) { g.Encryption++ })
	} else if f.Encryption < EncNone || f.Encryption > EncMIME {
		add("C1", func(g *MessageFeatures) { g.Encryption = EncPartial })
	}
	if f.Strength < StrengthStrong {
		add("C2", func(g *MessageFeatures) { g.Strength = max(g.Strength+1, StrengthRSA2048) })
	} else if f.Strength > StrengthStrong {
		add("C2", func(g *MessageFeatures) { g.Strength = StrengthRSA2048 })
	}
	cur := T1Points(f.TLSVersion, f.TLSCipher)
	for _, rung := range tlsLadder {
		if T1Points(rung[0], rung[1]) > cur {
			add("T1", func(g *MessageFeatures) { g.TLSVersion, g.TLSCipher = rung[0], rung[1] })
			break
		}
	}
	if f.Posture < PostureEnforced {
		add("T2", func(g *MessageFeatures) { g.Posture = max(g.Posture+1, PostureMTASTSTesting) })
	} else if f.Posture > PostureEnforced {
		add("T2", func(g *MessageFeatures) { g.Posture = PostureMTASTSTesting })
	}
	switch t3Points(f.Hops) {
	case 0:
		add("T3", func(g *MessageFeatures) { g.Hops.AnyClear = false })
	case 2:
		add("T3", func(g *MessageFeatures) { g.Hops = Hops{Count: 1, AllTLS: true} })
	}
	add("DKIM", func(g *MessageFeatures) { g.DKIM = AuthPass })
	add("DKIMAligned", func(g *MessageFeatures) { g.DKIMAligned = true })
	add("SPF", func(g *MessageFeatures) { g.SPF = AuthPass })
	add("SPFAligned", func(g *MessageFeatures) { g.SPFAligned = true })
	add("DMARC", func(g *MessageFeatures) { g.DMARC = AuthPass })
	add("ARC", func(g *MessageFeatures) { g.ARC = AuthPass })
	add("ARCTrusted", func(g *MessageFeatures) { g.ARCTrusted = true })
	switch f.Signature {
	case SigInvalid:
		add("A2", func(g *MessageFeatures) { g.Signature = SigNone })
	case SigNone, SigUnknown, SigValidUnknownKey:
		add("A2", func(g *MessageFeatures) { g.Signature++ })
	case SigValid: // the top
	default: // out of range: none
		add("A2", func(g *MessageFeatures) { g.Signature = SigUnknown })
	}
	if f.Key >= KeyNone && f.Key < KeyVerified {
		add("A3", func(g *MessageFeatures) { g.Key++ })
	} else if f.Key < KeyNone || f.Key > KeyVerified {
		add("A3", func(g *MessageFeatures) { g.Key = KeyFirstSeen })
	}
	add("KeyChanged", func(g *MessageFeatures) { g.KeyChanged = false })
	add("X1", func(g *MessageFeatures) { g.ProtectedHeaders = true })
	add("ListID", func(g *MessageFeatures) { g.ListID = false })
	add("ARCSealed", func(g *MessageFeatures) { g.ARCSealed = false })
	return out
}

func factPoints(r Result, id string) float64 {
	for _, f := range r.Facts {
		if f.ID == id {
			return f.Points
		}
	}
	panic("no fact " + id)
}

func TestMessageProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(20261126))
	n := 5000
	if testing.Short() {
		n = 1000
	}
	bands := map[string]int{}
	for i := 0; i < n; i++ {
		f := randFeatures(rng)
		r := Message(f)
		bands[r.Band]++
		c1, t1, a3 := factPoints(r, "C1"), factPoints(r, "T1"), factPoints(r, "A3")
		if r.Score < 0 || r.Score > 100 || r.Band != BandOf(r.Score) || r.Score > r.Uncapped {
			t.Fatalf("%+v: score %d uncapped %d band %s", f, r.Score, r.Uncapped, r.Band)
		}
		if c1 == 0 && r.Score > 59 {
			t.Fatalf("C1 = 0 scored %d: %+v", r.Score, f)
		}
		if c1 == 0 && t1 == 0 && r.Score > 9 {
			t.Fatalf("C1 = 0 and T1 = 0 scored %d: %+v", r.Score, f)
		}
		if r.Warning != (len(r.Warnings) > 0) || (r.Warning && r.Score > 24) {
			t.Fatalf("warning %v %v scored %d: %+v", r.Warning, r.Warnings, r.Score, f)
		}
		if r.Band == "A" && (c1 == 0 || a3 < 5) {
			t.Fatalf("band A with C1 %v A3 %v: %+v", c1, a3, f)
		}
		if again := Message(f); !reflect.DeepEqual(again, r) {
			t.Fatalf("same input, different output: %+v", f)
		}
		for name, g := range improvements(f) {
			rg := Message(g)
			for _, w := range rg.Warnings {
				if !slices.Contains(r.Warnings, w) {
					t.Fatalf("improving %s created warning %s: %+v", name, w, f)
				}
			}
			if rg.Score < r.Score {
				t.Fatalf("improving %s lowered the score %d → %d:\n%+v\n%+v", name, r.Score, rg.Score, f, g)
			}
		}
		for _, a := range r.Advice {
			if a.Gain < 0 || (a.Gain == 0 && a.Action != ActResolveDowngrade && a.Action != ActResolveInvalidSig && a.Action != ActResolveDMARCFail) {
				t.Fatalf("advice %+v for %+v", a, f)
			}
			if a.Gain > 0 && r.Score+a.Gain > 100 {
				t.Fatalf("advice %+v takes score %d above 100", a, r.Score)
			}
		}
	}
	// The generator must reach every band, or the properties prove little.
	for _, b := range []string{"A", "B", "C", "D", "E"} {
		if bands[b] == 0 {
			t.Errorf("no generated input in band %s: %v", b, bands)
		}
	}
}

func FuzzMessage(f *testing.F) {
	for _, v := range vectors() {
		x := v.f
		f.Add(int(x.Encryption), int(x.Strength), x.TLSVersion, x.TLSCipher, int(x.Posture), x.Hops.Count,
			string(x.DKIM), string(x.SPF), string(x.DMARC), string(x.ARC), int(x.Signature), int(x.Key),
			x.History.Messages, int(x.History.UsualEncryption), x.History.UsualTLS, uint16(0xffff))
	}
	f.Fuzz(func(t *testing.T, enc, str int, tlsv, cipher string, posture, hops int, dkim, spf, dmarc, arc string,
		sig, key, hist, usualEnc int, usualTLS string, bits uint16) {
		bit := func(i uint) bool { return bits&(1<<i) != 0 }
		x := MessageFeatures{
			Encryption: Encryption(enc), Strength: Strength(str),
			TLSVersion: tlsv, TLSCipher: cipher, Posture: Posture(posture),
			Hops: Hops{Count: hops, AllTLS: bit(0), AnyClear: bit(1)},
			DKIM: AuthResult(dkim), DKIMAligned: bit(2), SPF: AuthResult(spf), SPFAligned: bit(3),
			DMARC: AuthResult(dmarc), ARC: AuthResult(arc), ARCTrusted: bit(4),
			Signature: Signature(sig), Key: KeyTrust(key), KeyChanged: bit(5),
			ProtectedHeaders: bit(6), ListID: bit(7), ARCSealed: bit(8),
			History: History{Messages: hist, UsualEncryption: Encryption(usualEnc), UsualTLS: usualTLS,
				UsualTLSCipher: cipher, DKIMUsuallyPass: bit(9)},
		}
		r := Message(x)
		if r.Score < 0 || r.Score > 100 || r.Band != BandOf(r.Score) {
			t.Fatalf("score %d band %s for %+v", r.Score, r.Band, x)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("result does not marshal: %v", err)
		}
		if !reflect.DeepEqual(Message(x), r) {
			t.Fatalf("same input, different output: %+v", x)
		}
		if r.Warning && r.Score > 24 {
			t.Fatalf("warning scored %d for %+v", r.Score, x)
		}
	})
}
