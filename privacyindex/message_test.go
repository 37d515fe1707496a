package privacyindex

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// history7 is vector 7's correspondent: TLS 1.3 + DKIM + PGP/MIME, usually.
var history7 = History{Messages: 5, UsualEncryption: EncMIME, UsualTLS: "TLSv1.3",
	UsualTLSCipher: "TLS_AES_256_GCM_SHA384", DKIMUsuallyPass: true}

func vector7() MessageFeatures {
	return MessageFeatures{
		Encryption: EncMIME, Strength: StrengthStrong, // Curve25519
		TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384",
		DKIM: AuthPass, DKIMAligned: true, SPF: AuthPass, SPFAligned: true, DMARC: AuthPass,
		Signature: SigValid, Key: KeyConsistent, ProtectedHeaders: true,
		History: history7,
	}
}

type vector struct {
	name     string
	f        MessageFeatures
	score    int
	uncapped int
	band     string
	warnings []string
	facts    map[string]float64 // non-zero facts; every other fact must be 0
	caps     []string           // applicable caps
	binding  string             // "" when no cap lowered the score
	pending  []string           // checks that could not complete
}

// vector3 is vector 3's message: TLS 1.3, aligned DKIM, SPF and DMARC pass.
func vector3() MessageFeatures {
	return MessageFeatures{TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384",
		DKIM: AuthPass, DKIMAligned: true, SPF: AuthPass, SPFAligned: true, DMARC: AuthPass, DMARCPolicy: "reject"}
}

// vector14 is vector 3 delivered while the resolver is down: every DNS check
// ended as temperror; the DMARC policy could not be read either.
func vector14() MessageFeatures {
	return MessageFeatures{TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384",
		DKIM: AuthTempError, SPF: AuthTempError, DMARC: AuthTempError}
}

