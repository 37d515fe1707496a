// Package privacyindex is the Privacy Index (PI), model v1.1 (Version 2): a pure
// function from security facts to a score from 0 to 100, a band (A–E), the
// facts that made the score, the caps that limited it and the advice that
// would raise it. It does no I/O and never reads the clock: every time is
// passed in, so the same input always gives the same output.
//
// The model is specified in PRIVACY-INDEX.md; docs/privacy-index.md explains
// it to users and operators.
package privacyindex

import (
	"slices"
	"strings"
)

// Version is the model version stamped on every result. Changing a weight
// means a new version and a recompute of stored scores.
//
// Version 2 is PRIVACY-INDEX.md's v1.1: a check that could not complete is
// pending (no points, no warning, no downgrade), and a DMARC failure where
// the From domain publishes p=quarantine or p=reject is a warning.
const Version = 2

// Warning codes (Result.Warnings). Any warning caps the score at 24 (K5).
const (
	WarnSignatureInvalid = "signature_invalid" // an end-to-end signature does not verify
	WarnKeyChanged       = "key_changed"       // the sender's key changed and the user has not verified the new one
	WarnDowngrade        = "downgrade"         // weaker than this correspondent's usual messages
	WarnDMARCFail        = "dmarc_fail"        // fails DMARC where the From domain asks receivers to quarantine or reject
)

var warningText = map[string]string{
	WarnSignatureInvalid: "the end-to-end signature does not verify",
	WarnKeyChanged:       "the sender's key changed and the new one is not verified",
	WarnDowngrade:        "weaker than this correspondent's usual messages",
	WarnDMARCFail:        "fails DMARC where the From domain asks to quarantine or reject such mail: the From address may be forged",
}

// Fact is one line of a score's explanation. Points and Max are numbers of
// points on the scale of the element scored (message facts are whole points;
// account set-up has half points, hence float64).
type Fact struct {
	ID     string  `json:"id"`
	Label  string  `json:"label"`
	Points float64 `json:"points"`
	Max    float64 `json:"max"`
	// Pending: a check this fact depends on could not complete; the fact
	// may rise once it is retried.
	Pending bool `json:"pending,omitempty"`
}

// Cap is a ceiling that applies to the score. Every applicable cap is listed;
// Binding marks the one that actually lowered the score, if any.
type Cap struct {
	ID      string `json:"id"`
	Limit   int    `json:"limit"`
	Reason  string `json:"reason"`
	Binding bool   `json:"binding"`
}

// Advice is an action that would raise the score. Gain is computed by scoring
// the improved input again, so it accounts for caps and is never overstated.
type Advice struct {
	Action string `json:"action"`
	Text   string `json:"text"`
	Gain   int    `json:"gain"`
}

// Result is a message's Privacy Index, stored as JSON with the message.
type Result struct {
	Version  int      `json:"version"`
	Score    int      `json:"score"`
	Uncapped int      `json:"uncapped"` // sum of the facts before caps
	Band     string   `json:"band"`
	Warning  bool     `json:"warning"`
	Warnings []string `json:"warnings"`
	// Pending lists the checks that could not complete (CheckDKIM, …): the
	// score is provisional until they are retried.
	Pending []string `json:"pending,omitempty"`
	Facts   []Fact   `json:"facts"`
	Caps    []Cap    `json:"caps"`
	Advice  []Advice `json:"advice"`
}

// Message advice action codes.
const (
	ActAskEncrypt        = "ask_encrypt"               // ask the sender to encrypt with OpenPGP (PGP/MIME)
	ActStrongerKey       = "stronger_key"              // the encryption key is weak: move to Curve25519 or RSA ≥ 3072
	ActAskSign           = "ask_sign"                  // ask the sender to sign end to end
	ActVerifyKey         = "verify_key"                // confirm the key's fingerprint with the correspondent
	ActAskDMARC          = "ask_dkim_dmarc"            // ask the sender's provider for aligned DKIM and DMARC
	ActAskTLS            = "ask_tls"                   // ask the sender's provider for TLS 1.3
	ActAskMTASTS         = "ask_mta_sts"               // ask the sender's provider to enforce MTA-STS or DANE
	ActAskProtectHeaders = "ask_protected_headers"     // ask the sender to hide the Subject (protected headers)
	ActResolveDowngrade  = "resolve_downgrade"         // shown with a downgrade warning, without a gain
	ActResolveInvalidSig = "resolve_invalid_signature" // shown with an invalid signature, without a gain
	ActResolveDMARCFail  = "resolve_dmarc_fail"        // shown with a DMARC-fail warning, without a gain
)

