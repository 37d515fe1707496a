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
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/caliopen/caliopen/privacyindex"
)

const (
	defaultMaxDecrypted = 64 << 20
	maxCiphertexts      = 8  // encrypted blobs analysed per message
	maxSignedParts      = 8  // signatures checked per message
	maxHarvestedKeys    = 10 // keys kept from one message
	maxKeyBytes         = 1 << 20
)

const (
	armorMessage = "-----BEGIN PGP MESSAGE-----"
	armorSigned  = "-----BEGIN PGP SIGNED MESSAGE-----"
)

// hiddenSubjects are the placeholders clients put in the outer Subject when
// the real one travels in protected headers (Autocrypt, Enigmail, K-9, Proton).
var hiddenSubjects = []string{"...", "…", "[...]", "encrypted message", "encrypted subject"}

// pgpScan is what one walk over a MIME tree found.
type pgpScan struct {
	rootMIME    bool // the entity itself is multipart/encrypted (PGP/MIME)
	rootSMIME   bool // the entity itself is S/MIME enveloped data
	mimeEnc     int  // PGP/MIME entities below the root
	inlineEnc   int  // leaves carrying an OpenPGP message (inline or attached)
	plain       int  // non-empty leaves that are not encrypted, keys or signatures
	mislabelled int  // parts labelled encrypted whose data is not encrypted
	ciphers     []cipherBlob
	signed      []signedPart
	clearsigned [][]byte
	keys        [][]byte // application/pgp-keys bodies
	parts       int
	protected   bool // protected-headers seen on this entity
}

type cipherBlob struct {
	data []byte // armored or binary OpenPGP message
	mime bool   // from a PGP/MIME entity: the plaintext is a MIME entity
	// enc: data parses as an encrypted OpenPGP message (session key packets
	// then encrypted data). An armored message that is only signed is kept
	// for its signature but is not encryption.
	enc bool
}

type signedPart struct {
	data []byte // the exact signed bytes (first child of multipart/signed)
	sig  []byte // the detached signature
}

func (s *pgpScan) walk(raw []byte, depth int, limit int64) {
	s.parts++
	if depth > maxMIMEDepth || s.parts > maxMIMEParts {
		return
	}
	p := parsePart(raw)
	isRoot := depth == 0
	if isRoot && strings.EqualFold(p.params["protected-headers"], "v1") {
		s.protected = true
	}
	switch {
	case p.mediaType == "multipart/encrypted":
		kids := p.children()
		if len(kids) < 2 || !strings.EqualFold(p.params["protocol"], "application/pgp-encrypted") {
			s.plain++
			return
		}
		data := parsePart(kids[1]).decoded(limit)
		if !isEncryptedOpenPGP(data) {
			// The label says encrypted, the data is readable: it is what
			// the data is that counts.
			s.mislabelled++
			if len(bytes.TrimSpace(data)) > 0 {
				s.plain++
			}
			return
		}
		if isRoot {
			s.rootMIME = true
		} else {
			s.mimeEnc++
		}
		if len(s.ciphers) < maxCiphertexts {
			s.ciphers = append(s.ciphers, cipherBlob{data: data, mime: true, enc: true})
		}
		return
	case p.mediaType == "multipart/signed":
		kids := p.children()
		if len(kids) >= 2 && strings.EqualFold(p.params["protocol"], "application/pgp-signature") &&
			len(s.signed) < maxSignedParts {
			s.signed = append(s.signed, signedPart{data: kids[0], sig: parsePart(kids[1]).decoded(maxKeyBytes)})
		}
		if len(kids) > 0 {
			s.walk(kids[0], depth+1, limit)
		}
		return
	case p.isMultipart():
		for _, k := range p.children() {
			s.walk(k, depth+1, limit)
		}
		return
	case p.mediaType == "application/pkcs7-mime" || p.mediaType == "application/x-pkcs7-mime":
		st := strings.ToLower(p.params["smime-type"])
		if st == "enveloped-data" || st == "authenveloped-data" || (st == "" && strings.HasSuffix(strings.ToLower(p.filename()), ".p7m")) {
			if isCMSEnveloped(p.decoded(limit)) {
				if isRoot {
					s.rootSMIME = true
				} else {
					s.inlineEnc++
				}
				return
			}
			// Not CMS enveloped data whatever the label says: read on as
			// an ordinary part.
			if st != "" {
				s.mislabelled++
			}
		}
	case p.mediaType == "application/pgp-keys":
		if len(s.keys) < maxHarvestedKeys {
			s.keys = append(s.keys, p.decoded(maxKeyBytes))
		}
		return
	case p.mediaType == "application/pgp-signature":
		return
	}

	body := p.decoded(limit)
	switch {
	case bytes.Contains(body, []byte(armorMessage)):
		// Armored "PGP MESSAGE" is also what a signed-only message looks
		// like, or a pasted fake: only real encrypted data counts.
		enc := isEncryptedOpenPGP(body)
		if enc {
			s.inlineEnc++
		} else {
			s.plain++
		}
		if len(s.ciphers) < maxCiphertexts {
			s.ciphers = append(s.ciphers, cipherBlob{data: body, enc: enc})
		}
	case p.mediaType == "application/pgp-encrypted":
		// The "Version: 1" control part, or an empty one: not content.
	case bytes.Contains(body, []byte(armorSigned)):
		s.plain++
		if len(s.clearsigned) < maxSignedParts {
			s.clearsigned = append(s.clearsigned, body)
		}
	case isBinaryPGPAttachment(p, body):
		s.inlineEnc++
		if len(s.ciphers) < maxCiphertexts {
			s.ciphers = append(s.ciphers, cipherBlob{data: body, enc: true})
		}
	case len(bytes.TrimSpace(body)) > 0:
		s.plain++
	}
}

