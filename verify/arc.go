package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/caliopen/caliopen/privacyindex"
)

// ARC (RFC 8617) validation. go-msgauth has no ARC support, so the chain is
// validated here: the newest ARC-Message-Signature like a DKIM signature
// (header and body hashes), then every ARC-Seal over the ARC sets below it.
// A chain is trusted only when it validates and its newest sealer is listed
// in TrustedARCSealers: an unvalidated "cv=pass" proves nothing, since anyone
// can write that header.

const maxARCInstances = 50 // RFC 8617 §4.2.1

// arcInstance matches the leading "i=N;" of every ARC header field.
var arcInstance = regexp.MustCompile(`^\s*i\s*=\s*([0-9]{1,3})\s*;`)

type arcSet struct {
	aar, ams, as *field
}

// errARCTemp marks a validation that failed on a temporary DNS error.
var errARCTemp = errors.New("ARC key lookup failed temporarily")

func (v *Verifier) checkARC(ctx context.Context, fields []field, body []byte) ARCFacts {
	sets := make(map[int]*arcSet)
	var structural error
	maxI := 0
	for i := range fields {
		f := &fields[i]
		var slot func(*arcSet) **field
		switch strings.ToLower(f.Name) {
		case "arc-seal":
			slot = func(s *arcSet) **field { return &s.as }
		case "arc-message-signature":
			slot = func(s *arcSet) **field { return &s.ams }
		case "arc-authentication-results":
			slot = func(s *arcSet) **field { return &s.aar }
		default:
			continue
		}
		// i= leads ARC-Authentication-Results by grammar; in the two
		// signatures it is an ordinary tag that may come anywhere.
		n := 0
		if m := arcInstance.FindStringSubmatch(f.Value); m != nil {
			n, _ = strconv.Atoi(m[1])
		} else if !strings.EqualFold(f.Name, "ARC-Authentication-Results") {
			if iv := parseTags(f.Value)["i"]; len(iv) <= 3 {
				n, _ = strconv.Atoi(iv)
			}
		}
		if n < 1 || n > maxARCInstances {
			structural = fmt.Errorf("%s with invalid instance", f.Name)
			continue
		}
		s := sets[n]
		if s == nil {
			s = &arcSet{}
			sets[n] = s
		}
		p := slot(s)
		if *p != nil {
			structural = fmt.Errorf("two %s headers for instance %d", f.Name, n)
			continue
		}
		*p = f
		maxI = max(maxI, n)
	}
	if len(sets) == 0 && structural == nil {
		return ARCFacts{}
	}

	out := ARCFacts{Sealed: true, Instances: maxI}
	if latest := sets[maxI]; latest != nil && latest.as != nil {
		tags := parseTags(latest.as.Value)
		out.Sealer = strings.TrimSuffix(strings.ToLower(tags["d"]), ".")
		out.ClaimedCV = strings.ToLower(tags["cv"])
	}
	if latest := sets[maxI]; latest != nil && latest.aar != nil {
		out.SealerResults = latest.aar.Value
	}
	out.TrustedSealer = out.Sealer != "" && slices.ContainsFunc(v.TrustedARCSealers, func(d string) bool {
		return strings.EqualFold(strings.TrimSuffix(d, "."), out.Sealer)
	})

	err := structural
	if err == nil {
		err = v.validateARC(ctx, fields, body, sets, maxI)
	}
	switch {
	case err == nil:
		out.Result = privacyindex.AuthPass
	case errors.Is(err, errARCTemp):
		out.Result = privacyindex.AuthTempError
		out.Error = err.Error()
	default:
		out.Result = privacyindex.AuthFail
		out.Error = err.Error()
	}
	out.Trusted = out.Result == privacyindex.AuthPass && out.TrustedSealer
	return out
}