// BandOf maps a score to its band: A 80–100, B 60–79, C 25–59, D 10–24, E 0–9.
func BandOf(score int) string {
	switch {
	case score >= 80:
		return "A"
	case score >= 60:
		return "B"
	case score >= 25:
		return "C"
	case score >= 10:
		return "D"
	default:
		return "E"
	}
}

// bandRank orders bands from best (0) to worst; unknown bands rank last.
func bandRank(b string) int {
	switch b {
	case "A":
		return 0
	case "B":
		return 1
	case "C":
		return 2
	case "D":
		return 3
	case "E":
		return 4
	}
	return 5
}

// Fact indexes in evaluation order.
const (
	fC1 = iota
	fC2
	fT1
	fT2
	fT3
	fA1
	fA2
	fA3
	fX1
	fX2
	fX3
	nFacts
)

var factIDs = [nFacts]string{"C1", "C2", "T1", "T2", "T3", "A1", "A2", "A3", "X1", "X2", "X3"}
var factMax = [nFacts]int{35, 10, 15, 5, 5, 8, 5, 7, 3, 3, 4}

// evaluation is the arithmetic of one message, before labels and advice.
type evaluation struct {
	pts       [nFacts]int
	warnings  []string
	uncapped  int
	caps      []Cap
	score     int
	downgrade bool
	// a1Pending, x3Pending: the fact may rise once pending checks complete.
	a1Pending, x3Pending bool
}

// evaluate scores a received message. It is the single source of the
// model's numbers: Message, channel potentials and every advice gain go
// through it (potentials via evaluateOutbound).
func evaluate(f MessageFeatures) evaluation { return evaluateKey(f, true) }

// evaluateOutbound scores a message the user would send: A3 is then the trust
// in the recipient's key we encrypt to, which protects the message whether or
// not the user signs it.
func evaluateOutbound(f MessageFeatures) evaluation { return evaluateKey(f, false) }

