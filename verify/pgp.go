package verify

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/privacyindex"
)

const (
	defaultMaxDecrypted = 64 << 20
	maxHarvestedKeys    = 10 // keys kept from one message
)

// pgpRun holds the keys and settings of one message's OpenPGP analysis.
type pgpRun struct {
	v     *Verifier
	log   *slog.Logger
	cfg   *packet.Config
	ring  openpgp.EntityList
	from  string          // the From address, lowercased
	known map[string]bool // fingerprints of keys we hold for the From address
	// knownEmails are the user-ID addresses of the known keys, by fingerprint.
	knownEmails map[string]map[string]bool
	keyBits     map[uint64]keyInfo
	maxPlain    int64
	facts       *PGPFacts
}

type keyInfo struct {
	algo packet.PublicKeyAlgorithm
	bits int
}

func (v *Verifier) checkPGP(ctx context.Context, log *slog.Logger, in Input, msg *message.Message, from string) PGPFacts {
	var out PGPFacts
	limit := v.MaxDecryptedSize
	if limit <= 0 {
		limit = defaultMaxDecrypted
	}
	cl := &msg.Class
	out.Encryption = cl.Encryption

	r := &pgpRun{
		v: v, log: log, maxPlain: limit, facts: &out,
		cfg:         &packet.Config{Time: v.now},
		from:        from,
		known:       make(map[string]bool),
		knownEmails: make(map[string]map[string]bool),
		keyBits:     make(map[uint64]keyInfo),
	}

	// Keys: what we hold for the sender, what the message carries, and the
	// recipient's own private keys (which also decrypt). The store lookup and
	// private-key parsing are skipped for the common message with nothing to
	// decrypt or verify.
	needKeys := len(cl.Ciphertexts) > 0 || len(cl.Signed) > 0 || len(cl.ClearSigned) > 0
	keys := in.Keys
	if keys == nil {
		keys = v.Keys
	}
	if needKeys && keys != nil && from != "" {
		armored, err := keys.PublicKeys(ctx, from)
		if err != nil {
			log.Warn("public key lookup failed; signatures checked without known keys", "from", from, "err", err)
			out.Problems = append(out.Problems, "known keys unavailable")
		}
		for _, a := range armored {
			el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(a))
			if err != nil {
				out.Problems = append(out.Problems, "a stored key of the sender does not parse: "+err.Error())
				continue
			}
			for _, e := range el {
				fp := fingerprint(e.PrimaryKey)
				r.known[fp] = true
				if r.knownEmails[fp] == nil {
					r.knownEmails[fp] = make(map[string]bool)
				}
				for _, addr := range entityEmails(e, v.now()) {
					r.knownEmails[fp][addr] = true
				}
			}
			r.add(el)
		}
	}
	out.Keys = append(out.Keys, autocryptKeys(cl.Autocrypt, from, r)...)
	for _, k := range cl.Keys {
		if len(out.Keys) >= maxHarvestedKeys {
			break
		}
		out.Keys = append(out.Keys, attachedKeys(k, r)...)
	}
	for _, a := range in.RecipientKeys {
		if len(cl.Ciphertexts) == 0 {
			break
		}
		el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(a))
		if err != nil {
			out.Problems = append(out.Problems, "a recipient private key does not parse: "+err.Error())
			continue
		}
		r.add(el)
	}

	out.ProtectedHeaders = cl.ProtectedHeaders

	if cl.Mislabelled > 0 {
		out.Problems = append(out.Problems, fmt.Sprintf("%d part(s) labelled encrypted hold no encrypted data; counted as readable", cl.Mislabelled))
	}

	var sigs []sigResult
	if slices.ContainsFunc(cl.Ciphertexts, func(c message.Ciphertext) bool { return c.Encrypted }) {
		out.Strength = privacyindex.StrengthStrong
		out.Integrity = true
	} else if out.Encryption != privacyindex.EncNone {
		// S/MIME: we do not read CMS, so its strength is unknown ⇒ weak.
		out.Strength = privacyindex.StrengthWeak
	}
	for _, c := range cl.Ciphertexts {
		if c.Encrypted {
			st, integ := r.analyse(c.Data)
			out.Strength = min(out.Strength, st)
			out.Integrity = out.Integrity && integ
		}
		if ctx.Err() != nil {
			return out
		}
		sigs = append(sigs, r.decrypt(c))
	}
	sigs = append(sigs, r.signatures(&msg.Class)...)
	res := combineSignatures(sigs)
	out.Signature, out.SignerFingerprint, out.SignerKnown = res.state, res.signer, res.known
	return out
}

