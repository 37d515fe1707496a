// Package verify turns an inbound message into verified security facts: DKIM,
// SPF, DMARC and ARC outcomes checked against the DNS, OpenPGP encryption and
// signatures checked with real keys, and spam verdicts from trusted filters.
//
// Everything here follows one rule from PRIVACY-INDEX.md: only what was
// verified counts. A DKIM-Signature header is not a pass; a signature we could
// not check is "unknown", not "valid". A failed check is a fact (fail,
// permerror, temperror), never an error: Verify returns an error only when the
// caller's context is cancelled.
package verify

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

// Resolver is the DNS the checks use. It is the method set of *net.Resolver,
// so net.DefaultResolver works, as does dnsresolver.Resolver, which points
// at one configured server. Implementations must report failures as
// *net.DNSError (unwrapped): IsNotFound for NXDOMAIN, Temporary() for
// timeouts and SERVFAIL; the DKIM, SPF and DMARC code classifies on that.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// KeyLookup returns the armored OpenPGP public keys we hold for an address
// (the user's contact with that address). An error is logged and treated as
// "no keys": it can only make a signature look less trusted, never more.
type KeyLookup interface {
	PublicKeys(ctx context.Context, address string) ([]string, error)
}

// KeyLookupFunc adapts a function to KeyLookup.
type KeyLookupFunc func(ctx context.Context, address string) ([]string, error)

// PublicKeys calls f.
func (f KeyLookupFunc) PublicKeys(ctx context.Context, address string) ([]string, error) {
	return f(ctx, address)
}

// DefaultMaxDKIMSignatures caps the DKIM signatures verified per message:
// each costs DNS lookups and a public-key operation, and a sender can add
// hundreds.
const DefaultMaxDKIMSignatures = 5

// DefaultTimeout bounds one whole verification when Verifier.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Config is what a Verifier is built from: settings and dependencies.
type Config struct {
	// Resolver answers DNS queries (nil: DKIM/SPF/DMARC are reported as
	// temperror, since we could not look).
	Resolver Resolver
	// Logger receives debug details and problems; nil discards.
	Logger *slog.Logger
	// TrustSpamHeaders says our own filter (SpamAssassin, rspamd) runs before
	// us and its topmost headers can be believed; otherwise a sender could
	// write "X-Spam-Flag: NO" himself.
	TrustSpamHeaders bool
	// TrustedARCSealers are the domains (d= of ARC-Seal) whose seals we trust.
	TrustedARCSealers []string
	// Keys looks up known public keys of the sender, for signature checks;
	// Input.Keys replaces it for one call.
	Keys KeyLookup
	// Now is the clock for signature expiry; nil means time.Now.
	Now func() time.Time
	// MaxDKIMSignatures caps DKIM verifications; DefaultMaxDKIMSignatures when zero.
	MaxDKIMSignatures int
	// Timeout bounds the whole verification; DefaultTimeout when zero. Checks
	// still running when it expires end as temperror.
	Timeout time.Duration
	// MaxDecryptedSize bounds how much plaintext one decryption may produce
	// (a compressed message can expand without limit); 64 MiB when zero.
	MaxDecryptedSize int64
}

// settings is Config embedded in Verifier under an unexported name: the
// checks read its fields, nobody changes them after New.
type settings = Config

// Verifier checks messages. One Verifier may serve concurrent calls.
type Verifier struct {
	settings

	// rethrow makes guard re-panic: tests and fuzzing must see the panics
	// that production turns into failure facts.
	rethrow bool
}

// New returns a Verifier. Every dependency is optional (see Config).
func New(cfg Config) (*Verifier, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout < 0 || cfg.MaxDKIMSignatures < 0 || cfg.MaxDecryptedSize < 0 {
		return nil, fmt.Errorf("verify: negative limit in Config")
	}
	return &Verifier{settings: cfg}, nil
}

// Input is one message and what the SMTP session said about it.
type Input struct {
	Raw []byte // the message as received (RFC 5322)
	// Message is Raw parsed (read only, shared between calls); Raw is
	// parsed here when it is nil. The delivery path parses once, in ingest.
	Message  *message.Message
	MailFrom string // envelope sender without <>; "" for the null sender
	ClientIP string // connecting client IP; "" when local (SPF is then not evaluated)
	Helo     string
	// From is the header From address; parsed from Raw when empty.
	From string
	// FromDomain is the From address's domain; derived from From when empty.
	FromDomain string
	// Keys, when set, are the sender's known keys for this call (they
	// depend on the recipient user), instead of Config.Keys.
	Keys KeyLookup
	// RecipientKeys are the recipient's armored private keys held server-side
	// (unlocked), used to decrypt and then check an inner signature.
	RecipientKeys []string
}

