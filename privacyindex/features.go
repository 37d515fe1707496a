package privacyindex

// This file is the contract between the fact gatherers (ingest, verify) and
// the model: plain values, no I/O. A zero value means "not seen / none", which
// always scores 0 for that fact.

// Encryption is how the payload is encrypted end to end (fact C1).
type Encryption int

const (
	EncNone    Encryption = iota // readable by providers
	EncPartial                   // only some parts encrypted
	EncInline                    // inline PGP
	EncMIME                      // PGP/MIME (RFC 3156) or S/MIME enveloped
)

// Strength is the strength of the encryption (fact C2), only used when encrypted.
type Strength int

const (
	StrengthWeak    Strength = iota // weaker, unknown, or no integrity protection
	StrengthRSA2048                 // RSA 2048–3071
	StrengthStrong                  // ECC (Curve25519, P-256+) or RSA ≥ 3072
)

// Posture is the sender domain's published inbound TLS policy (fact T2).
type Posture int

const (
	PostureNone Posture = iota
	PostureMTASTSTesting
	PostureEnforced // MTA-STS enforce, or DANE TLSA under DNSSEC
)

// AuthResult is a DKIM, SPF, DMARC or ARC evaluation outcome.
type AuthResult string

const (
	AuthNone      AuthResult = ""          // not evaluated / no record
	AuthPass      AuthResult = "pass"      //
	AuthFail      AuthResult = "fail"      //
	AuthSoftFail  AuthResult = "softfail"  // SPF only
	AuthNeutral   AuthResult = "neutral"   //
	AuthTempError AuthResult = "temperror" // could not complete (DNS time-out, SERVFAIL): pending, see MessageFeatures.Pending
	AuthPermError AuthResult = "permerror" // garbage record, too many lookups
)

// Signature is the state of an end-to-end signature (fact A2).
type Signature int

const (
	SigNone            Signature = iota // unsigned
	SigUnknown                          // signed, but the server cannot see or check it (inside encryption)
	SigValidUnknownKey                  // valid, but key unknown or signer does not match From
	SigValid                            // valid, signer matches From
	SigInvalid                          // present and does not verify ⇒ warning
)

// KeyTrust is what we know of the sender's key (fact A3).
type KeyTrust int

const (
	KeyNone       KeyTrust = iota
	KeyFirstSeen           // first time we see this key
	KeyConsistent          // same key on ≥ 3 messages (TOFU)
	KeyDiscovered          // found via DNSSEC-validated OPENPGPKEY or WKD, unchanged
	KeyVerified            // fingerprint confirmed by the user
)

// Hops summarises upstream Received: headers (fact T3, advisory).
type Hops struct {
	Count    int  // external hops before ours
	AllTLS   bool // every hop claims ESMTPS / TLS
	AnyClear bool // a hop explicitly says plain SMTP
}

// History is what earlier messages from this correspondent looked like (fact X3).
type History struct {
	Messages int // earlier inbound messages from this correspondent
	// The usual (most common) classes seen so far.
	UsualEncryption Encryption
	UsualTLS        string // TLS version seen usually, e.g. "TLSv1.3", "" for none
	UsualTLSCipher  string
	DKIMUsuallyPass bool
}

// MessageFeatures is every fact the message PI is computed from.
type MessageFeatures struct {
	Encryption Encryption
	Strength   Strength

	TLSVersion string // inbound hop, milter {tls_version}: "TLSv1.3", "TLSv1.2", "" for none
	TLSCipher  string // milter {cipher}, e.g. "TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"
	Posture    Posture
	Hops       Hops

	DKIM        AuthResult // best DKIM signature result
	DKIMAligned bool       // the passing signature's d= aligns with From
	SPF         AuthResult
	SPFAligned  bool // envelope sender domain aligns with From
	DMARC       AuthResult
	// DMARCPolicy is the p= (or sp=, for a subdomain) the From domain
	// publishes: "none", "quarantine", "reject", "" when unknown.
	DMARCPolicy string
	ARC         AuthResult // ARC chain validation: pass, fail, temperror (pending)
	ARCTrusted  bool       // the newest ARC sealer is one we trust, and its chain validates or is pending

	Signature  Signature
	Key        KeyTrust
	KeyChanged bool // sender key changed without the user verifying ⇒ warning

	ProtectedHeaders bool // X1: protected headers / hidden subject
	ListID           bool // List-Id present (mailing list)
	ARCSealed        bool // an ARC seal present (forwarded)

	History History
}

// Checks that can be pending (MessageFeatures.Pending).
const (
	CheckDKIM  = "dkim"
	CheckSPF   = "spf"
	CheckDMARC = "dmarc"
	CheckARC   = "arc"
)

// Pending lists the checks that could not complete (AuthTempError: a DNS
// time-out, SERVFAIL, a verification budget that ran out). A pending check
// is unknown, not failed: it earns nothing for now, raises no warning, must
// not count in a correspondent's history, and is retried (model v1.1).
func (f MessageFeatures) Pending() []string {
	var out []string
	for _, c := range []struct {
		name string
		r    AuthResult
	}{{CheckDKIM, f.DKIM}, {CheckSPF, f.SPF}, {CheckDMARC, f.DMARC}, {CheckARC, f.ARC}} {
		if c.r == AuthTempError {
			out = append(out, c.name)
		}
	}
	return out
}