// add puts keys in the keyring and records their sizes by key id.
func (r *pgpRun) add(el openpgp.EntityList) {
	for _, e := range el {
		r.ring = append(r.ring, e)
		r.note(e.PrimaryKey)
		for _, sk := range e.Subkeys {
			r.note(sk.PublicKey)
		}
	}
}

func (r *pgpRun) note(pk *packet.PublicKey) {
	if pk == nil {
		return
	}
	bl, _ := pk.BitLength()
	r.keyBits[pk.KeyId] = keyInfo{algo: pk.PubKeyAlgo, bits: int(bl)}
}

// analyse reads the packet structure of an OpenPGP message (no decryption):
// who it is encrypted to, with which algorithms, and whether the data packet
// is integrity protected.
func (r *pgpRun) analyse(data []byte) (privacyindex.Strength, bool) {
	bin, err := message.Dearmor(data)
	if err != nil {
		r.facts.Problems = append(r.facts.Problems, "encrypted part does not parse: "+err.Error())
		return privacyindex.StrengthWeak, false
	}
	strength := privacyindex.StrengthStrong
	integrity, sawData, sawPKESK := false, false, false
	or := packet.NewOpaqueReader(bytes.NewReader(bin))
	for range 64 {
		op, err := or.Next()
		if err != nil {
			break
		}
		switch op.Tag {
		case 1: // public-key encrypted session key
			sawPKESK = true
			rec := r.pkesk(op.Contents)
			r.facts.Recipients = append(r.facts.Recipients, rec)
			strength = min(strength, recipientStrength(rec))
		case 3: // passphrase-encrypted session key: its strength is the passphrase's
			strength = privacyindex.StrengthWeak
		case 9: // legacy SED, no integrity protection (EFAIL)
			sawData = true
		case 18, 20: // SEIPD (v1 MDC, v2 AEAD), or the AEAD draft packet
			sawData, integrity = true, true
		}
		if sawData {
			break
		}
	}
	if !sawPKESK || !integrity {
		strength = privacyindex.StrengthWeak
	}
	return strength, integrity
}

// pkesk parses a PKESK packet body (RFC 9580 §5.1) far enough to name the
// recipient key and, for RSA, the size of the encrypted session key.
func (r *pgpRun) pkesk(c []byte) PGPRecipient {
	rec := PGPRecipient{Algorithm: "unknown"}
	if len(c) < 1 {
		return rec
	}
	var (
		keyID uint64
		rest  []byte
	)
	switch c[0] {
	case 3:
		if len(c) < 10 {
			return rec
		}
		keyID = binary.BigEndian.Uint64(c[1:9])
		rest = c[9:]
	case 6:
		if len(c) < 2 || len(c) < 2+int(c[1])+1 {
			return rec
		}
		n := int(c[1])
		if n > 1 {
			fp := c[3 : 2+n]
			switch c[2] {
			case 6:
				if len(fp) >= 8 {
					keyID = binary.BigEndian.Uint64(fp[:8])
				}
			case 4:
				if len(fp) >= 8 {
					keyID = binary.BigEndian.Uint64(fp[len(fp)-8:])
				}
			}
		}
		rest = c[2+n:]
	default:
		return rec
	}
	rec.KeyID = fmt.Sprintf("%016X", keyID)
	algo := packet.PublicKeyAlgorithm(rest[0])
	rec.Algorithm = AlgorithmName(algo)
	if ki, ok := r.keyBits[keyID]; ok && keyID != 0 {
		if isRSA(ki.algo) {
			rec.Bits, rec.BitsExact = ki.bits, true
		}
		return rec
	}
	if isRSA(algo) && len(rest) >= 3 {
		// The encrypted session key m^e mod n is below n, so its bit length
		// bounds the modulus from below; with overwhelming probability it is
		// within a few bits of it. Real keys come in multiples of 1024 bits,
		// so a value just under one is rounded up to it.
		b := int(binary.BigEndian.Uint16(rest[1:3]))
		if up := (b + 1023) / 1024 * 1024; up-b < 64 {
			b = up
		}
		rec.Bits = b
	}
	return rec
}