// validateARC runs RFC 8617 §5.2 over a structurally complete chain.
func (v *Verifier) validateARC(ctx context.Context, fields []field, body []byte, sets map[int]*arcSet, n int) error {
	for i := 1; i <= n; i++ {
		s := sets[i]
		if s == nil || s.aar == nil || s.ams == nil || s.as == nil {
			return fmt.Errorf("ARC set %d incomplete", i)
		}
	}
	if cv := strings.ToLower(parseTags(sets[n].as.Value)["cv"]); cv == "fail" {
		return errors.New("the newest sealer reports a failed chain")
	}
	if err := v.verifyAMS(ctx, fields, body, sets[n].ams); err != nil {
		return fmt.Errorf("ARC-Message-Signature i=%d: %w", n, err)
	}
	for i := n; i >= 1; i-- {
		tags := parseTags(sets[i].as.Value)
		want := "pass"
		if i == 1 {
			want = "none"
		}
		if !strings.EqualFold(tags["cv"], want) {
			return fmt.Errorf("ARC-Seal i=%d: cv=%s, want %s", i, tags["cv"], want)
		}
		var signed bytes.Buffer
		for j := 1; j <= i; j++ {
			s := sets[j]
			signed.WriteString(relaxedHeader(s.aar.Name, s.aar.Raw))
			signed.WriteString(relaxedHeader(s.ams.Name, s.ams.Raw))
			if j < i {
				signed.WriteString(relaxedHeader(s.as.Name, s.as.Raw))
			}
		}
		seal := relaxedHeader(sets[i].as.Name, emptyB(sets[i].as.Raw))
		signed.WriteString(strings.TrimSuffix(seal, "\r\n"))
		if err := v.verifySig(ctx, tags, signed.Bytes()); err != nil {
			return fmt.Errorf("ARC-Seal i=%d: %w", i, err)
		}
	}
	return nil
}

// verifyAMS verifies an ARC-Message-Signature as RFC 6376 §6.1.3 verifies a
// DKIM signature (RFC 8617 §4.1.2).
func (v *Verifier) verifyAMS(ctx context.Context, fields []field, body []byte, ams *field) error {
	tags := parseTags(ams.Value)
	for _, t := range []string{"a", "b", "bh", "d", "h", "s"} {
		if tags[t] == "" {
			return fmt.Errorf("missing %s= tag", t)
		}
	}
	if _, ok := tags["l"]; ok {
		return errors.New("body length tag not accepted")
	}
	hc, bc, _ := strings.Cut(strings.ToLower(tags["c"]), "/")
	if hc == "" {
		hc = "simple"
	}
	if bc == "" {
		bc = "simple"
	}
	if (hc != "simple" && hc != "relaxed") || (bc != "simple" && bc != "relaxed") {
		return fmt.Errorf("unknown canonicalization %q", tags["c"])
	}

	bh := sha256.Sum256(canonicalBody(body, bc == "relaxed"))
	want, err := base64.StdEncoding.DecodeString(tags["bh"])
	if err != nil || !bytes.Equal(want, bh[:]) {
		return errors.New("body hash does not match")
	}

	canon := func(f field, raw string) string {
		if hc == "relaxed" {
			return relaxedHeader(f.Name, raw)
		}
		return raw
	}
	// Each name in h= takes the next instance of that field from the bottom
	// up (RFC 6376 §5.4.2); a name with no instance left signs nothing.
	used := make(map[int]bool)
	var signed bytes.Buffer
	for name := range strings.SplitSeq(tags["h"], ":") {
		name = strings.TrimSpace(name)
		for i := len(fields) - 1; i >= 0; i-- {
			if !used[i] && strings.EqualFold(fields[i].Name, name) {
				used[i] = true
				signed.WriteString(canon(fields[i], fields[i].Raw))
				break
			}
		}
	}
	signed.WriteString(strings.TrimSuffix(canon(*ams, emptyB(ams.Raw)), "\r\n"))
	return v.verifySig(ctx, tags, signed.Bytes())
}

