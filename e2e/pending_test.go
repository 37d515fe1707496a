package e2e

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// Vector 14 (PI v1.1): vector 3's message while the resolver drops every
// query. The sender gets its 250 within verify.budget (not after a DNS
// time-out per check), the message is stored pending — 22 D, no warning,
// the pending checks named — and once DNS is back the milter's queue
// re-verifies it: 30 C.
func testVector14(t *testing.T, d *serveDeployment) {
	signer := newDKIMSigner(t, d.dns, "outage.test", "e2e")
	d.dns.addTXT(t, "outage.test", "v=spf1 ip4:127.0.0.1 -all")
	d.dns.addTXT(t, "_dmarc.outage.test", "v=DMARC1; p=reject")
	raw := signer.sign(t, msg("News <news@outage.test>", "alice@example.test", "Vector 14 outage", "v14@outage.test", "Sent during a DNS outage.\n"))

	d.dns.down.Store(true)
	start := time.Now()
	mustDeliver(t, d.pf, true, "news@outage.test", []string{"alice@example.test"}, raw)
	// The budget is 1 s; SMTP, Postfix and the store take the rest.
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("250 took %v with DNS down and a 1s budget", took)
	}
	alice := d.api("alice")
	m := alice.waitMessage("Vector 14 outage", 20*time.Second)
	expectPI(t, m, 22, "D")
	var pi struct {
		Warnings []string `json:"warnings"`
		Pending  []string `json:"pending"`
	}
	if err := json.Unmarshal(m.PI.Details, &pi); err != nil {
		t.Fatalf("PI details %s: %v", m.PI.Details, err)
	}
	if len(pi.Warnings) != 0 || !slices.Contains(pi.Pending, "dkim") || !slices.Contains(pi.Pending, "dmarc") {
		t.Errorf("during the outage: warnings %v pending %v; want none, dkim and dmarc pending", pi.Warnings, pi.Pending)
	}

	d.dns.down.Store(false)
	waitFor(t, 30*time.Second, "vector 14 re-verified to 30 C", func() (bool, string) {
		m = alice.message(m.ID)
		return m.PI.Score == 30 && m.PI.Band == "C", m.PI.Band
	})
	sec := decodeSecurity(t, m)
	if sec.Features.DKIM != "pass" || sec.Features.DMARC != "pass" || sec.Verification.DMARC.Policy != "reject" {
		t.Errorf("re-verified features DKIM %q DMARC %q policy %q", sec.Features.DKIM, sec.Features.DMARC, sec.Verification.DMARC.Policy)
	}
}