func recipientStrength(rec PGPRecipient) privacyindex.Strength {
	switch rec.Algorithm {
	case "ecdh", "x25519", "x448", "mlkem768-x25519", "mlkem1024-x448":
		return privacyindex.StrengthStrong
	case "rsa":
		switch {
		case rec.Bits >= 3072:
			return privacyindex.StrengthStrong
		case rec.Bits >= 2048:
			return privacyindex.StrengthRSA2048
		}
	}
	return privacyindex.StrengthWeak
}

func isRSA(a packet.PublicKeyAlgorithm) bool {
	return a == packet.PubKeyAlgoRSA || a == packet.PubKeyAlgoRSAEncryptOnly || a == packet.PubKeyAlgoRSASignOnly
}

// AlgorithmName names a public-key algorithm the way store.PublicKey does.
func AlgorithmName(a packet.PublicKeyAlgorithm) string {
	switch a {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoRSASignOnly:
		return "rsa"
	case packet.PubKeyAlgoElGamal:
		return "elgamal"
	case packet.PubKeyAlgoDSA:
		return "dsa"
	case packet.PubKeyAlgoECDH:
		return "ecdh"
	case packet.PubKeyAlgoECDSA:
		return "ecdsa"
	case packet.PubKeyAlgoEdDSA, packet.PubKeyAlgoEd25519:
		return "ed25519"
	case packet.PubKeyAlgoEd448:
		return "ed448"
	case packet.PubKeyAlgoX25519:
		return "x25519"
	case packet.PubKeyAlgoX448:
		return "x448"
	case packet.PubKeyAlgoMlkem768X25519:
		return "mlkem768-x25519"
	case packet.PubKeyAlgoMlkem1024X448:
		return "mlkem1024-x448"
	}
	return fmt.Sprintf("algo-%d", a)
}

// decrypt decrypts c with the recipient's keys when it can and returns the
// state of the signature found inside. Without a usable private key the
// content, and so any signature, is out of sight: SigUnknown.
func (r *pgpRun) decrypt(c message.Ciphertext) sigResult {
	unknown := sigResult{state: privacyindex.SigUnknown}
	bin, err := message.Dearmor(c.Data)
	if err != nil || !r.hasPrivate() {
		return unknown
	}
	md, err := openpgp.ReadMessage(bytes.NewReader(bin), r.ring, nil, r.cfg)
	if err != nil {
		if !errors.Is(err, pgperrors.ErrKeyIncorrect) {
			r.facts.Problems = append(r.facts.Problems, "decryption failed: "+err.Error())
		}
		return unknown
	}
	if md.IsEncrypted {
		r.facts.Decrypted = true
	}
	plain, rerr := io.ReadAll(io.LimitReader(md.UnverifiedBody, r.maxPlain+1))
	if int64(len(plain)) > r.maxPlain {
		r.facts.Problems = append(r.facts.Problems, "decrypted content over the size limit; not checked")
		return unknown
	}
	var outer sigResult
	switch {
	case rerr != nil:
		// The integrity check (MDC/AEAD) or the signature failed while
		// reading: what was signed is not what arrived.
		r.facts.Problems = append(r.facts.Problems, "decrypted content failed its integrity check: "+rerr.Error())
		r.facts.Integrity = false
		if md.IsSigned {
			return sigResult{state: privacyindex.SigInvalid}
		}
		return sigResult{state: privacyindex.SigNone}
	case !md.IsSigned:
		outer = sigResult{state: privacyindex.SigNone}
	case md.SignedBy == nil:
		outer = unknown
	default:
		outer = r.sigState(md.SignedBy.Entity, md.SignatureError)
	}
	if !c.MIME {
		return outer
	}
	// PGP/MIME: the plaintext is a MIME entity that may carry protected
	// headers, a multipart/signed (sign-then-encrypt as separate steps), keys.
	inner := message.Parse(plain, message.Options{MaxDecodedBytes: r.maxPlain})
	if inner.Class.ProtectedHeadersV1 || inner.Header().Get("Subject") != "" {
		r.facts.ProtectedHeaders = true
	}
	for _, k := range inner.Class.Keys {
		if len(r.facts.Keys) >= maxHarvestedKeys {
			break
		}
		r.facts.Keys = append(r.facts.Keys, attachedKeys(k, r)...)
	}
	return combineSignatures(append([]sigResult{outer}, r.signatures(&inner.Class)...))
}

