package message

import (
	"bytes"
	"strings"

	"github.com/caliopen/caliopen/privacyindex"
)

// Armor markers (RFC 9580 §6.2).
const (
	ArmorMessage    = "-----BEGIN PGP MESSAGE-----"
	ArmorMessageEnd = "-----END PGP MESSAGE-----"
	ArmorSigned     = "-----BEGIN PGP SIGNED MESSAGE-----"
	ArmorSignature  = "-----BEGIN PGP SIGNATURE-----"
	ArmorPublicKey  = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
)

// Caps on what the classification keeps for verification.
const (
	MaxCiphertexts = 8       // encrypted blobs kept per message
	MaxSignedParts = 8       // signed parts (detached or clear-signed) kept
	MaxKeyParts    = 10      // attached key parts kept
	MaxKeyBytes    = 1 << 20 // one key or one signature
)

// hiddenSubjects are the placeholders clients put in the outer Subject when
// the real one travels in protected headers (Autocrypt, Enigmail, K-9,
// Proton, pEp).
var hiddenSubjects = map[string]bool{
	"...": true, "…": true, "[...]": true, "encrypted message": true, "encrypted subject": true,
	"p≡p": true, "pep": true,
}

// HiddenSubject reports whether subject is a placeholder for a protected one.
func HiddenSubject(subject string) bool {
	return hiddenSubjects[strings.ToLower(strings.TrimSpace(subject))]
}

// Classification is what protects a message, as its structure and data show
// without any key: the one answer ingest, verify and keytrust read.
type Classification struct {
	// Encryption counts only data checked to be encrypted: an OpenPGP
	// message made of session key packets then encrypted data, or CMS
	// (auth)enveloped data. A Content-Type or a file name is only a claim.
	Encryption privacyindex.Encryption

	// What the labels and armor say (claims, kept for the record).
	PGPMIME        bool   // multipart/encrypted, application/pgp-encrypted
	PGPMIMEPath    string // part holding the ciphertext
	PGPInline      bool   // an armored PGP MESSAGE in a text part
	PGPAttachment  bool   // an encrypted .pgp/.gpg/.asc attachment
	PGPSigned      bool   // multipart/signed, application/pgp-signature
	PGPSigPath     string // part holding the detached signature
	PGPClearSigned bool   // BEGIN PGP SIGNED MESSAGE in a text part
	SMIMEEncrypted bool
	SMIMESigned    bool
	// Mislabelled counts parts labelled encrypted whose data is not.
	Mislabelled int

	// ProtectedHeaders: an encrypted message whose top-level Content-Type
	// says protected-headers="v1" or whose Subject is a placeholder.
	ProtectedHeaders bool
	// ProtectedHeadersV1: the top-level Content-Type says protected-headers="v1".
	ProtectedHeadersV1 bool

	Ciphertexts []Ciphertext
	Signed      []Signed
	ClearSigned [][]byte // text parts holding BEGIN PGP SIGNED MESSAGE, decoded
	Keys        [][]byte // application/pgp-keys parts, decoded
	Autocrypt   []Autocrypt
}

// Ciphertext is an OpenPGP message found in the message.
type Ciphertext struct {
	Path string
	Data []byte // armored or binary, transfer-decoded
	MIME bool   // from PGP/MIME: the plaintext is a MIME entity
	// Encrypted: Data parses as an encrypted OpenPGP message. An armored
	// message that is only signed is kept for its signature.
	Encrypted bool
}

// Signed is the first part of a PGP multipart/signed.
type Signed struct {
	Path      string
	Data      []byte // the exact signed bytes, as received (not canonicalised)
	Signature []byte // the detached signature, transfer-decoded
}

// Autocrypt is one Autocrypt header (Autocrypt Level 1 §2.1).
type Autocrypt struct {
	Addr          string // lowercased, as written
	PreferEncrypt string // lowercased
	Keydata       string // base64, as written
	// Critical names the first unknown critical attribute ("" when none):
	// the header must then be ignored.
	Critical string
}

