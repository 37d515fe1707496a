package verify

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/emersion/go-msgauth/dmarc"
)

// dmarcLookup is the outcome of DMARC policy discovery (RFC 7489 §6.6.3).
type dmarcLookup struct {
	rec    *dmarc.Record
	domain string                  // where the record was found
	result privacyindex.AuthResult // none, temperror or permerror when rec is nil
	err    string
	sub    bool // found at the organisational domain for a subdomain From
}

func (l dmarcLookup) strictDKIM() bool {
	return l.rec != nil && l.rec.DKIMAlignment == dmarc.AlignmentStrict
}

func (l dmarcLookup) strictSPF() bool {
	return l.rec != nil && l.rec.SPFAlignment == dmarc.AlignmentStrict
}

// lookupDMARC finds the policy of fromDomain, falling back to its
// organisational domain. dmarc.Lookup has no resolver hook taking a context,
// so we fetch the TXT ourselves and let dmarc.Parse read it.
func (v *Verifier) lookupDMARC(ctx context.Context, fromDomain string) dmarcLookup {
	if fromDomain == "" {
		return dmarcLookup{result: privacyindex.AuthNone, err: "no single From domain"}
	}
	l := v.fetchDMARC(ctx, fromDomain)
	if l.rec != nil || l.result != privacyindex.AuthNone {
		return l
	}
	if od := orgDomain(fromDomain); od != fromDomain {
		l = v.fetchDMARC(ctx, od)
		l.sub = true
	}
	return l
}

func (v *Verifier) fetchDMARC(ctx context.Context, domain string) dmarcLookup {
	txts, err := v.lookupTXT(ctx)("_dmarc." + domain)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return dmarcLookup{result: privacyindex.AuthNone}
		}
		// Anything else (timeout, SERVFAIL) means we could not learn the policy.
		return dmarcLookup{result: privacyindex.AuthTempError, err: err.Error()}
	}
	var recs []string
	for _, t := range txts {
		// §6.6.3: keep only records that start with v=DMARC1.
		head, _, _ := strings.Cut(t, ";")
		k, val, ok := strings.Cut(head, "=")
		if ok && strings.TrimSpace(k) == "v" && strings.TrimSpace(val) == "DMARC1" {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return dmarcLookup{result: privacyindex.AuthNone}
	case 1:
	default:
		// §6.6.3: several records ⇒ DMARC is not applied.
		return dmarcLookup{result: privacyindex.AuthNone, domain: domain, err: "multiple DMARC records"}
	}
	rec, err := dmarc.Parse(recs[0])
	if err != nil {
		return dmarcLookup{result: privacyindex.AuthPermError, domain: domain, err: err.Error()}
	}
	return dmarcLookup{rec: rec, domain: domain}
}

// evaluateDMARC applies the policy found to the DKIM and SPF outcomes, whose
// alignment was already computed in the record's modes.
func evaluateDMARC(l dmarcLookup, fromDomain string, d DKIMFacts, s SPFFacts) DMARCFacts {
	out := DMARCFacts{Domain: l.domain, Error: l.err}
	if l.rec == nil {
		out.Result = l.result
		return out
	}
	out.Policy = string(l.rec.Policy)
	if l.sub && l.rec.SubdomainPolicy != "" {
		out.Policy = string(l.rec.SubdomainPolicy)
	}
	switch {
	case d.Aligned:
		out.Result, out.Via = privacyindex.AuthPass, "dkim"
		return out
	case s.Aligned:
		out.Result, out.Via = privacyindex.AuthPass, "spf"
		return out
	}
	// No aligned pass. If an aligned identifier could not be checked for a
	// temporary reason, the honest answer is "try again", not "fail".
	temp := s.Result == privacyindex.AuthTempError && aligned(s.Domain, fromDomain, l.strictSPF())
	for _, sig := range d.Signatures {
		if sig.Aligned && sig.Result == privacyindex.AuthTempError {
			temp = true
		}
	}
	if temp {
		out.Result = privacyindex.AuthTempError
	} else {
		out.Result = privacyindex.AuthFail
	}
	return out
}