// signatures checks the detached and clear-signed signatures of a message.
func (r *pgpRun) signatures(cl *message.Classification) []sigResult {
	var sigs []sigResult
	for _, sp := range cl.Signed {
		sigs = append(sigs, r.verifyDetached(canonicalCRLF(sp.Data), sp.Signature))
	}
	for _, cs := range cl.ClearSigned {
		sigs = append(sigs, r.verifyClearsigned(cs))
	}
	return sigs
}

// canonicalCRLF rewrites bare LF line endings as CRLF: RFC 3156 signatures are
// computed over the canonical form, and an adapter may hand us LF-only bytes.
func canonicalCRLF(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) {
		return b
	}
	var out bytes.Buffer
	out.Grow(len(b) + len(b)/40)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out.WriteByte('\r')
		}
		out.WriteByte(c)
	}
	return out.Bytes()
}

func (r *pgpRun) hasPrivate() bool {
	for _, e := range r.ring {
		if e.PrivateKey != nil {
			return true
		}
		for _, sk := range e.Subkeys {
			if sk.PrivateKey != nil {
				return true
			}
		}
	}
	return false
}

// verifyDetached checks an RFC 3156 detached signature over data.
func (r *pgpRun) verifyDetached(data, sig []byte) sigResult {
	var (
		signer *openpgp.Entity
		err    error
	)
	if bytes.Contains(sig, []byte(message.ArmorSignature)) {
		signer, err = openpgp.CheckArmoredDetachedSignature(r.ring, bytes.NewReader(data), bytes.NewReader(sig), r.cfg)
	} else {
		signer, err = openpgp.CheckDetachedSignature(r.ring, bytes.NewReader(data), bytes.NewReader(sig), r.cfg)
	}
	return r.sigState(signer, err)
}

// verifyClearsigned checks an inline "BEGIN PGP SIGNED MESSAGE" block.
func (r *pgpRun) verifyClearsigned(body []byte) sigResult {
	blk, _ := clearsign.Decode(body)
	if blk == nil {
		r.facts.Problems = append(r.facts.Problems, "inline signed block does not parse")
		return sigResult{state: privacyindex.SigInvalid}
	}
	signer, err := blk.VerifySignature(r.ring, r.cfg)
	return r.sigState(signer, err)
}

// sigResult is the outcome of one signature check.
type sigResult struct {
	state privacyindex.Signature
	// signer is the fingerprint of the key that made a valid signature
	// (SigValid, SigValidUnknownKey), "" otherwise.
	signer string
	// known: signer is one of the keys we hold for the From address.
	known bool
}