func vectors() []vector {
	v8 := vector7()
	v8.Key = KeyVerified
	v9 := vector7()
	v9.Signature = SigInvalid
	return []vector{
		{name: "1 clear, unauthenticated, direct", f: MessageFeatures{},
			score: 7, uncapped: 7, band: "E",
			facts: map[string]float64{"T3": 2, "X2": 3, "X3": 2}, caps: []string{"K1", "K2", "K3"}},
		{name: "2 as 1 over TLS 1.3", f: MessageFeatures{TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384"},
			score: 22, uncapped: 22, band: "D",
			facts: map[string]float64{"T1": 15, "T3": 2, "X2": 3, "X3": 2}, caps: []string{"K3"}},
		{name: "3 TLS 1.3, aligned DKIM, SPF, DMARC", f: vector3(),
			score: 30, uncapped: 30, band: "C",
			facts: map[string]float64{"T1": 15, "T3": 2, "A1": 8, "X2": 3, "X3": 2}, caps: []string{"K3"}},
		{name: "4 TLS 1.0, DMARC via SPF only, consistent history",
			f: MessageFeatures{TLSVersion: "TLSv1", TLSCipher: "ECDHE-RSA-AES256-SHA",
				SPF: AuthPass, SPFAligned: true, DMARC: AuthPass,
				History: History{Messages: 12, UsualTLS: "TLSv1", UsualTLSCipher: "ECDHE-RSA-AES256-SHA"}},
			score: 18, uncapped: 18, band: "D",
			facts: map[string]float64{"T1": 4, "T3": 2, "A1": 5, "X2": 3, "X3": 4}, caps: []string{"K2", "K3"}},
		{name: "5 PGP/MIME RSA-3072, signed, key first seen, TLS 1.3, no DKIM",
			f: MessageFeatures{Encryption: EncMIME, Strength: StrengthStrong,
				TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384",
				Signature: SigValid, Key: KeyFirstSeen},
			score: 73, uncapped: 73, band: "B",
			facts: map[string]float64{"C1": 35, "C2": 10, "T1": 15, "T3": 2, "A2": 5, "A3": 1, "X2": 3, "X3": 2},
			caps:  []string{"K4"}},
		{name: "6 PGP/MIME unsigned, TLS 1.3, first contact",
			f: MessageFeatures{Encryption: EncMIME, Strength: StrengthStrong,
				TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384"},
			score: 67, uncapped: 67, band: "B",
			facts: map[string]float64{"C1": 35, "C2": 10, "T1": 15, "T3": 2, "X2": 3, "X3": 2},
			caps:  []string{"K4"}},
		{name: "7 PGP/MIME Curve25519, signed, consistent key, hidden Subject", f: vector7(),
			score: 79, uncapped: 88, band: "B",
			facts: map[string]float64{"C1": 35, "C2": 10, "T1": 15, "T3": 2, "A1": 8, "A2": 5, "A3": 3, "X1": 3, "X2": 3, "X3": 4},
			caps:  []string{"K4"}, binding: "K4"},
		{name: "8 as 7, key verified", f: v8,
			score: 92, uncapped: 92, band: "A",
			facts: map[string]float64{"C1": 35, "C2": 10, "T1": 15, "T3": 2, "A1": 8, "A2": 5, "A3": 7, "X1": 3, "X2": 3, "X3": 4}},
		{name: "9 as 7, signature invalid", f: v9,
			score: 24, uncapped: 80, band: "D", warnings: []string{WarnSignatureInvalid},
			// A3 needs a valid signature: the key did not sign this.
			facts: map[string]float64{"C1": 35, "C2": 10, "T1": 15, "T3": 2, "A1": 8, "X1": 3, "X2": 3, "X3": 4},
			caps:  []string{"K4", "K5"}, binding: "K5"},
		{name: "10 downgrade to clear", f: MessageFeatures{History: history7},
			score: 5, uncapped: 5, band: "E", warnings: []string{WarnDowngrade},
			facts: map[string]float64{"T3": 2, "X2": 3}, caps: []string{"K1", "K2", "K3", "K5"}},
		// v1.1: a forged From under p=reject is a warning, not an honest
		// unauthenticated message (which vector 2 is).
		{name: "13 DMARC fail under p=reject",
			f: MessageFeatures{TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384",
				SPF: AuthFail, DMARC: AuthFail, DMARCPolicy: "reject"},
			score: 22, uncapped: 22, band: "D", warnings: []string{WarnDMARCFail},
			facts: map[string]float64{"T1": 15, "T3": 2, "X2": 3, "X3": 2}, caps: []string{"K3", "K5"}},
		// v1.1: vector 3 while the resolver is down is pending, not failed.
		{name: "14 as 3, DNS down: pending", f: vector14(),
			score: 22, uncapped: 22, band: "D", pending: []string{CheckDKIM, CheckSPF, CheckDMARC},
			facts: map[string]float64{"T1": 15, "T3": 2, "X2": 3, "X3": 2}, caps: []string{"K3"}},
	}
}

func TestMessageVectors(t *testing.T) {
	for _, v := range vectors() {
		t.Run(v.name, func(t *testing.T) {
			r := Message(v.f)
			if r.Version != Version || r.Score != v.score || r.Uncapped != v.uncapped || r.Band != v.band {
				t.Errorf("got version %d score %d uncapped %d band %s, want %d %d %d %s",
					r.Version, r.Score, r.Uncapped, r.Band, Version, v.score, v.uncapped, v.band)
			}
			if want := len(v.warnings) > 0; r.Warning != want || !slices.Equal(r.Warnings, append([]string{}, v.warnings...)) {
				t.Errorf("warning %v %v, want %v", r.Warning, r.Warnings, v.warnings)
			}
			if !slices.Equal(r.Pending, v.pending) {
				t.Errorf("pending %v, want %v", r.Pending, v.pending)
			}
			if len(r.Facts) != 11 {
				t.Fatalf("%d facts, want 11", len(r.Facts))
			}
			var sum float64
			for _, f := range r.Facts {
				if f.Points != v.facts[f.ID] {
					t.Errorf("fact %s = %v (%s), want %v", f.ID, f.Points, f.Label, v.facts[f.ID])
				}
				if f.Label == "" || f.Points > f.Max {
					t.Errorf("fact %+v: empty label or above its max", f)
				}
				sum += f.Points
			}
			if int(sum) != r.Uncapped {
				t.Errorf("facts sum to %v, uncapped %d", sum, r.Uncapped)
			}
			var ids []string
			binding := ""
			for _, c := range r.Caps {
				ids = append(ids, c.ID)
				if c.Binding {
					if binding != "" {
						t.Errorf("two binding caps: %s and %s", binding, c.ID)
					}
					binding = c.ID
				}
			}
			if !slices.Equal(ids, v.caps) || binding != v.binding {
				t.Errorf("caps %v binding %q, want %v binding %q", ids, binding, v.caps, v.binding)
			}
		})
	}
}

// Advice gains must be what rescoring gives, and vector 7's path to A is
// verifying the key (+13: 79 capped → 92).
func TestMessageAdviceGainsAreRescored(t *testing.T) {
	r := Message(vector7())
	var verify *Advice
	for i, a := range r.Advice {
		if a.Action == ActVerifyKey {
			verify = &r.Advice[i]
		}
		if a.Gain <= 0 {
			t.Errorf("advice %+v without gain on a message without warning", a)
		}
	}
	if verify == nil || verify.Gain != 13 {
		t.Fatalf("verify_key advice = %+v, want gain 13; advice %+v", verify, r.Advice)
	}
	// Vector 2: encrypting is worth 45 points (22 → 67, capped at 79 by K4).
	r2 := Message(vectors()[1].f)
	if got := adviceGain(r2.Advice, ActAskEncrypt); got != 45 {
		t.Errorf("vector 2 ask_encrypt gain %d, want 45 (advice %+v)", got, r2.Advice)
	}
	if !slices.IsSortedFunc(r2.Advice, func(a, b Advice) int { return b.Gain - a.Gain }) {
		t.Errorf("advice not sorted by gain: %+v", r2.Advice)
	}
	// Under a signature warning, DKIM/DMARC or MTA-STS would not raise the
	// score (still capped at 24): no gain, so no such advice.
	r9 := Message(vectors()[8].f)
	if adviceGain(r9.Advice, ActAskMTASTS) != -1 || adviceGain(r9.Advice, ActResolveInvalidSig) != 0 {
		t.Errorf("vector 9 advice %+v: want resolve_invalid_signature, no ask_mta_sts", r9.Advice)
	}
}

// adviceGain returns the gain of action, or -1 if absent.
func adviceGain(a []Advice, action string) int {
	for _, x := range a {
		if x.Action == action {
			return x.Gain
		}
	}
	return -1
}

func TestKeyChangeWarning(t *testing.T) {
	f := vector7()
	f.KeyChanged, f.Key = true, KeyFirstSeen
	r := Message(f)
	if !r.Warning || r.Score > 24 || !slices.Contains(r.Warnings, WarnKeyChanged) {
		t.Fatalf("key change: %+v", r)
	}
	if g := adviceGain(r.Advice, ActVerifyKey); g != 92-24 {
		t.Errorf("verifying the new key gains %d, want %d", g, 92-24)
	}
	f.Key = KeyVerified // the user verified the new key: no warning
	if r := Message(f); r.Warning || r.Score != 92 {
		t.Errorf("verified changed key: warning %v score %d", r.Warning, r.Score)
	}
}

// A3 rewards the key that signed this message: an unsigned message says
// nothing about the sender's key, however well known (anyone can encrypt to
// the user). Without this, vector 10 would score 8 when ingest reports the
// correspondent's known key, and an unsigned message could reach band A.
func TestKeyNeedsValidSignature(t *testing.T) {
	v10 := MessageFeatures{History: history7, Key: KeyConsistent}
	if r := Message(v10); r.Score != 5 || factPoints(r, "A3") != 0 {
		t.Errorf("vector 10 with the known key reported: score %d, A3 %v", r.Score, factPoints(r, "A3"))
	}
	f := vector7()
	f.Key, f.Signature = KeyVerified, SigNone
	r := Message(f)
	if r.Score != 79 || r.Band != "B" || factPoints(r, "A3") != 0 {
		t.Errorf("unsigned from a verified correspondent: %d %s A3 %v", r.Score, r.Band, factPoints(r, "A3"))
	}
	if g := adviceGain(r.Advice, ActVerifyKey); g != -1 {
		t.Errorf("verifying an already verified key advised (+%d)", g)
	}
	if g := adviceGain(r.Advice, ActAskSign); g != 92-79 {
		t.Errorf("ask_sign gain %d, want 13: %+v", g, r.Advice)
	}
	for _, s := range []Signature{SigUnknown, SigValidUnknownKey, SigInvalid} {
		f.Signature = s
		if r := Message(f); factPoints(r, "A3") != 0 || r.Band == "A" {
			t.Errorf("signature %v: A3 %v band %s", s, factPoints(r, "A3"), r.Band)
		}
	}
}

func TestDKIMDowngrade(t *testing.T) {
	f := vector7()
	f.DKIM = AuthFail
	r := Message(f)
	if !slices.Equal(r.Warnings, []string{WarnDowngrade}) || r.Score != 24 {
		t.Fatalf("DKIM failing where it usually passes: %v %d", r.Warnings, r.Score)
	}
	f.History.Messages = 2 // no usual yet: no downgrade
	if r := Message(f); r.Warning {
		t.Errorf("downgrade with only 2 earlier messages: %v", r.Warnings)
	}
}

func TestT1(t *testing.T) {
	for _, c := range []struct {
		v, c string
		want int
	}{
		{"TLSv1.3", "TLS_AES_128_GCM_SHA256", 15},
		{"TLS 1.3", "", 15},
		{"tlsv1.3", "anything", 15},
		{"TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", 12},
		{"TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", 12},
		{"TLSv1.2", "DHE-RSA-AES128-GCM-SHA256", 12},
		{"TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 12},
		{"TLSv1.2", "tls_dhe_rsa_with_chacha20_poly1305_sha256", 12},
		{"TLSv1.2", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 12},
		{"TLSv1.2", "ECDHE-RSA-AES256-SHA384", 8},                // CBC
		{"TLSv1.2", "AES256-GCM-SHA384", 8},                      // RSA key exchange
		{"TLSv1.2", "TLS_RSA_WITH_AES_128_GCM_SHA256", 8},        // RSA key exchange
		{"TLSv1.2", "TLS_ECDH_ECDSA_WITH_AES_128_GCM_SHA256", 8}, // static ECDH
		{"TLSv1.2", "ADH-AES256-GCM-SHA384", 8},                  // anonymous
		{"TLSv1.2", "TLS_DH_anon_WITH_AES_256_GCM_SHA384", 8},
		{"TLSv1.2", "", 8},
		{"TLSv1.1", "ECDHE-RSA-AES256-SHA", 4},
		{"TLSv1", "ECDHE-RSA-AES256-SHA", 4},
		{"TLSv1.0", "", 4},
		{"SSLv3", "DES-CBC3-SHA", 0},
		{"", "", 0},
		{"garbage", "ECDHE-RSA-AES256-GCM-SHA384", 0},
	} {
		if got := T1Points(c.v, c.c); got != c.want {
			t.Errorf("T1Points(%q, %q) = %d, want %d", c.v, c.c, got, c.want)
		}
	}
}

func TestBandOf(t *testing.T) {
	for score, want := range map[int]string{0: "E", 9: "E", 10: "D", 24: "D", 25: "C", 59: "C", 60: "B", 79: "B", 80: "A", 100: "A"} {
		if got := BandOf(score); got != want {
			t.Errorf("BandOf(%d) = %s, want %s", score, got, want)
		}
	}
}

// The result is stored as JSON and served by the API: every field has a
// snake_case tag, and empty lists are [] rather than null.
func TestResultJSON(t *testing.T) {
	b, err := json.Marshal(Message(MessageFeatures{}))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "score", "uncapped", "band", "warning", "warnings", "facts", "caps", "advice"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("JSON has a null list: %s", b)
	}
	for _, typ := range []any{Result{}, Fact{}, Cap{}, Advice{}, ChannelResult{}, Recommendation{}, ContactResult{},
		ConversationResult{}, AccountResult{}, ChannelInput{}, ContactInput{}, AccountInput{}, ScoredMessage{},
		ChannelKey{}, SenderSetup{}, ChannelRef{}, AccountSetup{}, ContactTraffic{}, ParticipantScore{}, ConversationInput{}} {
		rt := reflect.TypeOf(typ)
		for i := 0; i < rt.NumField(); i++ {
			tag := strings.Split(rt.Field(i).Tag.Get("json"), ",")[0]
			if tag == "" || tag != strings.ToLower(tag) {
				t.Errorf("%s.%s: json tag %q is not snake_case", rt.Name(), rt.Field(i).Name, tag)
			}
		}
	}
	var back Result
	r := Message(vector7())
	b, _ = json.Marshal(r)
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("JSON round trip changed the result: %v\n%+v\n%+v", err, back, r)
	}
}

func BenchmarkMessage(b *testing.B) {
	f := vector7()
	for b.Loop() {
		Message(f)
	}
}

// On a tie between caps (K2 and K5 are both 24), the warning is the one
// marked binding: it is the reason the user must see.
func TestBindingCapTie(t *testing.T) {
	f := MessageFeatures{TLSVersion: "TLSv1", Posture: PostureEnforced, Hops: Hops{Count: 1, AllTLS: true},
		DKIM: AuthPass, DKIMAligned: true, DMARC: AuthPass, Signature: SigInvalid}
	r := Message(f)
	if r.Uncapped != 4+5+5+8+3+2 || r.Score != 24 {
		t.Fatalf("uncapped %d score %d", r.Uncapped, r.Score)
	}
	for _, c := range r.Caps {
		if c.Binding != (c.ID == "K5") {
			t.Errorf("cap %+v: only K5 should bind", c)
		}
	}
}
