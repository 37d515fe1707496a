package message

import (
	"encoding/asn1"
	"encoding/base64"
	"strings"
)

// CMS content types (RFC 5652 §6.1, RFC 5083 §2.1).
var (
	oidEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
)

// cmsContentInfo is RFC 5652's ContentInfo. encoding/asn1 hands a RawValue
// over whole, so Content is the [0] EXPLICIT wrapper itself.
type cmsContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

// IsCMSEnveloped reports whether body, DER/BER or base64 of it (a part sent
// without Content-Transfer-Encoding), is a CMS ContentInfo holding
// envelopedData or authEnvelopedData: the check behind an S/MIME
// smime-type=enveloped-data label.
func IsCMSEnveloped(body []byte) bool {
	if cmsEnveloped(body) {
		return true
	}
	compact := strings.Join(strings.Fields(string(body)), "")
	if compact == "" {
		return false
	}
	der, err := base64.StdEncoding.DecodeString(compact)
	return err == nil && cmsEnveloped(der)
}

func cmsEnveloped(b []byte) bool {
	var ci cmsContentInfo
	if _, err := asn1.Unmarshal(b, &ci); err == nil {
		if !isEnvelopedOID(ci.ContentType) || ci.Content.Class != asn1.ClassContextSpecific || ci.Content.Tag != 0 || !ci.Content.IsCompound {
			return false
		}
		var env asn1.RawValue // (Auth)EnvelopedData
		if _, err := asn1.Unmarshal(ci.Content.Bytes, &env); err != nil ||
			env.Class != asn1.ClassUniversal || env.Tag != asn1.TagSequence || !env.IsCompound {
			return false
		}
		// It starts with its version, an INTEGER.
		var version int
		_, err := asn1.Unmarshal(env.Bytes, &version)
		return err == nil
	}
	return berEnveloped(b)
}

// berEnveloped is the same check for BER with indefinite lengths, which
// encoding/asn1 (DER only) refuses and streaming encoders (openssl cms
// -stream, several mail clients) write: the framing is walked by hand, the
// OID and version are still read with encoding/asn1.
func berEnveloped(b []byte) bool {
	body, ok := berEnter(b, 0x30) // ContentInfo SEQUENCE
	if !ok {
		return false
	}
	var oid asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(body, &oid)
	if err != nil || !isEnvelopedOID(oid) {
		return false
	}
	content, ok := berEnter(rest, 0xA0) // [0] EXPLICIT
	if !ok {
		return false
	}
	env, ok := berEnter(content, 0x30) // (Auth)EnvelopedData SEQUENCE
	if !ok {
		return false
	}
	var version int
	_, err = asn1.Unmarshal(env, &version)
	return err == nil
}

// berEnter checks that b starts with a constructed element of the given
// tag and returns its contents: exactly them for a definite length, the
// rest of b for an indefinite one.
func berEnter(b []byte, tag byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, false
	}
	l := b[1]
	switch {
	case l == 0x80:
		return b[2:], true
	case l < 0x80:
		n := int(l)
		if n > len(b)-2 {
			return nil, false
		}
		return b[2 : 2+n], true
	default:
		k := int(l & 0x7f)
		if k > 4 || k > len(b)-2 {
			return nil, false
		}
		n := 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | int(c)
		}
		if n < 0 || n > len(b)-2-k {
			return nil, false
		}
		return b[2+k : 2+k+n], true
	}
}

func isEnvelopedOID(oid asn1.ObjectIdentifier) bool {
	return oid.Equal(oidEnvelopedData) || oid.Equal(oidAuthEnvelopedData)
}