// sigState maps a verification outcome to fact A2. A valid signature is
// SigValid ("signer matches From") only when the key is one we hold for the
// From address and one of its user IDs (self-signed, not revoked) is that
// address: a key the sender attached, or one stored under From without
// bearing it, proves nothing about who From is.
func (r *pgpRun) sigState(signer *openpgp.Entity, err error) sigResult {
	var unsupported pgperrors.UnsupportedError
	switch {
	case err == nil && signer != nil:
		res := sigResult{state: privacyindex.SigValidUnknownKey, signer: fingerprint(signer.PrimaryKey)}
		if r.known[res.signer] {
			res.known = true
			if r.from != "" && r.knownEmails[res.signer][r.from] {
				res.state = privacyindex.SigValid
			} else {
				r.facts.Problems = append(r.facts.Problems, "signed by a known key with no user ID for the From address")
			}
		}
		return res
	case err == nil:
		return sigResult{state: privacyindex.SigUnknown}
	case errors.Is(err, pgperrors.ErrUnknownIssuer), errors.As(err, &unsupported):
		// We hold no key for the signer, or cannot run its algorithm: the
		// signature may well be good; we just cannot tell.
		return sigResult{state: privacyindex.SigUnknown}
	case errors.Is(err, pgperrors.ErrKeyExpired), errors.Is(err, pgperrors.ErrSignatureExpired):
		// Not a forgery, but nothing we can vouch for today either.
		r.facts.Problems = append(r.facts.Problems, "signature not checkable now: "+err.Error())
		return sigResult{state: privacyindex.SigUnknown}
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		r.facts.Problems = append(r.facts.Problems, "signed with a revoked key: "+err.Error())
		return sigResult{state: privacyindex.SigInvalid}
	default:
		r.facts.Problems = append(r.facts.Problems, "signature does not verify: "+err.Error())
		return sigResult{state: privacyindex.SigInvalid}
	}
}

// combineSignatures reduces several signature outcomes to one: any invalid
// signature taints the message (it is the warning case, with no signer);
// otherwise the best, the first of equals. The result keeps the signer of
// the signature that decided it.
func combineSignatures(sigs []sigResult) sigResult {
	rank := map[privacyindex.Signature]int{
		privacyindex.SigNone:            0,
		privacyindex.SigUnknown:         1,
		privacyindex.SigValidUnknownKey: 2,
		privacyindex.SigValid:           3,
	}
	best := sigResult{state: privacyindex.SigNone}
	for _, s := range sigs {
		if s.state == privacyindex.SigInvalid {
			return sigResult{state: privacyindex.SigInvalid}
		}
		if rank[s.state] > rank[best.state] {
			best = s
		}
	}
	return best
}

// entityEmails returns the e-mail addresses of e's user IDs, lowercased,
// sorted and without duplicates. Only identities with a valid self-signature
// are in Identities (go-crypto drops the others when reading); revoked ones
// are left out here.
func entityEmails(e *openpgp.Entity, now time.Time) []string {
	var out []string
	for _, id := range e.Identities {
		if id == nil || id.UserId == nil || id.SelfSignature == nil || uidRevoked(id, now) {
			continue
		}
		addr := strings.ToLower(strings.TrimSpace(id.UserId.Email))
		if addr == "" || !strings.Contains(addr, "@") || slices.Contains(out, addr) {
			continue
		}
		out = append(out, addr)
	}
	slices.Sort(out)
	return out
}

// uidRevoked: the user ID is revoked now, or by a revocation at least as
// new as its self-signature. go-crypto counts a revocation dated ahead of
// the clock as not yet in force, and GnuPG dates one a second ahead when it
// must follow a self-signature made the same second; a user ID its owner
// withdrew must not vouch for an address in the meantime.
func uidRevoked(id *openpgp.Identity, now time.Time) bool {
	if id.Revoked(now) {
		return true
	}
	return slices.ContainsFunc(id.Revocations, func(rev *packet.Signature) bool {
		return !rev.CreationTime.Before(id.SelfSignature.CreationTime)
	})
}

func fingerprint(pk *packet.PublicKey) string {
	if pk == nil {
		return ""
	}
	return strings.ToUpper(hex.EncodeToString(pk.Fingerprint))
}

// keyBitLength is the size a person would quote: the modulus for RSA, the
// curve for ECC.
func keyBitLength(pk *packet.PublicKey) int {
	b, err := pk.BitLength()
	if err != nil {
		return 0
	}
	return int(b)
}