// evaluateKey scores f. With signedOnly, A3 counts only for a message validly
// signed by the sender (A2 = 5): anyone can encrypt to the user's public key,
// so an unsigned message says nothing about the sender's key, however well
// that key is known.
func evaluateKey(f MessageFeatures, signedOnly bool) evaluation {
	var e evaluation
	e.pts[fC1] = c1Points(f.Encryption)
	if e.pts[fC1] > 0 {
		e.pts[fC2] = c2Points(f.Strength)
	}
	e.pts[fT1] = T1Points(f.TLSVersion, f.TLSCipher)
	e.pts[fT2] = t2Points(f.Posture)
	e.pts[fT3] = t3Points(f.Hops)
	e.pts[fA1] = a1Points(f)
	e.pts[fA2] = a2Points(f.Signature)
	if !signedOnly || f.Signature == SigValid {
		e.pts[fA3] = a3Points(f.Key)
	}
	if f.ProtectedHeaders {
		e.pts[fX1] = 3
	}
	if !f.ListID && !f.ARCSealed {
		e.pts[fX2] = 3
	}
	e.pts[fX3], e.downgrade, e.x3Pending = x3Points(f, e.pts[fC1], e.pts[fT1])
	e.a1Pending = e.pts[fA1] < factMax[fA1] && len(f.Pending()) > 0

	if f.Signature == SigInvalid {
		e.warnings = append(e.warnings, WarnSignatureInvalid)
	}
	if dmarcFailWarning(f) {
		e.warnings = append(e.warnings, WarnDMARCFail)
	}
	if keyChangeWarning(f) {
		e.warnings = append(e.warnings, WarnKeyChanged)
	}
	if e.downgrade {
		e.warnings = append(e.warnings, WarnDowngrade)
	}

	for _, p := range e.pts {
		e.uncapped += p
	}
	c1, t1, a3 := e.pts[fC1], e.pts[fT1], e.pts[fA3]
	if c1 == 0 && t1 == 0 {
		e.caps = append(e.caps, Cap{ID: "K1", Limit: 9, Reason: "not encrypted end to end and delivered without TLS"})
	}
	if c1 == 0 && t1 <= 4 {
		e.caps = append(e.caps, Cap{ID: "K2", Limit: 24, Reason: "not encrypted end to end and delivered without modern TLS"})
	}
	if c1 == 0 {
		e.caps = append(e.caps, Cap{ID: "K3", Limit: 59, Reason: "not encrypted end to end: providers can read it"})
	}
	if c1 > 0 && a3 < 5 {
		e.caps = append(e.caps, Cap{ID: "K4", Limit: 79, Reason: "not signed with a sender key that is verified or DNSSEC/WKD-published"})
	}
	if len(e.warnings) > 0 {
		reasons := make([]string, len(e.warnings))
		for i, w := range e.warnings {
			reasons[i] = warningText[w]
		}
		e.caps = append(e.caps, Cap{ID: "K5", Limit: 24, Reason: "warning: " + strings.Join(reasons, "; ")})
	}
	e.score = applyCaps(e.uncapped, e.caps)
	return e
}

// applyCaps returns min(score, every limit) and marks the binding cap: the
// lowest limit, when it is below score. On a tie the later cap in the table
// is marked (K5 over K2), as it is the more specific reason.
func applyCaps(score int, caps []Cap) int {
	bind := -1
	for i, c := range caps {
		if c.Limit < score && (bind < 0 || c.Limit <= caps[bind].Limit) {
			bind = i
		}
	}
	if bind >= 0 {
		caps[bind].Binding = true
		score = caps[bind].Limit
	}
	return clamp(score, 0, 100)
}

func clamp(v, lo, hi int) int {
	return min(max(v, lo), hi)
}

func c1Points(e Encryption) int {
	switch e {
	case EncMIME:
		return 35
	case EncInline:
		return 25
	case EncPartial:
		return 10
	}
	return 0
}

func c2Points(s Strength) int {
	switch s {
	case StrengthStrong:
		return 10
	case StrengthRSA2048:
		return 6
	}
	return 0
}

func t2Points(p Posture) int {
	switch p {
	case PostureEnforced:
		return 5
	case PostureMTASTSTesting:
		return 2
	}
	return 0
}

// t3Points: Received: headers are advisory (only ours is trusted), so the
// best they can earn is 5 and "unknown" keeps the neutral 2.
func t3Points(h Hops) int {
	switch {
	case h.AnyClear:
		return 0
	case h.Count >= 1 && h.Count <= 2 && h.AllTLS:
		return 5
	}
	return 2
}

// a1Points is the best rung of the authenticity ladder that our own
// verification reached. A DMARC pass always earns at least the SPF rung (5):
// our verifier only passes DMARC on an aligned identifier, so a pass without
// the aligned DKIM detail is still a verified pass — and it keeps the ladder
// monotone (a DMARC pass never scores below an ARC-explained fail).
func a1Points(f MessageFeatures) int {
	switch {
	case f.DMARC == AuthPass && f.DKIM == AuthPass && f.DKIMAligned:
		return 8
	case f.DMARC == AuthPass:
		return 5
	case f.DMARC == AuthFail && f.ARC == AuthPass && f.ARCTrusted:
		return 3
	case f.DKIM == AuthPass || f.SPF == AuthPass:
		return 2
	}
	return 0
}