// isBinaryPGPAttachment recognises a .pgp/.gpg attachment holding a binary
// encrypted OpenPGP message.
func isBinaryPGPAttachment(p part, body []byte) bool {
	name := strings.ToLower(p.filename())
	if !strings.HasSuffix(name, ".pgp") && !strings.HasSuffix(name, ".gpg") || len(body) == 0 {
		return false
	}
	return isEncryptedOpenPGP(body)
}

// maxESKPackets bounds the session key packets read before the encrypted
// data: one per recipient (and passphrase).
const maxESKPackets = 1000

// isEncryptedOpenPGP reports whether data (armored or binary) really is an
// encrypted OpenPGP message (RFC 9580 §10.3): at least one public-key or
// symmetric-key encrypted session key packet (PKESK v3/v6, SKESK v4/v5/v6),
// then an encrypted data packet (SEIPD v1/v2, the AEAD draft packet, or a
// legacy SED), read whole. Marker packets are skipped. A Content-Type, an
// armor header or a file name is only a claim; this is the check.
func isEncryptedOpenPGP(data []byte) bool {
	bin, err := dearmor(data)
	if err != nil || len(bin) == 0 {
		return false
	}
	or := packet.NewOpaqueReader(bytes.NewReader(bin))
	esk := 0
	for range maxESKPackets + 2 {
		op, err := or.Next()
		if err != nil {
			return false
		}
		c := op.Contents
		switch op.Tag {
		case 10: // marker packet: ignored by readers (RFC 9580 §5.8)
		case 1: // PKESK
			if len(c) < 2 || c[0] != 3 && c[0] != 6 {
				return false
			}
			esk++
		case 3: // SKESK
			if len(c) < 2 || c[0] != 4 && c[0] != 5 && c[0] != 6 {
				return false
			}
			esk++
		case 9: // legacy SED
			return esk > 0 && len(c) > 0
		case 18: // SEIPD v1 (MDC) or v2 (AEAD)
			return esk > 0 && len(c) > 1 && (c[0] == 1 || c[0] == 2)
		case 20: // AEAD encrypted data (draft, GnuPG's OCB mode)
			return esk > 0 && len(c) > 1 && c[0] == 1
		default:
			return false
		}
		if esk > maxESKPackets {
			return false
		}
	}
	return false
}

// encryption classifies what the scan found (fact C1).
func (s *pgpScan) encryption() privacyindex.Encryption {
	switch {
	case s.rootMIME || s.rootSMIME:
		return privacyindex.EncMIME
	case s.mimeEnc+s.inlineEnc == 0:
		return privacyindex.EncNone
	case s.plain > 0:
		return privacyindex.EncPartial
	case s.inlineEnc == 0:
		// A PGP/MIME entity wrapped in a container with nothing else in it
		// (some list managers and gateways do that).
		return privacyindex.EncMIME
	default:
		return privacyindex.EncInline
	}
}

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