// verifySig checks tags' b= over data with the key at s=._domainkey.d=.
func (v *Verifier) verifySig(ctx context.Context, tags map[string]string, data []byte) error {
	sig, err := base64.StdEncoding.DecodeString(tags["b"])
	if err != nil {
		return errors.New("signature is not base64")
	}
	algo := strings.ToLower(tags["a"])
	if algo != "rsa-sha256" && algo != "ed25519-sha256" {
		return fmt.Errorf("unsupported algorithm %q", tags["a"])
	}
	d, s := strings.TrimSuffix(tags["d"], "."), tags["s"]
	if d == "" || s == "" {
		return errors.New("missing d= or s=")
	}
	txts, err := v.lookupTXT(ctx)(s + "._domainkey." + d)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.Temporary() {
			return fmt.Errorf("%w: %v", errARCTemp, err)
		}
		return fmt.Errorf("no key: %v", err)
	}
	if len(txts) != 1 {
		return fmt.Errorf("%d key records", len(txts))
	}
	kt := parseTags(txts[0])
	raw, err := base64.StdEncoding.DecodeString(kt["p"])
	if err != nil || len(raw) == 0 {
		return errors.New("key record has no usable p=")
	}
	h := sha256.Sum256(data)
	switch algo {
	case "rsa-sha256":
		if k := strings.ToLower(kt["k"]); k != "" && k != "rsa" {
			return errors.New("key type does not match a=")
		}
		pub, err := parseRSAKey(raw)
		if err != nil {
			return err
		}
		if pub.N.BitLen() < 1024 {
			return errors.New("RSA key shorter than 1024 bits")
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig); err != nil {
			return errors.New("signature does not verify")
		}
	case "ed25519-sha256":
		if strings.ToLower(kt["k"]) != "ed25519" || len(raw) != ed25519.PublicKeySize {
			return errors.New("key is not an Ed25519 key")
		}
		if !ed25519.Verify(ed25519.PublicKey(raw), h[:], sig) {
			return errors.New("signature does not verify")
		}
	}
	return nil
}

func parseRSAKey(der []byte) (*rsa.PublicKey, error) {
	if k, err := x509.ParsePKIXPublicKey(der); err == nil {
		if rk, ok := k.(*rsa.PublicKey); ok {
			return rk, nil
		}
		return nil, errors.New("key is not RSA")
	}
	if rk, err := x509.ParsePKCS1PublicKey(der); err == nil {
		return rk, nil
	}
	return nil, errors.New("key does not parse")
}

// relaxedHeader is RFC 6376 §3.4.2 header canonicalization of a raw field.
func relaxedHeader(name, raw string) string {
	_, value, _ := strings.Cut(raw, ":")
	value = strings.ReplaceAll(value, "\r\n", "")
	value = strings.ReplaceAll(value, "\n", "")
	return strings.ToLower(strings.TrimSpace(name)) + ":" + strings.Join(strings.Fields(value), " ") + "\r\n"
}

// emptyB returns a raw signature field with the value of its b= tag removed
// (and bh= kept), the form in which the signature was computed.
func emptyB(raw string) string {
	name, value, ok := strings.Cut(raw, ":")
	if !ok {
		return raw
	}
	parts := strings.Split(value, ";")
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if ok && strings.TrimSpace(k) == "b" {
			eq := strings.IndexByte(p, '=')
			rest := p[eq+1:]
			// Keep a trailing line break when the tag was last, so the field
			// still ends the way it did.
			tail := ""
			if strings.HasSuffix(rest, "\r\n") {
				tail = "\r\n"
			}
			parts[i] = p[:eq+1] + tail
		}
	}
	return name + ":" + strings.Join(parts, ";")
}

// canonicalBody is RFC 6376 §3.4.3/3.4.4 body canonicalization.
func canonicalBody(body []byte, relaxed bool) []byte {
	lines := bytes.Split(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")), []byte("\n"))
	var out bytes.Buffer
	for _, l := range lines {
		if relaxed {
			l = bytes.TrimRight(l, " \t")
			var b bytes.Buffer
			inWSP := false
			for _, c := range l {
				if c == ' ' || c == '\t' {
					inWSP = true
					continue
				}
				if inWSP {
					b.WriteByte(' ')
					inWSP = false
				}
				b.WriteByte(c)
			}
			l = b.Bytes()
		}
		out.Write(l)
		out.WriteString("\r\n")
	}
	res := out.Bytes()
	for bytes.HasSuffix(res, []byte("\r\n\r\n")) {
		res = res[:len(res)-2]
	}
	if bytes.Equal(res, []byte("\r\n")) {
		if relaxed {
			return nil
		}
		return res
	}
	return res
}