func a1Label(f MessageFeatures, e evaluation) string {
	s := a1Rung(f, e.pts[fA1])
	if dmarcFailWarning(f) {
		s = "DMARC fail where the From domain publishes p=" + strings.ToLower(strings.TrimSpace(f.DMARCPolicy)) + "; " + s
	}
	if e.a1Pending {
		s += " (pending: " + strings.Join(f.Pending(), ", ") + " could not be checked yet; retried)"
	}
	return s
}

func a1Rung(f MessageFeatures, pts int) string {
	switch pts {
	case 8:
		return "DMARC pass via aligned DKIM"
	case 5:
		if f.SPF == AuthPass && f.SPFAligned {
			return "DMARC pass via aligned SPF only"
		}
		return "DMARC pass, not via aligned DKIM"
	case 3:
		return "DMARC fail explained by a trusted ARC pass"
	case 2:
		return "DKIM or SPF pass, without a DMARC pass"
	}
	return "no sender authentication passed"
}

// dmarcFailWarning: the From domain asks receivers to quarantine or reject
// mail that fails DMARC, and this message does, with no trusted ARC pass to
// explain it (a forwarder that broke the signature). A pending DMARC
// (temperror) is not a failure, and a pending check of a trusted sealer's
// ARC chain may yet explain one: neither warns.
func dmarcFailWarning(f MessageFeatures) bool {
	if f.DMARC != AuthFail || (f.ARCTrusted && (f.ARC == AuthPass || f.ARC == AuthTempError)) {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(f.DMARCPolicy)) {
	case "quarantine", "reject":
		return true
	}
	return false
}

// a2Points: a signature the server cannot see (inside encryption) is unknown,
// not failed: 0 points and no warning, until a client reports it.
func a2Points(s Signature) int {
	switch s {
	case SigValid:
		return 5
	case SigValidUnknownKey:
		return 2
	}
	return 0
}

func a3Points(k KeyTrust) int {
	switch k {
	case KeyVerified:
		return 7
	case KeyDiscovered:
		return 5
	case KeyConsistent:
		return 3
	case KeyFirstSeen:
		return 1
	}
	return 0
}

// keyChangeWarning: a changed key the user has since verified is no longer a
// warning, whatever the gatherer reported.
func keyChangeWarning(f MessageFeatures) bool {
	return f.KeyChanged && f.Key != KeyVerified
}

// x3Points compares the message with the correspondent's usual: fewer than 3
// earlier messages is no history (2); a lower C1 or T1 class, or DKIM not
// passing where it usually passes, is a downgrade (0 and a warning). A DKIM
// check that could not complete is no downgrade: the comparison waits for
// it (2, pending), as when there is no history.
func x3Points(f MessageFeatures, c1, t1 int) (pts int, downgrade, pending bool) {
	h := f.History
	if h.Messages < 3 {
		return 2, false, false
	}
	if c1 < c1Points(h.UsualEncryption) ||
		t1 < T1Points(h.UsualTLS, h.UsualTLSCipher) ||
		(h.DKIMUsuallyPass && f.DKIM != AuthPass && f.DKIM != AuthTempError) {
		return 0, true, false
	}
	if h.DKIMUsuallyPass && f.DKIM == AuthTempError {
		return 2, false, true
	}
	return 4, false, false
}

// TLS classes (T1 points).
const (
	tlsNone     = 0
	tlsLegacy   = 4  // TLS 1.0 / 1.1
	tls12       = 8  // TLS 1.2 without a forward-secret AEAD suite
	tls12FSAEAD = 12 // TLS 1.2, ECDHE/DHE with GCM or CHACHA20-POLY1305
	tls13       = 15
)

// T1Points classifies a TLS hop from the milter's {tls_version} and {cipher}.
// Versions are accepted as Postfix ("TLSv1.3", "TLSv1"), Go ("TLS 1.3") or
// bare ("1.3"). SSL 2/3 and unrecognised versions earn nothing: the model
// rewards only what it can classify.
func T1Points(version, cipher string) int {
	switch normTLSVersion(version) {
	case "1.3":
		return tls13
	case "1.2":
		if ForwardSecretAEAD(cipher) {
			return tls12FSAEAD
		}
		return tls12
	case "1.0", "1.1":
		return tlsLegacy
	}
	return tlsNone
}