func parseAutocrypt(v string) Autocrypt {
	var a Autocrypt
	for attr := range strings.SplitSeq(v, ";") {
		k, val, ok := strings.Cut(attr, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.TrimSpace(val)
		switch {
		case k == "addr":
			a.Addr = strings.ToLower(val)
		case k == "prefer-encrypt":
			a.PreferEncrypt = strings.ToLower(val)
		case k == "keydata":
			a.Keydata = val
		case strings.HasPrefix(k, "_"): // non-critical: ignored
		default:
			if a.Critical == "" {
				a.Critical = k
			}
		}
	}
	return a
}

// collector visits the part tree once, gathering bodies, attachments and
// the classification's counts.
type collector struct {
	m          *Message
	text, html strings.Builder
	altDone    map[*Part]bool // alternatives whose text/plain is taken

	rootMIME, rootSMIME bool // the whole message is PGP/MIME or S/MIME enveloped
	mimeEnc             int  // PGP/MIME entities below the root
	inlineEnc           int  // leaves carrying encrypted data (inline, attached, S/MIME below the root)
	plain               int  // leaves readable by providers
}

// visit reads p. alt: p is a child of the multipart/alternative parent.
func (c *collector) visit(p *Part, depth int, alt *Part) {
	cl := &c.m.Class
	root := depth == 0
	proto := strings.ToLower(p.Params["protocol"])
	switch {
	case p.IsMultipart() && p.MediaType == "multipart/encrypted" && proto == "application/pgp-encrypted":
		cl.PGPMIME = true
		if len(p.Parts) < 2 {
			c.m.problem("part %s: multipart/encrypted with %d parts", p.Path, len(p.Parts))
			c.plain++
			return
		}
		ct := p.Parts[1]
		cl.PGPMIMEPath = ct.Path
		data := c.m.decode(ct, 0)
		if !IsEncryptedOpenPGP(data) {
			// The label says encrypted, the data is readable: what the
			// data is counts.
			cl.Mislabelled++
			if len(bytes.TrimSpace(data)) > 0 {
				c.plain++
			}
			return
		}
		if root {
			c.rootMIME = true
		} else {
			c.mimeEnc++
		}
		c.cipher(Ciphertext{Path: ct.Path, Data: data, MIME: true, Encrypted: true})
		return
	case p.IsMultipart() && p.MediaType == "multipart/signed":
		pgp := proto == "application/pgp-signature"
		smime := proto == "application/pkcs7-signature" || proto == "application/x-pkcs7-signature"
		cl.PGPSigned = cl.PGPSigned || pgp
		cl.SMIMESigned = cl.SMIMESigned || smime
		if len(p.Parts) >= 2 {
			cl.PGPSigPath = p.Parts[1].Path
			if pgp && len(cl.Signed) < MaxSignedParts {
				cl.Signed = append(cl.Signed, Signed{Path: p.Parts[0].Path, Data: p.Parts[0].Bytes(),
					Signature: c.m.decode(p.Parts[1], MaxKeyBytes)})
			}
		}
		c.visit(p.Parts[0], depth+1, nil)
		if len(p.Parts) >= 2 && !pgp && !smime { // an unknown signature kind: list it
			c.visit(p.Parts[1], depth+1, nil)
		}
		return
	case p.IsMultipart():
		var a *Part
		if p.MediaType == "multipart/alternative" {
			a = p
		}
		for _, k := range p.Parts {
			c.visit(k, depth+1, a)
		}
		return
	}
	c.leaf(p, root, alt)
}

func (c *collector) cipher(ct Ciphertext) {
	if len(c.m.Class.Ciphertexts) < MaxCiphertexts {
		c.m.Class.Ciphertexts = append(c.m.Class.Ciphertexts, ct)
	}
}

func (c *collector) leaf(p *Part, root bool, alt *Part) {
	cl := &c.m.Class
	mt := p.MediaType
	if strings.HasPrefix(mt, "multipart/") {
		mt = "text/plain" // a multipart without parts is read as text: nothing is hidden
	}
	disp, _ := disposition(p.Header)
	if (mt == "text/plain" || mt == "text/html") && disp != "attachment" {
		if mt == "text/plain" && alt != nil && c.altDone[alt] {
			return // the first text/plain of an alternative is its text
		}
		c.textLeaf(p, mt, alt)
		return
	}

	filename := p.Filename()
	lname := strings.ToLower(filename)
	c.m.Attachments = append(c.m.Attachments, Attachment{
		PartPath: p.Path, Filename: filename, ContentType: clip(fixText(mt), 255), Size: decodedSize(p),
	})
	switch mt {
	case "application/pgp-keys":
		if len(cl.Keys) < MaxKeyParts {
			cl.Keys = append(cl.Keys, c.m.decode(p, MaxKeyBytes))
		}
		return
	case "application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature",
		"application/pgp-encrypted": // a detached signature, or a PGP/MIME version part: not content
		return
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		st := strings.ToLower(p.Params["smime-type"])
		if strings.Contains(st, "signed") {
			break
		}
		cl.SMIMEEncrypted = true
		if IsCMSEnveloped(c.m.decode(p, 0)) {
			if root {
				c.rootSMIME = true
			} else {
				c.inlineEnc++
			}
			return
		}
		cl.Mislabelled++
	}
	pgpName := strings.HasSuffix(lname, ".pgp") || strings.HasSuffix(lname, ".gpg") || strings.HasSuffix(lname, ".asc")
	if !pgpName && !strings.HasPrefix(mt, "text/") && mt != "application/octet-stream" {
		// Media that cannot hold an armored message: not decoded (CPU).
		if len(bytes.TrimSpace(p.Body())) > 0 {
			c.plain++
		}
		return
	}
	data := c.m.decode(p, 0)
	armored := bytes.Contains(data, []byte(ArmorMessage))
	enc := (armored || pgpName) && IsEncryptedOpenPGP(data)
	switch {
	case armored || enc:
		c.cipher(Ciphertext{Path: p.Path, Data: data, Encrypted: enc})
		if enc {
			cl.PGPAttachment = true
			c.inlineEnc++
		} else {
			c.plain++
		}
	case bytes.Contains(data, []byte(ArmorSigned)):
		c.clearSigned(data)
		c.plain++
	case pgpName && bytes.Contains(data, []byte(ArmorPublicKey)):
		// a key: not content
	case len(bytes.TrimSpace(data)) > 0:
		c.plain++
	}
}

func (c *collector) clearSigned(data []byte) {
	c.m.Class.PGPClearSigned = true
	if len(c.m.Class.ClearSigned) < MaxSignedParts {
		c.m.Class.ClearSigned = append(c.m.Class.ClearSigned, data)
	}
}

// textLeaf reads a text body part: its text joins the message's bodies,
// and armor in it is classified.
func (c *collector) textLeaf(p *Part, mt string, alt *Part) {
	data := c.m.decode(p, 0)
	s, prob := decodeCharset(p.Params["charset"], data)
	if prob != "" {
		c.m.problem("part %s: %s", p.Path, prob)
	}
	if mt == "text/html" {
		if c.html.Len() == 0 {
			c.html.WriteString(s)
		} else if alt == nil {
			c.html.WriteString("\n")
			c.html.WriteString(s)
		}
	} else {
		if c.text.Len() > 0 {
			c.text.WriteString("\n")
		}
		c.text.WriteString(s)
		if alt != nil {
			if c.altDone == nil {
				c.altDone = map[*Part]bool{}
			}
			c.altDone[alt] = true
		}
	}

	visible := s
	if mt == "text/html" {
		visible = htmlText(s)
	}
	if strings.Contains(visible, ArmorSigned) {
		c.clearSigned(data)
	}
	if strings.TrimSpace(visible) == "" {
		return
	}
	if !strings.Contains(visible, ArmorMessage) {
		c.plain++
		return
	}
	// Armored "PGP MESSAGE" is also what a signed-only message looks like,
	// or a pasted fake: only real encrypted data counts.
	c.m.Class.PGPInline = true
	enc := IsEncryptedOpenPGP(data)
	c.cipher(Ciphertext{Path: p.Path, Data: data, Encrypted: enc})
	if !enc || strings.TrimSpace(outsideArmor(visible)) != "" {
		c.plain++ // not encrypted, or readable text beside the armor
	}
	if enc {
		c.inlineEnc++
	}
}

// outsideArmor returns s without its armored PGP MESSAGE blocks.
func outsideArmor(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, ArmorMessage)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		j := strings.Index(s[i:], ArmorMessageEnd)
		if j < 0 {
			return b.String()
		}
		s = s[i+j+len(ArmorMessageEnd):]
	}
}

// classify derives the message's classification from the visit.
func (m *Message) classify(c *collector) {
	cl := &m.Class
	switch {
	case c.rootMIME || c.rootSMIME:
		cl.Encryption = privacyindex.EncMIME
	case c.mimeEnc+c.inlineEnc == 0:
		cl.Encryption = privacyindex.EncNone
	case c.plain > 0:
		cl.Encryption = privacyindex.EncPartial
	case c.inlineEnc == 0:
		// A PGP/MIME entity wrapped in a container with nothing else in it
		// (some list managers and gateways do that).
		cl.Encryption = privacyindex.EncMIME
	default:
		cl.Encryption = privacyindex.EncInline
	}
	cl.ProtectedHeadersV1 = strings.EqualFold(m.Root.Params["protected-headers"], "v1")
	cl.ProtectedHeaders = cl.Encryption != privacyindex.EncNone && (cl.ProtectedHeadersV1 || HiddenSubject(m.Subject))
	for _, v := range m.Root.Header.Values("Autocrypt") {
		cl.Autocrypt = append(cl.Autocrypt, parseAutocrypt(v))
	}
}