// Facts is everything verified about one message.
type Facts struct {
	From       string `json:"from,omitempty"`
	FromDomain string `json:"from_domain,omitempty"`

	DKIM  DKIMFacts  `json:"dkim"`
	SPF   SPFFacts   `json:"spf"`
	DMARC DMARCFacts `json:"dmarc"`
	ARC   ARCFacts   `json:"arc"`
	PGP   PGPFacts   `json:"pgp"`
	Spam  SpamFacts  `json:"spam"`
}

// DKIMFacts is the outcome of DKIM verification.
type DKIMFacts struct {
	// Result is the best outcome over all signatures:
	// pass > temperror > fail > permerror > none.
	Result privacyindex.AuthResult `json:"result"`
	// Aligned: a passing signature's d= aligns with the From domain.
	Aligned    bool            `json:"aligned"`
	Signatures []DKIMSignature `json:"signatures,omitempty"`
	// Skipped counts signatures beyond the cap, not verified.
	Skipped int `json:"skipped,omitempty"`
	// Pending: the check could not complete (Result temperror); it is to be
	// retried, and scores as unknown, never as failed, meanwhile.
	Pending bool `json:"pending,omitempty"`
}

// DKIMSignature is one DKIM-Signature's outcome.
type DKIMSignature struct {
	Domain   string                  `json:"d"`
	Selector string                  `json:"s"`
	Result   privacyindex.AuthResult `json:"result"`
	Aligned  bool                    `json:"aligned"`
	Error    string                  `json:"error,omitempty"`
}

// SPFFacts is the outcome of the SPF check.
type SPFFacts struct {
	Result privacyindex.AuthResult `json:"result"`
	// Identity is "mailfrom", or "helo" for the null sender.
	Identity string `json:"identity,omitempty"`
	Domain   string `json:"domain,omitempty"`
	// Aligned: Result is pass and Domain aligns with the From domain.
	Aligned bool   `json:"aligned"`
	Error   string `json:"error,omitempty"`
	Pending bool   `json:"pending,omitempty"` // as DKIMFacts.Pending
}

// DMARCFacts is the DMARC evaluation.
type DMARCFacts struct {
	// Result is none when no policy exists, pass when an aligned DKIM or SPF
	// pass exists, fail otherwise (temperror/permerror when the policy or an
	// aligned check could not be read).
	Result privacyindex.AuthResult `json:"result"`
	// Domain is where the record was found (From domain or its organisational domain).
	Domain string `json:"domain,omitempty"`
	// Policy is what that record asks for mail from the From domain: p=, or
	// sp= when found at the organisational domain of a subdomain From
	// ("none", "quarantine", "reject"); "" when no record could be read.
	Policy string `json:"policy,omitempty"`
	// Via is "dkim" or "spf": the aligned pass that made DMARC pass (dkim preferred).
	Via     string `json:"via,omitempty"`
	Error   string `json:"error,omitempty"`
	Pending bool   `json:"pending,omitempty"` // as DKIMFacts.Pending
}

// ARCFacts describes the ARC chain (RFC 8617) and its validation.
type ARCFacts struct {
	Sealed    bool `json:"sealed"`              // at least one ARC header present
	Instances int  `json:"instances,omitempty"` // highest i=
	// Sealer is d= of the newest ARC-Seal, the hop that handed us the message.
	Sealer string `json:"sealer,omitempty"`
	// ClaimedCV is the cv= the newest sealer wrote.
	ClaimedCV string `json:"claimed_cv,omitempty"`
	// SealerResults is the newest ARC-Authentication-Results: what that
	// sealer says it verified (DKIM/SPF/DMARC before it forwarded).
	SealerResults string `json:"sealer_results,omitempty"`
	// Result is pass when the whole chain validates, fail when it does not,
	// temperror when a key could not be fetched.
	Result privacyindex.AuthResult `json:"result"`
	// TrustedSealer: the newest sealer is in TrustedARCSealers.
	TrustedSealer bool `json:"trusted_sealer"`
	// Trusted: the chain validates and its newest sealer is trusted.
	Trusted bool   `json:"trusted"`
	Error   string `json:"error,omitempty"`
	Pending bool   `json:"pending,omitempty"` // as DKIMFacts.Pending
}