func normTLSVersion(v string) string {
	v = strings.ToLower(strings.TrimSpace(v))
	v = strings.TrimPrefix(v, "tls")
	v = strings.TrimPrefix(v, "v")
	v = strings.TrimSpace(v)
	v = strings.ReplaceAll(v, "_", ".")
	switch v {
	case "1", "1.0":
		return "1.0"
	case "1.1", "1.2", "1.3":
		return v
	}
	return ""
}

// ForwardSecretAEAD reports whether a TLS 1.2 cipher suite has an ephemeral
// (EC)DHE key exchange and an AEAD (GCM or ChaCha20-Poly1305). It accepts
// OpenSSL names ("ECDHE-RSA-AES256-GCM-SHA384") and IANA names
// ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"), in any case. Anonymous suites
// (ADH, AECDH, *_anon_*) do not qualify: nothing authenticates the server.
func ForwardSecretAEAD(cipher string) bool {
	c := strings.ToUpper(strings.TrimSpace(cipher))
	if c == "" || strings.Contains(c, "ANON") {
		return false
	}
	var kx, rest string
	if strings.HasPrefix(c, "TLS_") {
		// IANA: TLS_<kx>_<auth>_WITH_<cipher>_<mac>
		kx, rest, _ = strings.Cut(strings.TrimPrefix(c, "TLS_"), "_WITH_")
		kx, _, _ = strings.Cut(kx, "_")
		rest = "_" + rest + "_"
		aead := strings.Contains(rest, "_GCM_") || strings.Contains(rest, "_CHACHA20_POLY1305_")
		return (kx == "ECDHE" || kx == "DHE") && aead
	}
	// OpenSSL: <kx>-<auth>-<cipher>-<mac>, kx may be EECDH/EDH (old aliases).
	parts := strings.Split(c, "-")
	kx = parts[0]
	rest = "-" + strings.Join(parts[1:], "-") + "-"
	aead := strings.Contains(rest, "-GCM-") || strings.Contains(rest, "-CHACHA20-POLY1305-")
	switch kx {
	case "ECDHE", "DHE", "EECDH", "EDH":
		return aead
	}
	return false
}

// Message computes the Privacy Index of one message.
func Message(f MessageFeatures) Result {
	e := evaluate(f)
	r := Result{
		Version:  Version,
		Score:    e.score,
		Uncapped: e.uncapped,
		Band:     BandOf(e.score),
		Warning:  len(e.warnings) > 0,
		Warnings: append([]string{}, e.warnings...),
		Pending:  f.Pending(),
		Facts:    messageFacts(f, e),
		Caps:     append([]Cap{}, e.caps...),
		Advice:   messageAdvice(f, e),
	}
	return r
}

func messageFacts(f MessageFeatures, e evaluation) []Fact {
	labels := [nFacts]string{
		fC1: c1Label(f.Encryption),
		fC2: c2Label(f, e.pts[fC1]),
		fT1: t1Label(f.TLSVersion, f.TLSCipher, e.pts[fT1]),
		fT2: t2Label(f.Posture),
		fT3: t3Label(f.Hops, e.pts[fT3]),
		fA1: a1Label(f, e),
		fA2: a2Label(f.Signature),
		fA3: a3Label(f, e.pts[fA3]),
		fX1: x1Label(f.ProtectedHeaders),
		fX2: x2Label(f),
		fX3: x3Label(f, e),
	}
	out := buildFacts(e.pts, labels)
	out[fA1].Pending, out[fX3].Pending = e.a1Pending, e.x3Pending
	return out
}

func buildFacts(pts [nFacts]int, labels [nFacts]string) []Fact {
	out := make([]Fact, nFacts)
	for i := range out {
		out[i] = Fact{ID: factIDs[i], Label: labels[i], Points: float64(pts[i]), Max: float64(factMax[i])}
	}
	return out
}

