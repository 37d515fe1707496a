package ingest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/caliopen/caliopen/privacyindex"
)

// PI v1.1, vector 14's history half: DKIM checks that could not complete
// during a DNS outage never count in the correspondent's history. Before,
// they counted as "DKIM failing", so the outage scored as a downgrade and,
// once enough of them piled up, a forgery looked consistent with history.
func TestPendingDKIMNeverCountsInHistory(t *testing.T) {
	f := newFixture(t)
	dkim := privacyindex.AuthPass
	f.with(func(c *Config) {
		c.Verifier = VerifierFunc(func(_ context.Context, in VerifyInput) (Verification, error) {
			out := in.Features
			out.DKIM = dkim
			out.DKIMAligned = dkim == privacyindex.AuthPass
			out.DMARC = dkim // pass, temperror (pending) or none, with DKIM
			return Verification{Features: out}, nil
		})
	})
	send := func(subject string) Security {
		t.Helper()
		res, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"alice@example.org"}, TLSVersion: "TLSv1.3",
			TLSCipher: "TLS_AES_256_GCM_SHA384"}, []byte(simple("carol@remote.example", "alice@example.org", subject, "x")))
		must(t, err)
		m, err := f.st.GetMessage(f.ctx, f.alice, res.Deliveries[0].MessageID)
		must(t, err)
		if m.PI.Version != privacyindex.Version {
			t.Errorf("%s: PI version %d", subject, m.PI.Version)
		}
		s := f.security(m)
		if r := privacyindex.Message(s.Features); r.Warning != m.PI.Warning || r.Score != m.PI.Score {
			t.Errorf("%s: stored PI %+v differs from the features' %d %v", subject, m.PI, r.Score, r.Warnings)
		}
		return s
	}
	for i := range 3 {
		send(fmt.Sprint("usual ", i))
	}
	// The outage: more pending messages than passing ones.
	for i := range 5 {
		dkim = privacyindex.AuthTempError
		s := send(fmt.Sprint("during the outage ", i))
		r := privacyindex.Message(s.Features)
		if !s.Features.History.DKIMUsuallyPass || r.Warning || !slices.Contains(r.Pending, privacyindex.CheckDKIM) {
			t.Fatalf("outage message %d: history %+v, warnings %v, pending %v; want DKIM usually passing, no warning, DKIM pending",
				i, s.Features.History, r.Warnings, r.Pending)
		}
	}
	// A forgery after the outage: no DKIM at all. Still a downgrade.
	dkim = privacyindex.AuthNone
	s := send("forged")
	r := privacyindex.Message(s.Features)
	if !s.Features.History.DKIMUsuallyPass || !slices.Contains(r.Warnings, privacyindex.WarnDowngrade) {
		t.Errorf("forgery after the outage: history %+v, warnings %v; want a downgrade", s.Features.History, r.Warnings)
	}
}