func (v *Verifier) checkPGP(ctx context.Context, log *slog.Logger, in Input, fields []field, from string) PGPFacts {
	var out PGPFacts
	limit := v.MaxDecryptedSize
	if limit <= 0 {
		limit = defaultMaxDecrypted
	}
	var s pgpScan
	s.walk(in.Raw, 0, limit)
	out.Encryption = s.encryption()

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
	needKeys := len(s.ciphers) > 0 || len(s.signed) > 0 || len(s.clearsigned) > 0
	if needKeys && v.Keys != nil && from != "" {
		armored, err := v.Keys.PublicKeys(ctx, from)
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
	out.Keys = append(out.Keys, autocryptKeys(fields, from, r)...)
	for _, k := range s.keys {
		if len(out.Keys) >= maxHarvestedKeys {
			break
		}
		out.Keys = append(out.Keys, attachedKeys(k, r)...)
	}
	for _, a := range in.RecipientKeys {
		if len(s.ciphers) == 0 {
			break
		}
		el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(a))
		if err != nil {
			out.Problems = append(out.Problems, "a recipient private key does not parse: "+err.Error())
			continue
		}
		r.add(el)
	}

	if out.Encryption != privacyindex.EncNone {
		out.ProtectedHeaders = hiddenSubject(first(fields, "Subject"))
	}

	if s.mislabelled > 0 {
		out.Problems = append(out.Problems, fmt.Sprintf("%d part(s) labelled encrypted hold no encrypted data; counted as readable", s.mislabelled))
	}

	var sigs []sigResult
	if slices.ContainsFunc(s.ciphers, func(c cipherBlob) bool { return c.enc }) {
		out.Strength = privacyindex.StrengthStrong
		out.Integrity = true
	} else if out.Encryption != privacyindex.EncNone {
		// S/MIME: we do not read CMS, so its strength is unknown ⇒ weak.
		out.Strength = privacyindex.StrengthWeak
	}
	for _, c := range s.ciphers {
		if c.enc {
			st, integ := r.analyse(c.data)
			out.Strength = min(out.Strength, st)
			out.Integrity = out.Integrity && integ
		}
		if ctx.Err() != nil {
			return out
		}
		sigs = append(sigs, r.decrypt(c))
	}
	for _, sp := range s.signed {
		sigs = append(sigs, r.verifyDetached(canonicalCRLF(sp.data), sp.sig))
	}
	for _, cs := range s.clearsigned {
		sigs = append(sigs, r.verifyClearsigned(cs))
	}
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
	bin, err := dearmor(data)
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

// dearmor returns the binary OpenPGP message in data, armored or not.
func dearmor(data []byte) ([]byte, error) {
	if i := bytes.Index(data, []byte(armorMessage)); i >= 0 {
		blk, err := armor.Decode(bytes.NewReader(data[i:]))
		if err != nil {
			return nil, fmt.Errorf("armor: %w", err)
		}
		b, err := io.ReadAll(io.LimitReader(blk.Body, int64(len(data))))
		if err != nil {
			return nil, fmt.Errorf("armor: %w", err)
		}
		return b, nil
	}
	return data, nil
}

// decrypt decrypts c with the recipient's keys when it can and returns the
// state of the signature found inside. Without a usable private key the
// content, and so any signature, is out of sight: SigUnknown.
func (r *pgpRun) decrypt(c cipherBlob) sigResult {
	unknown := sigResult{state: privacyindex.SigUnknown}
	bin, err := dearmor(c.data)
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
	if !c.mime {
		return outer
	}
	// PGP/MIME: the plaintext is a MIME entity that may carry protected
	// headers, a multipart/signed (sign-then-encrypt as separate steps), keys.
	var inner pgpScan
	inner.walk(plain, 0, r.maxPlain)
	pf, _ := splitMessage(plain)
	if inner.protected || first(pf, "Subject") != "" {
		r.facts.ProtectedHeaders = true
	}
	for _, k := range inner.keys {
		if len(r.facts.Keys) >= maxHarvestedKeys {
			break
		}
		r.facts.Keys = append(r.facts.Keys, attachedKeys(k, r)...)
	}
	sigs := []sigResult{outer}
	for _, sp := range inner.signed {
		sigs = append(sigs, r.verifyDetached(canonicalCRLF(sp.data), sp.sig))
	}
	for _, cs := range inner.clearsigned {
		sigs = append(sigs, r.verifyClearsigned(cs))
	}
	return combineSignatures(sigs)
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
	if bytes.Contains(sig, []byte("-----BEGIN PGP SIGNATURE-----")) {
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

func hiddenSubject(subject string) bool {
	s := strings.ToLower(strings.TrimSpace(subject))
	for _, h := range hiddenSubjects {
		if s == h {
			return true
		}
	}
	return false
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
