package verify

import (
	"slices"
	"testing"
	"time"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/verify/dnsresolver"
	"github.com/caliopen/caliopen/verify/internal/dnstest"
)

// score is what ingest does with the facts for an unknown sender over TLS 1.3.
func score(f Facts) privacyindex.Result {
	var m privacyindex.MessageFeatures
	f.Apply(&m)
	m.TLSVersion, m.TLSCipher = "TLSv1.3", "TLS_AES_256_GCM_SHA384"
	return privacyindex.Message(m)
}

// PI vector 13: From a domain publishing p=reject, no valid DKIM, SPF fail —
// a forgery. The policy reaches the PI, which warns.
func TestVector13DMARCFailUnderReject(t *testing.T) {
	env := newAuthEnv(t)
	f := verifyOK(t, env.v, Input{Raw: testMessage("alice@example.org", "pay this invoice"),
		MailFrom: "alice@example.org", ClientIP: "198.51.100.7", Helo: "forger.example.net"})
	if f.SPF.Result != privacyindex.AuthFail || f.DKIM.Result != privacyindex.AuthNone {
		t.Fatalf("SPF %v DKIM %v; want fail, none", f.SPF.Result, f.DKIM.Result)
	}
	if f.DMARC.Result != privacyindex.AuthFail || f.DMARC.Policy != "reject" || f.DMARC.Pending {
		t.Fatalf("DMARC = %+v; want fail under p=reject, not pending", f.DMARC)
	}
	r := score(f)
	if r.Score != 22 || r.Band != "D" || !slices.Equal(r.Warnings, []string{privacyindex.WarnDMARCFail}) {
		t.Errorf("PI = %d %s %v; want 22 D with the dmarc_fail warning", r.Score, r.Band, r.Warnings)
	}

	// The same failure under p=none is an honest unauthenticated message.
	env.dns.Add(t, `_dmarc.example.com. 300 IN TXT "v=DMARC1; p=none"`)
	f = verifyOK(t, env.v, Input{Raw: testMessage("alice@example.com", "x"),
		MailFrom: "alice@example.com", ClientIP: "198.51.100.7", Helo: "h.example.net"})
	if f.DMARC.Result != privacyindex.AuthFail || f.DMARC.Policy != "none" {
		t.Fatalf("DMARC = %+v; want fail under p=none", f.DMARC)
	}
	if r := score(f); r.Warning || r.Score != 22 {
		t.Errorf("p=none: PI = %d %v; want 22, no warning", r.Score, r.Warnings)
	}
}

// PI vector 14: vector 3's message while the resolver drops every query, then
// once it answers again. Pending first (22 D, no warning, checks named),
// then 30 C; the failures were not cached.
func TestVector14PendingDuringOutage(t *testing.T) {
	env := newAuthEnv(t)
	v := testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: env.dns.Addr, Timeout: 200 * time.Millisecond, CacheSize: 100}))
	in := Input{Raw: dkimSign(t, testMessage("alice@example.org", "figures"), "example.org", "sel", env.key),
		MailFrom: "bounce@example.org", ClientIP: "192.0.2.10", Helo: "mail.example.org"}

	env.dns.SetDrop(true)
	start := time.Now()
	f := verifyOK(t, v, in)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("verification during the outage took %v with 200ms DNS timeouts", d)
	}
	if !f.DKIM.Pending || !f.SPF.Pending || !f.DMARC.Pending || f.ARC.Pending {
		t.Errorf("pending DKIM %v SPF %v DMARC %v ARC %v; want the three DNS checks", f.DKIM.Pending, f.SPF.Pending, f.DMARC.Pending, f.ARC.Pending)
	}
	want := []string{privacyindex.CheckDKIM, privacyindex.CheckSPF, privacyindex.CheckDMARC}
	if !slices.Equal(f.Pending(), want) {
		t.Errorf("Facts.Pending() = %v, want %v", f.Pending(), want)
	}
	r := score(f)
	if r.Score != 22 || r.Band != "D" || r.Warning || !slices.Equal(r.Pending, want) {
		t.Errorf("during the outage: PI %d %s warnings %v pending %v; want 22 D, no warning, %v", r.Score, r.Band, r.Warnings, r.Pending, want)
	}

	env.dns.SetDrop(false)
	f = verifyOK(t, v, in)
	if len(f.Pending()) != 0 || f.DKIM.Pending || f.DMARC.Pending {
		t.Errorf("after the outage: pending %v", f.Pending())
	}
	if r := score(f); r.Score != 30 || r.Band != "C" || r.Warning || len(r.Pending) != 0 {
		t.Errorf("re-verified: PI %d %s warnings %v pending %v; want 30 C", r.Score, r.Band, r.Warnings, r.Pending)
	}
}

// A temperror is pending only from a signature aligned with From: a forger
// adding a signature of some domain whose DNS never answers must not turn
// "DKIM fails where it usually passes" (a downgrade) into "pending".
func TestUnalignedDKIMTempErrorIsNotPending(t *testing.T) {
	for _, tc := range []struct {
		name string
		sigs []DKIMSignature
		want privacyindex.AuthResult
	}{
		{"only an unaligned temperror", []DKIMSignature{{Domain: "dead.example", Result: privacyindex.AuthTempError}}, privacyindex.AuthNone},
		{"unaligned temperror beside an aligned fail", []DKIMSignature{
			{Domain: "example.org", Result: privacyindex.AuthFail},
			{Domain: "dead.example", Result: privacyindex.AuthTempError}}, privacyindex.AuthFail},
		{"aligned temperror", []DKIMSignature{{Domain: "mail.example.org", Result: privacyindex.AuthTempError}}, privacyindex.AuthTempError},
	} {
		d := DKIMFacts{Signatures: tc.sigs}
		for _, s := range tc.sigs {
			if dkimRank[s.Result] > dkimRank[d.Result] {
				d.Result = s.Result
			}
		}
		d.align("example.org", false)
		if d.Result != tc.want {
			t.Errorf("%s: result %v, want %v", tc.name, d.Result, tc.want)
		}
	}
}
