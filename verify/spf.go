package verify

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/caliopen/caliopen/privacyindex"
)

// noResolver answers every lookup with a temporary failure, so that a missing
// Resolver yields temperror facts instead of silently using the system DNS.
type noResolver struct{}

func (noResolver) LookupTXT(context.Context, string) ([]string, error) { return nil, errNoResolver }
func (noResolver) LookupMX(context.Context, string) ([]*net.MX, error) { return nil, errNoResolver }
func (noResolver) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) {
	return nil, errNoResolver
}
func (noResolver) LookupAddr(context.Context, string) ([]string, error) { return nil, errNoResolver }

// checkSPF evaluates RFC 7208 check_host() for the MAIL FROM identity, or the
// HELO identity for the null sender. blitiri.com.ar/go/spf does the
// evaluation (all mechanisms, macros, redirect, the 10-lookup and 2-void-lookup
// limits ⇒ permerror); we only feed it our resolver and map its result.
// Alignment is set later by align.
func (v *Verifier) checkSPF(ctx context.Context, in Input) SPFFacts {
	ipText := strings.TrimSpace(in.ClientIP)
	ipText = strings.TrimSuffix(strings.TrimPrefix(ipText, "["), "]")
	ipText = strings.TrimPrefix(ipText, "IPv6:") // Postfix's {client_addr} form for v6 literals
	addr, err := netip.ParseAddr(ipText)
	if err != nil {
		// A local submission has no client IP: there is nothing to authorise.
		return SPFFacts{Result: privacyindex.AuthNone, Error: "no usable client IP"}
	}
	addr = addr.Unmap()

	helo := strings.TrimSuffix(strings.TrimSpace(in.Helo), ".")
	sender := strings.TrimSpace(in.MailFrom)
	out := SPFFacts{Identity: "mailfrom", Domain: domainOf(sender)}
	if out.Domain == "" {
		// RFC 7208 §2.4: for the null sender check "postmaster@<helo>".
		out.Identity = "helo"
		out.Domain = strings.ToLower(helo)
		sender = "postmaster@" + helo
	}
	if out.Domain == "" || net.ParseIP(out.Domain) != nil || strings.HasPrefix(out.Domain, "[") {
		// An address literal HELO has no SPF record to look up.
		out.Result = privacyindex.AuthNone
		out.Error = "no domain to check"
		return out
	}

	var res spf.DNSResolver = noResolver{}
	if v.Resolver != nil {
		res = v.Resolver
	}
	r, err := spf.CheckHostWithSender(net.IP(addr.AsSlice()), helo, sender,
		spf.WithResolver(res), spf.WithContext(ctx))
	switch r {
	case spf.Pass:
		out.Result = privacyindex.AuthPass
	case spf.Fail:
		out.Result = privacyindex.AuthFail
	case spf.SoftFail:
		out.Result = privacyindex.AuthSoftFail
	case spf.Neutral:
		out.Result = privacyindex.AuthNeutral
	case spf.TempError:
		out.Result = privacyindex.AuthTempError
	case spf.PermError:
		out.Result = privacyindex.AuthPermError
	default:
		out.Result = privacyindex.AuthNone
	}
	// The library returns an error even on success ("matched ip"); keep it
	// as explanation only when the result is not a pass.
	if err != nil && out.Result != privacyindex.AuthPass {
		out.Error = err.Error()
	}
	return out
}

// align marks a pass whose domain aligns with fromDomain.
func (s *SPFFacts) align(fromDomain string, strict bool) {
	s.Aligned = s.Result == privacyindex.AuthPass && aligned(s.Domain, fromDomain, strict)
}
