package verify

import (
	"strings"

	"golang.org/x/net/publicsuffix"
)

// orgDomain returns the organisational domain of d (RFC 7489 §3.2): the
// public suffix plus one label. publicsuffix's built-in list is the "simple
// public-suffix approach"; a domain that is itself a suffix is its own
// organisational domain.
func orgDomain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	if od, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return od
	}
	return d
}

// aligned reports whether two domains are aligned, strictly (identical) or
// relaxed (same organisational domain).
func aligned(a, b string, strict bool) bool {
	a = strings.TrimSuffix(strings.ToLower(a), ".")
	b = strings.TrimSuffix(strings.ToLower(b), ".")
	if a == "" || b == "" {
		return false
	}
	if strict {
		return a == b
	}
	return orgDomain(a) == orgDomain(b)
}