func c1Label(e Encryption) string {
	switch e {
	case EncMIME:
		return "encrypted end to end (PGP/MIME or S/MIME)"
	case EncInline:
		return "encrypted end to end (inline PGP)"
	case EncPartial:
		return "only some parts encrypted end to end"
	}
	return "not encrypted end to end: providers can read it"
}

func c2Label(f MessageFeatures, c1 int) string {
	if c1 == 0 {
		return "encryption strength: not applicable"
	}
	switch f.Strength {
	case StrengthStrong:
		return "strong encryption (ECC or RSA ≥ 3072)"
	case StrengthRSA2048:
		return "RSA 2048 encryption"
	}
	return "weak or unknown encryption, or no integrity protection"
}

func t1Label(version, cipher string, pts int) string {
	if cipher = strings.TrimSpace(cipher); cipher != "" {
		cipher = " (" + cipher + ")"
	}
	switch pts {
	case tls13:
		return "delivered to us over TLS 1.3"
	case tls12FSAEAD:
		return "delivered to us over TLS 1.2 with forward secrecy" + cipher
	case tls12:
		return "delivered to us over TLS 1.2 without a forward-secret AEAD suite" + cipher
	case tlsLegacy:
		return "delivered to us over obsolete TLS (" + version + ")"
	}
	if strings.TrimSpace(version) != "" {
		return "delivered to us over an unrecognised or broken protocol (" + version + ")"
	}
	return "delivered to us without TLS"
}

func t2Label(p Posture) string {
	switch p {
	case PostureEnforced:
		return "sender's domain enforces MTA-STS or DANE"
	case PostureMTASTSTesting:
		return "sender's domain has MTA-STS in testing mode"
	}
	return "sender's domain publishes no MTA-STS or DANE policy"
}

func t3Label(h Hops, pts int) string {
	switch {
	case pts == 0:
		return "an upstream hop was in clear (advisory)"
	case pts == 5:
		return "upstream hops all claim TLS (advisory)"
	case h.Count == 0:
		return "no upstream hop: came straight from the sender's server"
	}
	return "upstream hops mixed, unknown or too many (advisory)"
}

func a2Label(s Signature) string {
	switch s {
	case SigValid:
		return "valid end-to-end signature by the sender"
	case SigValidUnknownKey:
		return "valid end-to-end signature, but unknown key or signer does not match From"
	case SigUnknown:
		return "end-to-end signature not visible to the server (unknown, not failed)"
	case SigInvalid:
		return "end-to-end signature does not verify"
	}
	return "no end-to-end signature"
}

func a3Label(f MessageFeatures, pts int) string {
	var s string
	switch {
	case pts == 0 && f.Key > KeyNone && f.Key <= KeyVerified:
		s = "sender's key known, but this message is not validly signed with it"
	case f.Key == KeyVerified:
		s = "sender's key verified by you"
	case f.Key == KeyDiscovered:
		s = "sender's key found via DNSSEC-validated OPENPGPKEY or WKD"
	case f.Key == KeyConsistent:
		s = "same sender key seen on at least 3 messages"
	case f.Key == KeyFirstSeen:
		s = "sender's key seen for the first time"
	default:
		s = "no key known for the sender"
	}
	if keyChangeWarning(f) {
		s += "; the key changed and you have not verified the new one"
	}
	return s
}

func x1Label(on bool) string {
	if on {
		return "metadata protected (hidden Subject)"
	}
	return "metadata not protected"
}

func x2Label(f MessageFeatures) string {
	switch {
	case f.ListID:
		return "came through a mailing list"
	case f.ARCSealed:
		return "came through a forwarder (ARC sealed)"
	}
	return "came from the sender's provider directly"
}

func x3Label(f MessageFeatures, e evaluation) string {
	switch {
	case f.History.Messages < 3:
		return "fewer than 3 earlier messages from this correspondent"
	case e.downgrade:
		return "downgrade: weaker than this correspondent's usual messages"
	case e.x3Pending:
		return "comparison with this correspondent's history pending: DKIM could not be checked yet"
	}
	return "consistent with this correspondent's history"
}