// SpamFacts is the verdict of a trusted spam filter.
type SpamFacts struct {
	Checked   bool    `json:"checked"` // a trusted verdict was found
	Spam      bool    `json:"spam"`
	Score     float64 `json:"score,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	Source    string  `json:"source,omitempty"` // "spamassassin", "rspamd"
}

// PGPFacts is what OpenPGP analysis established.
type PGPFacts struct {
	// Encryption counts only parts whose data was checked to be encrypted:
	// an OpenPGP message made of session key packets and encrypted data, or
	// CMS (enveloped|authEnveloped)Data; the Content-Type alone is a claim.
	Encryption privacyindex.Encryption `json:"encryption"`
	Strength   privacyindex.Strength   `json:"strength"`
	// Integrity: every encrypted part is integrity protected (SEIPD or AEAD).
	Integrity  bool           `json:"integrity"`
	Recipients []PGPRecipient `json:"recipients,omitempty"`
	Decrypted  bool           `json:"decrypted"`

	// Signature is SigValid only for a valid signature by a key Keys returned
	// for the From address that also has a user ID with that address; any
	// other valid signature is SigValidUnknownKey.
	Signature privacyindex.Signature `json:"signature"`
	// SignerFingerprint is the upper-case hex fingerprint of the key whose
	// valid signature decided Signature (SigValid or SigValidUnknownKey);
	// empty for any other Signature.
	SignerFingerprint string `json:"signer_fingerprint,omitempty"`
	// SignerKnown: the key of SignerFingerprint is one Keys returned for the
	// From address (whether or not it bears that address).
	SignerKnown bool `json:"signer_known"`

	ProtectedHeaders bool `json:"protected_headers"`

	// Keys are keys found in the message: the Autocrypt header and attached
	// application/pgp-keys parts (also inside the decrypted payload).
	Keys []HarvestedKey `json:"keys,omitempty"`

	Problems []string `json:"problems,omitempty"`
}

// PGPRecipient is one public-key encrypted session key packet.
type PGPRecipient struct {
	KeyID     string `json:"key_id"`    // 16 hex digits, "0000000000000000" for a hidden recipient
	Algorithm string `json:"algorithm"` // "rsa", "ecdh", "x25519", "x448", "elgamal", …
	// Bits is the RSA modulus length: exact when the key is known to us
	// (BitsExact), otherwise inferred from the encrypted session key.
	Bits      int  `json:"bits,omitempty"`
	BitsExact bool `json:"bits_exact,omitempty"`
}

// HarvestedKey is a public key found in the message.
type HarvestedKey struct {
	// Key has Fingerprint, Algorithm, Bits, Armored and Source ("autocrypt",
	// "attachment") set; the rest is for the caller to fill.
	Key store.PublicKey `json:"key"`
	// Addr is the Autocrypt addr= attribute.
	Addr string `json:"addr,omitempty"`
	// Emails are the e-mail addresses of the key's user IDs (those with a
	// valid self-signature, not revoked), lowercased and sorted. Whose key
	// it is is what these say, not who attached it: a key belongs to a
	// contact only if one of them is the contact's address.
	Emails []string `json:"emails,omitempty"`
	// PreferEncrypt is the Autocrypt prefer-encrypt attribute ("mutual" or "").
	PreferEncrypt string `json:"prefer_encrypt,omitempty"`
	// Error says why the key could not be used; Key is then mostly empty.
	Error string `json:"error,omitempty"`
}

// Verify checks in and returns its facts. The error is non-nil only when ctx
// is cancelled (the facts then are partial and must not be stored).
func (v *Verifier) Verify(ctx context.Context, in Input) (Facts, error) {
	if err := ctx.Err(); err != nil {
		return Facts{}, fmt.Errorf("verify: %w", err)
	}
	timeout := v.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	vctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	msg := in.message()
	fields, body := []field(msg.Header()), msg.Body()
	var f Facts
	f.From = strings.ToLower(strings.TrimSpace(in.From))
	if f.From == "" {
		f.From = fromAddress(fields)
	}
	f.FromDomain = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(in.FromDomain)), ".")
	if f.FromDomain == "" {
		f.FromDomain = domainOf(f.From)
	}
	log := v.logger().With("from_domain", f.FromDomain)

	// The DNS-bound checks run concurrently: each waits on its own lookups,
	// and the milter holds the SMTP session open meanwhile.
	var (
		wg  sync.WaitGroup
		rec dmarcLookup
	)
	wg.Go(func() {
		v.guard(log, "dmarc", func() { rec = v.lookupDMARC(vctx, f.FromDomain) },
			func() { rec = dmarcLookup{result: privacyindex.AuthPermError, err: "internal error"} })
	})
	wg.Go(func() {
		v.guard(log, "dkim", func() { f.DKIM = v.checkDKIM(vctx, msg.Raw, fields) },
			func() { f.DKIM = DKIMFacts{Result: privacyindex.AuthPermError} })
	})
	wg.Go(func() {
		v.guard(log, "spf", func() { f.SPF = v.checkSPF(vctx, in) },
			func() { f.SPF = SPFFacts{Result: privacyindex.AuthPermError} })
	})
	wg.Go(func() {
		v.guard(log, "arc", func() { f.ARC = v.checkARC(vctx, fields, body) },
			func() { f.ARC = ARCFacts{Sealed: true, Result: privacyindex.AuthPermError} })
	})
	if v.TrustSpamHeaders {
		f.Spam = spamVerdict(fields)
	}
	f.PGP = v.openPGP(vctx, log, in, msg, f.From)
	wg.Wait()

	// DMARC's alignment modes (adkim/aspf) decide what "aligned" means.
	f.DKIM.align(f.FromDomain, rec.strictDKIM())
	f.SPF.align(f.FromDomain, rec.strictSPF())
	f.DMARC = evaluateDMARC(rec, f.FromDomain, f.DKIM, f.SPF)
	f.markPending()

	if err := ctx.Err(); err != nil {
		return Facts{}, fmt.Errorf("verify: %w", err)
	}
	log.Debug("verified",
		"dkim", f.DKIM.Result, "dkim_aligned", f.DKIM.Aligned,
		"spf", f.SPF.Result, "spf_aligned", f.SPF.Aligned,
		"dmarc", f.DMARC.Result, "arc_sealed", f.ARC.Sealed,
		"encryption", f.PGP.Encryption, "signature", f.PGP.Signature)
	return f, nil
}

// markPending flags the checks that could not complete. temperror is the
// only such outcome: every DNS time-out, SERVFAIL, missing resolver and the
// Timeout of the whole verification end there (see dnsresolver).
func (f *Facts) markPending() {
	f.DKIM.Pending = f.DKIM.Result == privacyindex.AuthTempError
	f.SPF.Pending = f.SPF.Result == privacyindex.AuthTempError
	f.DMARC.Pending = f.DMARC.Result == privacyindex.AuthTempError
	f.ARC.Pending = f.ARC.Result == privacyindex.AuthTempError
}

// Pending names the checks that could not complete and are to be retried
// (privacyindex.CheckDKIM, …), in the order the PI lists them.
func (f Facts) Pending() []string {
	var m privacyindex.MessageFeatures
	f.Apply(&m)
	return m.Pending()
}

// OpenPGP runs only the OpenPGP analysis. A message delivered to several
// users is authenticated once (Verify) but decrypts differently for each:
// call OpenPGP per user with that user's RecipientKeys and replace Facts.PGP.
// It never fails; ctx bounds the key lookup.
func (v *Verifier) OpenPGP(ctx context.Context, in Input) PGPFacts {
	msg := in.message()
	from := strings.ToLower(strings.TrimSpace(in.From))
	if from == "" {
		from = fromAddress(msg.Header())
	}
	return v.openPGP(ctx, v.logger(), in, msg, from)
}

// message returns the parsed message, parsing Raw when the caller did not.
func (in *Input) message() *message.Message {
	if in.Message != nil {
		return in.Message
	}
	return message.Parse(in.Raw, message.Options{})
}

func (v *Verifier) openPGP(ctx context.Context, log *slog.Logger, in Input, msg *message.Message, from string) PGPFacts {
	var out PGPFacts
	v.guard(log, "openpgp", func() { out = v.checkPGP(ctx, log, in, msg, from) },
		func() { out = PGPFacts{Problems: []string{"internal error while reading OpenPGP data"}} })
	return out
}

// guard runs check, turning a panic in a third-party parser fed hostile input
// into a logged failure fact (onPanic) instead of killing the mail path.
func (v *Verifier) guard(log *slog.Logger, what string, check, onPanic func()) {
	defer func() {
		if r := recover(); r != nil {
			if v.rethrow {
				panic(r)
			}
			log.Error("verification panicked; recorded as failure", "check", what, "panic", fmt.Sprint(r))
			onPanic()
		}
	}()
	check()
}

func (v *Verifier) logger() *slog.Logger {
	if v.Logger != nil {
		return v.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Apply copies the facts into the Privacy Index features. Key trust (A3),
// transport, history and List-Id are ingest's to fill.
func (f Facts) Apply(m *privacyindex.MessageFeatures) {
	m.DKIM = f.DKIM.Result
	m.DKIMAligned = f.DKIM.Aligned
	m.SPF = f.SPF.Result
	m.SPFAligned = f.SPF.Aligned
	m.DMARC = f.DMARC.Result
	m.DMARCPolicy = f.DMARC.Policy
	m.ARC = f.ARC.Result
	// A trusted sealer's chain that could not be checked yet may still
	// explain a DMARC failure: the model must know the sealer is trusted.
	m.ARCTrusted = f.ARC.Trusted || (f.ARC.Pending && f.ARC.TrustedSealer)
	m.ARCSealed = f.ARC.Sealed

	m.Encryption = f.PGP.Encryption
	m.Strength = f.PGP.Strength
	m.Signature = f.PGP.Signature
	m.ProtectedHeaders = f.PGP.ProtectedHeaders
}
