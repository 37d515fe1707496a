package verify

import (
	"bytes"
	"context"
	"errors"
	"net"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/emersion/go-msgauth/dkim"
)

// errNoResolver stands for every lookup when no Resolver is configured.
var errNoResolver = &net.DNSError{Err: "no DNS resolver configured", IsTemporary: true}

// lookupTXT is the resolver's TXT lookup bound to ctx, in the shape
// go-msgauth's hooks want.
func (v *Verifier) lookupTXT(ctx context.Context) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		if v.Resolver == nil {
			return nil, errNoResolver
		}
		return v.Resolver.LookupTXT(ctx, name)
	}
}

// dkimRank orders results so the most favourable, then the most informative,
// wins: a temperror may still be a pass; a fail (a broken real signature)
// says more than a permerror (an unusable one).
var dkimRank = map[privacyindex.AuthResult]int{
	privacyindex.AuthNone:      0,
	privacyindex.AuthPermError: 1,
	privacyindex.AuthFail:      2,
	privacyindex.AuthTempError: 3,
	privacyindex.AuthPass:      4,
}

// checkDKIM verifies the signatures; alignment is set later by align, once
// the DMARC record (looked up concurrently) has said which mode applies.
func (v *Verifier) checkDKIM(ctx context.Context, raw []byte, fields []field) DKIMFacts {
	sigs := all(fields, "DKIM-Signature")
	if len(sigs) == 0 {
		return DKIMFacts{Result: privacyindex.AuthNone}
	}
	maxSigs := v.MaxDKIMSignatures
	if maxSigs <= 0 {
		maxSigs = DefaultMaxDKIMSignatures
	}

	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{
		LookupTXT:        v.lookupTXT(ctx),
		MaxVerifications: maxSigs,
	})
	var out DKIMFacts
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		// The header block itself could not be read: every signature is unusable.
		out.Result = privacyindex.AuthPermError
		for _, s := range sigs[:min(len(sigs), maxSigs)] {
			tags := parseTags(s)
			out.Signatures = append(out.Signatures, DKIMSignature{
				Domain: tags["d"], Selector: tags["s"],
				Result: privacyindex.AuthPermError, Error: err.Error(),
			})
		}
		out.Skipped = max(0, len(sigs)-maxSigs)
		return out
	}
	out.Skipped = max(0, len(sigs)-len(verifs))

	for i, ver := range verifs {
		// go-msgauth returns one verification per DKIM-Signature, in header
		// order, so index i is the i-th signature header.
		var tags map[string]string
		if i < len(sigs) {
			tags = parseTags(sigs[i])
		}
		sig := DKIMSignature{Domain: ver.Domain, Selector: tags["s"]}
		if sig.Domain == "" {
			sig.Domain = tags["d"]
		}
		switch {
		case ver.Err == nil:
			sig.Result = privacyindex.AuthPass
		case dkim.IsTempFail(ver.Err):
			sig.Result = privacyindex.AuthTempError
		case dkim.IsPermFail(ver.Err):
			sig.Result = privacyindex.AuthPermError
		default:
			sig.Result = privacyindex.AuthFail
		}
		if ver.Err != nil {
			sig.Error = ver.Err.Error()
		}
		if dkimRank[sig.Result] > dkimRank[out.Result] {
			out.Result = sig.Result
		}
		out.Signatures = append(out.Signatures, sig)
	}
	return out
}

// align marks the signatures whose d= aligns with fromDomain, and the facts
// as aligned when one of them passed.
func (d *DKIMFacts) align(fromDomain string, strict bool) {
	d.Aligned = false
	for i := range d.Signatures {
		s := &d.Signatures[i]
		s.Aligned = aligned(s.Domain, fromDomain, strict)
		if s.Aligned && s.Result == privacyindex.AuthPass {
			d.Aligned = true
		}
	}
	// A temperror counts (as pending) only from a signature aligned with
	// From: else a forger could add one signature of a domain whose DNS
	// never answers and turn "DKIM failing where it usually passes" into
	// "pending", which is never a downgrade.
	if d.Result != privacyindex.AuthTempError {
		return
	}
	best := privacyindex.AuthNone
	for _, s := range d.Signatures {
		if s.Result == privacyindex.AuthTempError && !s.Aligned {
			continue
		}
		if dkimRank[s.Result] > dkimRank[best] {
			best = s.Result
		}
	}
	d.Result = best
}