// messageAdvice proposes what the user (or, through the user, the sender)
// could change; each gain is the rescored difference, and advice that would
// not raise the score is left out. Warnings come first, without a gain: the
// score only recovers once the cause is understood.
func messageAdvice(f MessageFeatures, e evaluation) []Advice {
	out := []Advice{}
	for _, w := range e.warnings {
		switch w {
		case WarnSignatureInvalid:
			out = append(out, Advice{Action: ActResolveInvalidSig,
				Text: "The signature does not verify: the message may have been altered or forged. Check with the sender through another channel."})
		case WarnDowngrade:
			out = append(out, Advice{Action: ActResolveDowngrade,
				Text: "This message is weaker than what this correspondent usually sends: check with them through another channel before trusting it."})
		case WarnDMARCFail:
			out = append(out, Advice{Action: ActResolveDMARCFail,
				Text: "The sender's domain asks that mail failing its authentication be quarantined or rejected, and this message fails it: the From address may be forged. Do not trust it without checking with the sender through another channel."})
		}
	}
	try := func(action, text string, change func(*MessageFeatures)) {
		g := f
		change(&g)
		if gain := evaluate(g).score - e.score; gain > 0 {
			out = append(out, Advice{Action: action, Text: text, Gain: gain})
		}
	}
	scored := len(out)
	if keyChangeWarning(f) || (f.Key != KeyNone && f.Key < KeyVerified) {
		try(ActVerifyKey, "Confirm the sender's key fingerprint with them (in person or by another channel).",
			func(g *MessageFeatures) { g.Key, g.KeyChanged = KeyVerified, false })
	}
	if f.Encryption != EncMIME {
		try(ActAskEncrypt, "Ask the sender to encrypt to your key with OpenPGP (PGP/MIME).",
			func(g *MessageFeatures) { g.Encryption, g.Strength = EncMIME, StrengthStrong })
	} else if f.Strength != StrengthStrong {
		try(ActStrongerKey, "Use a modern key (Curve25519, or RSA of at least 3072 bits) so that encryption to you is strong.",
			func(g *MessageFeatures) { g.Strength = StrengthStrong })
	}
	if f.Signature == SigNone || f.Signature == SigValidUnknownKey {
		try(ActAskSign, "Ask the sender to sign their messages with their OpenPGP key, and get that key.",
			func(g *MessageFeatures) {
				g.Signature = SigValid
				if g.Key == KeyNone {
					g.Key = KeyFirstSeen
				}
			})
	}
	if f.Encryption != EncNone && !f.ProtectedHeaders {
		try(ActAskProtectHeaders, "Ask the sender to enable protected headers so the Subject is encrypted too.",
			func(g *MessageFeatures) { g.ProtectedHeaders = true })
	}
	try(ActAskTLS, "Ask the sender's provider to deliver over TLS 1.3.",
		func(g *MessageFeatures) { g.TLSVersion, g.TLSCipher = "TLSv1.3", "TLS_AES_256_GCM_SHA384" })
	if !slices.Contains(f.Pending(), CheckDKIM) && !slices.Contains(f.Pending(), CheckDMARC) {
		// While DKIM or DMARC is pending, what the provider does is not known yet.
		try(ActAskDMARC, "Ask the sender's provider to sign with DKIM aligned with their address and to publish DMARC.",
			func(g *MessageFeatures) { g.DKIM, g.DKIMAligned, g.DMARC = AuthPass, true, AuthPass })
	}
	try(ActAskMTASTS, "Ask the sender's provider to enforce MTA-STS or DANE for their domain.",
		func(g *MessageFeatures) { g.Posture = PostureEnforced })
	sortAdvice(out[scored:])
	return out
}

// sortAdvice orders by gain, largest first; stable, so ties keep the order
// in which the advice was proposed (a fixed order: deterministic output).
func sortAdvice(a []Advice) {
	slices.SortStableFunc(a, func(x, y Advice) int { return y.Gain - x.Gain })
}
