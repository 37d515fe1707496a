package privacyindex

import (
	"math/rand"
	"slices"
	"testing"
)

// Vector 14 (v1.1): vector 3 delivered during a DNS outage is pending — 22 D,
// no warning, its pending checks named — and scores 30 C once re-verified.
func TestVector14PendingThenVerified(t *testing.T) {
	r := Message(vector14())
	if r.Score != 22 || r.Band != "D" || r.Warning || len(r.Warnings) != 0 {
		t.Fatalf("during the outage: %d %s warnings %v; want 22 D, none", r.Score, r.Band, r.Warnings)
	}
	if !slices.Equal(r.Pending, []string{CheckDKIM, CheckSPF, CheckDMARC}) {
		t.Errorf("pending %v; want dkim, spf, dmarc", r.Pending)
	}
	for _, f := range r.Facts {
		if f.Pending != (f.ID == "A1") {
			t.Errorf("fact %s pending %v (%s); only A1 waits on DNS here", f.ID, f.Pending, f.Label)
		}
	}
	// Asking the provider for DKIM while DKIM is unknown would be wrong advice.
	if g := adviceGain(r.Advice, ActAskDMARC); g != -1 {
		t.Errorf("ask_dkim_dmarc advised (+%d) while DKIM is pending", g)
	}
	after := Message(vector3())
	if after.Score != 30 || after.Band != "C" || after.Warning || len(after.Pending) != 0 {
		t.Errorf("re-verified: %d %s warnings %v pending %v; want 30 C", after.Score, after.Band, after.Warnings, after.Pending)
	}
}

// The measured case: a signed, encrypted message from a sender whose DKIM
// usually passes, delivered while DNS is down, scored 24 D with a false
// downgrade. Pending DKIM is no downgrade; a real DKIM failure still is.
func TestPendingDKIMIsNoDowngrade(t *testing.T) {
	f := vector7()
	f.DKIM, f.DKIMAligned, f.SPF, f.SPFAligned, f.DMARC = AuthTempError, false, AuthTempError, false, AuthTempError
	r := Message(f)
	if r.Warning || r.Score < 60 {
		t.Fatalf("pending DKIM from a DKIM-passing correspondent: %d %s %v; want band B, no warning", r.Score, r.Band, r.Warnings)
	}
	// 35 + 10 + 15 + 2 + A1 0 + 5 + 3 + 3 + 3 + X3 2 (comparison pending) = 78.
	if r.Score != 78 || factPoints(r, "X3") != 2 || factPoints(r, "A1") != 0 {
		t.Errorf("score %d X3 %v A1 %v; want 78, 2, 0", r.Score, factPoints(r, "X3"), factPoints(r, "A1"))
	}
	for _, fact := range r.Facts {
		if want := fact.ID == "A1" || fact.ID == "X3"; fact.Pending != want {
			t.Errorf("fact %s pending %v, want %v", fact.ID, fact.Pending, want)
		}
	}
	f.DKIM = AuthFail
	if r := Message(f); !slices.Contains(r.Warnings, WarnDowngrade) {
		t.Errorf("DKIM failing where it usually passes: no downgrade (%v)", r.Warnings)
	}
	// A pending DKIM does not hide a real downgrade of encryption.
	g := MessageFeatures{History: history7, DKIM: AuthTempError}
	if r := Message(g); !slices.Contains(r.Warnings, WarnDowngrade) {
		t.Errorf("clear message from an encrypting correspondent, DKIM pending: no downgrade (%v)", r.Warnings)
	}
}

func TestDMARCFailWarning(t *testing.T) {
	base := MessageFeatures{TLSVersion: "TLSv1.3", SPF: AuthFail, DMARC: AuthFail}
	for _, c := range []struct {
		name   string
		change func(*MessageFeatures)
		warn   bool
	}{
		{"p=reject", func(f *MessageFeatures) { f.DMARCPolicy = "reject" }, true},
		{"p=quarantine", func(f *MessageFeatures) { f.DMARCPolicy = "quarantine" }, true},
		{"p=none", func(f *MessageFeatures) { f.DMARCPolicy = "none" }, false},
		{"policy unknown", func(f *MessageFeatures) {}, false},
		{"explained by a trusted ARC pass", func(f *MessageFeatures) {
			f.DMARCPolicy, f.ARC, f.ARCTrusted, f.ARCSealed = "reject", AuthPass, true, true
		}, false},
		{"ARC pass, untrusted sealer", func(f *MessageFeatures) {
			f.DMARCPolicy, f.ARC, f.ARCSealed = "reject", AuthPass, true
		}, true},
		{"trusted sealer, ARC pending", func(f *MessageFeatures) {
			f.DMARCPolicy, f.ARC, f.ARCTrusted, f.ARCSealed = "reject", AuthTempError, true, true
		}, false},
		{"untrusted sealer, ARC pending", func(f *MessageFeatures) {
			f.DMARCPolicy, f.ARC, f.ARCSealed = "reject", AuthTempError, true
		}, true},
		{"DMARC pending", func(f *MessageFeatures) { f.DMARCPolicy, f.DMARC = "reject", AuthTempError }, false},
		{"DMARC pass", func(f *MessageFeatures) {
			f.DMARCPolicy, f.DMARC, f.SPF, f.SPFAligned = "reject", AuthPass, AuthPass, true
		}, false},
	} {
		f := base
		c.change(&f)
		r := Message(f)
		if got := slices.Contains(r.Warnings, WarnDMARCFail); got != c.warn {
			t.Errorf("%s: dmarc_fail warning %v, want %v (%v)", c.name, got, c.warn, r.Warnings)
		}
		if c.warn && (r.Score > 24 || adviceGain(r.Advice, ActResolveDMARCFail) != 0) {
			t.Errorf("%s: score %d advice %+v; want ≤ 24 and resolve_dmarc_fail first", c.name, r.Score, r.Advice)
		}
	}
}

// Over generated inputs: completing the pending checks with a pass never
// lowers the score and every warning of the pending message remains — so no
// warning ever comes from a check that did not complete.
func TestPendingProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(20261202))
	seen := 0
	for range 5000 {
		f := randFeatures(rng)
		pending := f.Pending()
		if len(pending) == 0 {
			continue
		}
		seen++
		done := f
		for _, p := range []*AuthResult{&done.DKIM, &done.SPF, &done.DMARC, &done.ARC} {
			if *p == AuthTempError {
				*p = AuthPass
			}
		}
		r, rd := Message(f), Message(done)
		if rd.Score < r.Score {
			t.Fatalf("completing %v lowered the score %d → %d: %+v", pending, r.Score, rd.Score, f)
		}
		for _, w := range r.Warnings {
			if !slices.Contains(rd.Warnings, w) {
				t.Fatalf("warning %s came from pending %v: %+v", w, pending, f)
			}
		}
		if !slices.Equal(r.Pending, pending) || len(rd.Pending) != 0 {
			t.Fatalf("pending %v / %v after completion; want %v / none", r.Pending, rd.Pending, pending)
		}
	}
	if seen < 1000 {
		t.Errorf("only %d generated inputs had a pending check", seen)
	}
}
