package ingest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset" // registers every charset x/text knows with go-message
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/net/idna"
	"golang.org/x/text/encoding/charmap"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

// Limits that keep one hostile message from costing too much. Whatever they
// cut stays in the raw blob; the cut is recorded as a parse problem.
const (
	MaxBodyBytes     = 1 << 20 // text and HTML body kept on the message, each
	MaxParts         = 1000    // MIME parts walked
	MaxDepth         = 32      // multipart nesting
	MaxParticipants  = 200     // addresses taken from the header, all roles
	MaxReferences    = 50      // References kept (the newest)
	MaxSubjectBytes  = 2048
	MaxNameBytes     = 256
	MaxProblems      = 32
	ExcerptRunes     = 200
	maxMsgIDBytes    = 998
	maxFilenameBytes = 512
)

// Addr is one address of a header field, decoded.
type Addr struct {
	Name    string `json:"name,omitempty"`
	Address string `json:"address"` // lowercased; normalised when it is a valid address
}

// Parsed is what ingest understood of a message. Every field is valid UTF-8.
type Parsed struct {
	Header textproto.Header `json:"-"`

	From, Sender, ReplyTo, To, Cc, Bcc []Addr
	Subject                            string
	Date                               time.Time // zero when absent or unreadable
	MessageID                          string    // without <>
	InReplyTo, References              []string

	TextBody    string
	HTMLBody    string
	Excerpt     string
	Attachments []store.Attachment

	Structure Structure
	// Problems lists what could not be parsed (the raw bytes are kept whole).
	Problems []string
}

// Structure is what the message's shape says about its protection and route,
// as seen without any key or DNS lookup.
type Structure struct {
	ContentType string `json:"content_type,omitempty"` // top-level media type

	PGPMIME        bool   `json:"pgp_mime,omitempty"`         // multipart/encrypted, application/pgp-encrypted
	PGPMIMEPath    string `json:"pgp_mime_path,omitempty"`    // part holding the ciphertext
	PGPInline      bool   `json:"pgp_inline,omitempty"`       // an armored PGP MESSAGE in a text part
	PGPAttachment  bool   `json:"pgp_attachment,omitempty"`   // an encrypted .pgp/.gpg attachment
	PGPSigned      bool   `json:"pgp_signed,omitempty"`       // multipart/signed, application/pgp-signature
	PGPSigPath     string `json:"pgp_sig_path,omitempty"`     // part holding the detached signature
	PGPClearSigned bool   `json:"pgp_clear_signed,omitempty"` // BEGIN PGP SIGNED MESSAGE in a text part
	SMIMEEncrypted bool   `json:"smime_encrypted,omitempty"`
	SMIMESigned    bool   `json:"smime_signed,omitempty"`
	// ClearParts: parts readable by providers beside encrypted ones.
	ClearParts bool `json:"clear_parts,omitempty"`
	// Encryption is the class of end-to-end encryption the structure shows (fact C1).
	Encryption privacyindex.Encryption `json:"encryption"`
	// ProtectedHeaders: protected-headers="v1" or a hidden Subject on an encrypted message.
	ProtectedHeaders bool `json:"protected_headers,omitempty"`

	Autocrypt              bool   `json:"autocrypt,omitempty"`
	AutocryptAddr          string `json:"autocrypt_addr,omitempty"`
	AutocryptPreferEncrypt string `json:"autocrypt_prefer_encrypt,omitempty"`
	AutocryptMatchesFrom   bool   `json:"autocrypt_matches_from,omitempty"`

	ListID       string            `json:"list_id,omitempty"`
	ARCSealed    bool              `json:"arc_sealed,omitempty"`
	DKIMSigned   bool              `json:"dkim_signed,omitempty"` // a DKIM-Signature is present: not a pass
	ReceivedHops int               `json:"received_hops"`         // Received: fields before ours
	Hops         privacyindex.Hops `json:"hops"`
}

// Parse reads raw leniently. It never fails: what cannot be read is left
// out and listed in Problems. ownReceived is the number of topmost Received
// fields that our own MTA added (0 for the milter).
func Parse(raw []byte, ownReceived int) *Parsed {
	p := &Parsed{}
	h, body, problems := readHeader(raw)
	p.Header = h
	for _, pr := range problems {
		p.problem("%s", pr)
	}
	p.readEnvelopeFields()
	w := walker{p: p}
	w.entity(nil, h, body, 0, false)
	p.TextBody = capText(p, "text body", strings.ReplaceAll(w.text.String(), "\r\n", "\n"))
	p.HTMLBody = capText(p, "HTML body", strings.ReplaceAll(w.html.String(), "\r\n", "\n"))
	p.Structure.ContentType, _ = mediaType(h)
	p.classify(ownReceived, &w)
	if p.Structure.Encryption == privacyindex.EncNone {
		src := p.TextBody
		if strings.TrimSpace(src) == "" {
			src = htmlText(p.HTMLBody)
		}
		p.Excerpt = excerpt(src)
	}
	return p
}

func (p *Parsed) problem(format string, args ...any) {
	if len(p.Problems) >= MaxProblems {
		return
	}
	p.Problems = append(p.Problems, clip(fixText(fmt.Sprintf(format, args...)), 200))
	if len(p.Problems) == MaxProblems {
		p.Problems[MaxProblems-1] = "more problems not listed"
	}
}

// readEnvelopeFields decodes the addressing and threading fields.
func (p *Parsed) readEnvelopeFields() {
	h := gomail.Header{Header: message.Header{Header: p.Header}}
	budget := MaxParticipants
	for _, f := range []struct {
		key string
		dst *[]Addr
	}{{"From", &p.From}, {"Sender", &p.Sender}, {"Reply-To", &p.ReplyTo}, {"To", &p.To}, {"Cc", &p.Cc}, {"Bcc", &p.Bcc}} {
		*f.dst = p.addresses(h, f.key, &budget)
	}
	s, err := h.Text("Subject")
	if err != nil {
		p.problem("Subject: %v", err)
	}
	p.Subject = clip(oneLine(s), MaxSubjectBytes)
	if h.Has("Date") {
		d, err := parseDate(h.Get("Date"))
		if err != nil {
			p.problem("Date: unreadable %.60q", h.Get("Date"))
		} else {
			p.Date = d
		}
	}
	if h.Has("Message-Id") {
		ids := msgIDs(h.Get("Message-Id"))
		if len(ids) == 0 {
			p.problem("Message-ID: unreadable")
		} else {
			p.MessageID = ids[0]
		}
	}
	p.InReplyTo = msgIDs(h.Get("In-Reply-To"))
	if len(p.InReplyTo) > MaxReferences {
		p.InReplyTo = p.InReplyTo[:MaxReferences]
	}
	refs := msgIDs(strings.Join(h.Values("References"), " "))
	if len(refs) > MaxReferences {
		refs = refs[len(refs)-MaxReferences:]
	}
	p.References = refs
}

// addresses reads every field named key as an address list, falling back
// to picking out anything shaped like an address when the list is malformed.
func (p *Parsed) addresses(h gomail.Header, key string, budget *int) []Addr {
	var out []Addr
	seen := map[string]bool{}
	add := func(name, addr string) {
		a, ok := normAddr(addr)
		if !ok || seen[a] {
			return
		}
		if *budget <= 0 {
			if *budget == 0 {
				p.problem("more than %d addresses: the rest are not taken as participants", MaxParticipants)
				*budget--
			}
			return
		}
		*budget--
		seen[a] = true
		out = append(out, Addr{Name: clip(oneLine(name), MaxNameBytes), Address: a})
	}
	for _, v := range h.Values(key) {
		if strings.TrimSpace(v) == "" {
			continue
		}
		list, err := gomail.ParseAddressList(v)
		if err == nil {
			for _, a := range list {
				add(a.Name, a.Address)
			}
			continue
		}
		p.problem("%s: %v", key, err)
		for _, piece := range splitAddressList(v) {
			if a, err := gomail.ParseAddress(piece); err == nil {
				add(a.Name, a.Address)
				continue
			}
			name, addr := looseAddress(piece)
			if addr != "" {
				add(decodeWords(name), addr)
			}
		}
	}
	return out
}

// splitAddressList splits at commas outside quotes, comments and <>.
func splitAddressList(v string) []string {
	var out []string
	depth, quoted, angle, start := 0, false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case (c == ',' || c == ';') && depth == 0 && !angle:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// looseAddress finds something shaped like local@domain in s and takes the
// text before it as the display name.
func looseAddress(s string) (name, addr string) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return "", ""
	}
	isStop := func(c byte) bool {
		return c <= ' ' || strings.IndexByte("<>,;:\"()[]\\", c) >= 0
	}
	i := at
	for i > 0 && !isStop(s[i-1]) {
		i--
	}
	j := at + 1
	for j < len(s) && !isStop(s[j]) {
		j++
	}
	if i == at || j == at+1 {
		return "", ""
	}
	name = strings.Trim(strings.TrimSpace(s[:i]), "\"<> \t")
	return name, s[i:j]
}

// normAddr lowercases and normalises an email address (IDN domains to
// A-labels). ok is false for anything that is not an address.
func normAddr(addr string) (string, bool) {
	a := strings.ToLower(strings.TrimSpace(addr))
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || len(a) > 320 || !utf8.ValidString(a) {
		return "", false
	}
	if n, err := store.NormalizeAddress(a, false); err == nil {
		return n, true
	}
	if d, err := idna.Lookup.ToASCII(a[at+1:]); err == nil {
		if n, err := store.NormalizeAddress(a[:at]+"@"+d, false); err == nil {
			return n, true
		}
	}
	for _, c := range a {
		if c <= ' ' || c == 0x7f || strings.ContainsRune("<>,;\"()\\", c) {
			return "", false
		}
	}
	return a, true // not a normal address (e.g. a one-label domain) but still one
}

var wordDecoder = mime.WordDecoder{CharsetReader: charset.Reader}

func decodeWords(s string) string {
	if d, err := wordDecoder.DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// msgIDs extracts message identifiers ("<left@right>", or bare tokens when
// there are no angle brackets at all), without the brackets.
func msgIDs(v string) []string {
	var out []string
	rest := v
	for {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '>')
		if j < 0 {
			break
		}
		if id := cleanMsgID(rest[i+1 : i+j]); id != "" {
			out = append(out, id)
		}
		rest = rest[i+j+1:]
	}
	if len(out) == 0 && !strings.ContainsAny(v, "<>") {
		for _, f := range strings.Fields(v) {
			if strings.Contains(f, "@") {
				if id := cleanMsgID(f); id != "" {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

func cleanMsgID(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, s)
	if !utf8.ValidString(s) || len(s) > maxMsgIDBytes {
		return ""
	}
	return s
}

var dateLayouts = []string{
	"Mon, 2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 MST",
	"2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04 -0700",
	"Mon, 2 Jan 06 15:04:05 -0700",
	"Mon Jan 2 15:04:05 2006",
	"Mon Jan 2 15:04:05 MST 2006",
	"Mon, 2 Jan 2006 15:04:05",
	time.RFC3339,
}

func parseDate(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if t, err := mail.ParseDate(v); err == nil {
		return t, nil
	}
	// Drop a trailing comment ("(CEST)") and repeated blanks, then try the usual broken shapes.
	if i := strings.IndexByte(v, '('); i > 0 {
		v = strings.TrimSpace(v[:i])
	}
	v = strings.Join(strings.Fields(v), " ")
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unreadable date")
}

// walker walks the MIME tree, collecting bodies and attachments.
type walker struct {
	p           *Parsed
	parts       int
	text, html  strings.Builder
	overflowed  bool
	encrypted   []string // paths of encrypted containers
	clearLeaves int      // leaves with content readable by providers
	armorLeaves int      // text leaves holding only armored PGP messages
	altDone     map[string]bool
}

// partPath renders an IMAP-style part path: 1-based, "1" for the body of a
// single-part message.
func partPath(path []int) string {
	if len(path) == 0 {
		return "1"
	}
	var b strings.Builder
	for i, n := range path {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

// alt: the entity is a child of a multipart/alternative (only the first
// text/plain and first text/html count as bodies, the rest is ignored).
func (w *walker) entity(path []int, h textproto.Header, body []byte, depth int, alt bool) {
	w.parts++
	if w.parts > MaxParts {
		if !w.overflowed {
			w.p.problem("more than %d MIME parts: the rest is not read", MaxParts)
			w.overflowed = true
		}
		return
	}
	mh := message.Header{Header: h}
	mt, params := mediaType(h)
	where := partPath(path)

	if strings.HasPrefix(mt, "multipart/") {
		if depth >= MaxDepth {
			w.p.problem("part %s: nesting deeper than %d: not read", where, MaxDepth)
			return
		}
		parts, probs := splitMultipart(body, params["boundary"])
		for _, pr := range probs {
			w.p.problem("part %s: %s", where, pr)
		}
		if len(parts) > 0 {
			w.multipart(path, mt, params, parts, depth)
			return
		}
		// No part found: read the body as text so that nothing is hidden.
		w.p.problem("part %s: %s without parts: read as text", where, mt)
		mt, params = "text/plain", map[string]string{}
	}

	disp, dparams, _ := mh.ContentDisposition()
	disp = strings.ToLower(disp)
	filename := dparams["filename"]
	if filename == "" {
		filename = params["name"]
	}
	filename = clip(oneLine(decodeWords(filename)), maxFilenameBytes)
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))

	isText := (mt == "text/plain" || mt == "text/html") && disp != "attachment"
	if isText && mt == "text/plain" && alt && w.text.Len() > 0 && w.altTextSeen(path) {
		return
	}
	if isText {
		data, prob := decodeTransfer(cte, body)
		if prob != "" {
			w.p.problem("part %s: %s", where, prob)
		}
		s, prob := decodeCharset(params["charset"], data)
		if prob != "" {
			w.p.problem("part %s: %s", where, prob)
		}
		w.countText(mt, s)
		if mt == "text/html" {
			if w.html.Len() == 0 {
				w.html.WriteString(s)
			} else if !alt {
				w.html.WriteString("\n")
				w.html.WriteString(s)
			}
			return
		}
		if w.text.Len() > 0 {
			w.text.WriteString("\n")
		}
		w.text.WriteString(s)
		w.markAltText(path)
		return
	}

	size, prob := decodedSize(cte, body)
	if prob != "" {
		w.p.problem("part %s: %s", where, prob)
	}
	pgpish := mt == "application/pgp-encrypted" || mt == "application/pgp-keys" ||
		mt == "application/pgp-signature" || isPGPFilename(filename)
	var decoded []byte
	if pgpish {
		decoded, _ = decodeTransfer(cte, body)
	}
	switch {
	case pgpish && isPGPMessage(decoded):
		w.p.Structure.PGPAttachment = true
		w.encrypted = append(w.encrypted, where)
	case (mt == "application/pkcs7-mime" || mt == "application/x-pkcs7-mime") &&
		!strings.Contains(strings.ToLower(params["smime-type"]), "signed"):
		// enveloped-data (or an smime.p7m without smime-type, which is almost always enveloped)
		w.p.Structure.SMIMEEncrypted = true
		w.encrypted = append(w.encrypted, where)
	case pgpish && (mt == "application/pgp-keys" || mt == "application/pgp-signature" ||
		bytes.Contains(decoded, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) ||
		bytes.Contains(decoded, []byte("-----BEGIN PGP SIGNATURE-----"))):
		// a key or a detached signature: not content
	case mt == "application/pkcs7-signature" || mt == "application/x-pkcs7-signature":
	default:
		w.clearLeaves++
	}
	w.p.Attachments = append(w.p.Attachments, store.Attachment{
		PartPath: where, Filename: filename, ContentType: clip(fixText(mt), 255), Size: size,
	})
}

// The first text/plain child of an alternative is its text; remember which
// alternative got one.
func (w *walker) altTextSeen(path []int) bool {
	return len(path) > 0 && w.altDone[partPath(path[:len(path)-1])]
}

func (w *walker) markAltText(path []int) {
	if len(path) == 0 {
		return
	}
	if w.altDone == nil {
		w.altDone = map[string]bool{}
	}
	w.altDone[partPath(path[:len(path)-1])] = true
}

func (w *walker) multipart(path []int, mt string, params map[string]string, parts [][]byte, depth int) {
	child := func(i int) []int {
		c := make([]int, len(path)+1)
		copy(c, path)
		c[len(path)] = i + 1
		return c
	}
	protocol := strings.ToLower(params["protocol"])
	switch {
	case mt == "multipart/encrypted" && protocol == "application/pgp-encrypted":
		w.p.Structure.PGPMIME = true
		// Part 1 is the version control part, part 2 the ciphertext.
		if len(parts) >= 2 {
			where := partPath(child(1))
			w.p.Structure.PGPMIMEPath = where
			w.encrypted = append(w.encrypted, where)
		} else {
			w.p.problem("part %s: multipart/encrypted with %d parts", partPath(path), len(parts))
		}
		return
	case mt == "multipart/signed":
		sigProto := protocol == "application/pgp-signature"
		smime := protocol == "application/pkcs7-signature" || protocol == "application/x-pkcs7-signature"
		w.p.Structure.PGPSigned = w.p.Structure.PGPSigned || sigProto
		w.p.Structure.SMIMESigned = w.p.Structure.SMIMESigned || smime
		if len(parts) >= 1 {
			h, body, probs := readHeader(parts[0])
			for _, pr := range probs {
				w.p.problem("part %s: %s", partPath(child(0)), pr)
			}
			w.entity(child(0), h, body, depth+1, false)
		}
		if len(parts) >= 2 {
			w.p.Structure.PGPSigPath = partPath(child(1))
			if !sigProto && !smime { // an unknown signature kind: list it
				h, body, _ := readHeader(parts[1])
				w.entity(child(1), h, body, depth+1, false)
			}
		}
		return
	}
	alt := mt == "multipart/alternative"
	for i, part := range parts {
		h, body, probs := readHeader(part)
		for _, pr := range probs {
			if pr == "no header: the message is taken as body only" {
				continue // a part without header is plain text by definition
			}
			w.p.problem("part %s: %s", partPath(child(i)), pr)
		}
		w.entity(child(i), h, body, depth+1, alt)
	}
}

// mediaType returns the lowercased media type and its parameters, leniently:
// a Content-Type that mime cannot parse still yields its type and the
// parameters that look readable. No Content-Type means text/plain.
func mediaType(h textproto.Header) (string, map[string]string) {
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return "text/plain", map[string]string{}
	}
	mh := message.Header{Header: h}
	if t, params, err := mh.ContentType(); err == nil && t != "" {
		return strings.ToLower(t), params
	}
	parts := strings.Split(v, ";")
	t := strings.ToLower(strings.TrimSpace(parts[0]))
	if !strings.Contains(t, "/") || strings.ContainsAny(t, " \t\"") {
		t = "text/plain"
	}
	params := map[string]string{}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && strings.HasSuffix(val, "\"") {
			val = val[1 : len(val)-1]
		} else {
			val = strings.Trim(val, "\"")
		}
		if k != "" {
			params[k] = val
		}
	}
	return t, params
}

// splitMultipart cuts a multipart body at its boundary delimiter lines. A
// missing close delimiter ends the last part at the end of the data.
func splitMultipart(body []byte, boundary string) ([][]byte, []string) {
	if boundary == "" {
		return nil, []string{"multipart without boundary"}
	}
	dash := []byte("--" + boundary)
	var parts [][]byte
	start := -1 // start of the current part's content
	pos := 0
	for pos < len(body) {
		line, next := nextLine(body, pos)
		if bytes.HasPrefix(line, dash) {
			rest := bytes.TrimRight(trimEOL(line[len(dash):]), " \t")
			closing := bytes.Equal(rest, []byte("--"))
			if len(rest) == 0 || closing {
				if start >= 0 {
					parts = append(parts, body[start:contentEnd(body, start, pos)])
				}
				if closing {
					return parts, nil
				}
				start = next
			}
		}
		pos = next
	}
	if start >= 0 {
		parts = append(parts, body[start:])
		return parts, []string{"multipart not closed by its boundary"}
	}
	return parts, []string{"boundary not found in multipart body"}
}

// contentEnd drops the line break before a delimiter line at pos: it belongs
// to the delimiter.
func contentEnd(body []byte, start, pos int) int {
	end := pos
	if end > start && body[end-1] == '\n' {
		end--
		if end > start && body[end-1] == '\r' {
			end--
		}
	}
	return end
}

// decodeTransfer undoes a Content-Transfer-Encoding, leniently.
func decodeTransfer(cte string, body []byte) ([]byte, string) {
	switch cte {
	case "", "7bit", "8bit", "binary":
		return body, ""
	case "base64":
		return decodeBase64(body)
	case "quoted-printable":
		return decodeQP(body), ""
	}
	return body, fmt.Sprintf("unknown transfer encoding %.40q: kept as is", cte)
}

func decodedSize(cte string, body []byte) (int64, string) {
	switch cte {
	case "base64":
		n := 0
		for _, c := range body {
			if isB64(c) {
				n++
			}
		}
		size := int64(n/4*3) + int64([]int{0, 0, 1, 2}[n%4])
		return size, ""
	case "quoted-printable":
		return int64(len(decodeQP(body))), ""
	}
	d, prob := decodeTransfer(cte, body)
	return int64(len(d)), prob
}

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/'
}

// decodeBase64 decodes what it can: characters outside the alphabet are
// skipped, padding is optional.
func decodeBase64(body []byte) ([]byte, string) {
	clean := make([]byte, 0, len(body))
	junk := false
	for _, c := range body {
		switch {
		case isB64(c):
			clean = append(clean, c)
		case c == '=' || c == '\r' || c == '\n' || c == ' ' || c == '\t':
		default:
			junk = true
		}
	}
	prob := ""
	if len(clean)%4 == 1 {
		clean = clean[:len(clean)-1]
		prob = "base64 truncated"
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, err := base64.RawStdEncoding.Decode(out, clean)
	if err != nil && prob == "" {
		prob = "base64: " + err.Error()
	}
	if junk && prob == "" {
		prob = "base64 with characters outside the alphabet (skipped)"
	}
	return out[:n], prob
}

// decodeQP decodes quoted-printable; a malformed escape is kept literally.
func decodeQP(body []byte) []byte {
	out := make([]byte, 0, len(body))
	unhex := func(c byte) (byte, bool) {
		switch {
		case c >= '0' && c <= '9':
			return c - '0', true
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10, true
		case c >= 'a' && c <= 'f':
			return c - 'a' + 10, true
		}
		return 0, false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		if i+2 < len(body) {
			if hi, ok := unhex(body[i+1]); ok {
				if lo, ok := unhex(body[i+2]); ok {
					out = append(out, hi<<4|lo)
					i += 2
					continue
				}
			}
		}
		// Soft line break: "=" then optional blanks then the end of line.
		j := i + 1
		for j < len(body) && (body[j] == ' ' || body[j] == '\t') {
			j++
		}
		if j == len(body) {
			i = j - 1
			continue
		}
		if body[j] == '\n' {
			i = j
			continue
		}
		if body[j] == '\r' && j+1 < len(body) && body[j+1] == '\n' {
			i = j + 1
			continue
		}
		out = append(out, '=')
	}
	return out
}

// decodeCharset converts text in the declared charset to UTF-8. An unknown
// charset, or bytes that are not valid in the declared one, fall back to
// UTF-8 when valid, else Windows-1252 (which maps every byte).
func decodeCharset(cs string, data []byte) (string, string) {
	cs = strings.ToLower(strings.Trim(strings.TrimSpace(cs), "\"'"))
	switch cs {
	case "", "us-ascii", "ascii", "utf-8", "utf8":
		if utf8.Valid(data) {
			return string(data), ""
		}
		if cs == "utf-8" || cs == "utf8" {
			return strings.ToValidUTF8(string(data), "\uFFFD"), "invalid UTF-8 replaced"
		}
		return fixText(string(data)), "8-bit text without charset: read as windows-1252"
	}
	r, err := charset.Reader(cs, bytes.NewReader(data))
	if err == nil {
		out, rerr := io.ReadAll(r)
		if rerr == nil {
			return strings.ToValidUTF8(string(out), "\uFFFD"), ""
		}
		err = rerr
	}
	return fixText(string(data)), fmt.Sprintf("charset %.40q: %v: read as UTF-8 or windows-1252", cs, clip(err.Error(), 80))
}

// fixText returns s as valid UTF-8: s itself when valid, else read as
// Windows-1252.
func fixText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	out, err := charmap.Windows1252.NewDecoder().String(s)
	if err != nil || !utf8.ValidString(out) {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	return out
}

// oneLine is s as valid UTF-8 on one line: runs of ASCII blanks and
// control characters become one space, none at either end.
func oneLine(s string) string {
	var b strings.Builder
	space := false
	for _, r := range fixText(s) {
		if r <= 0x20 || r == 0x7f {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func capText(p *Parsed, what, s string) string {
	if len(s) > MaxBodyBytes {
		p.problem("%s longer than %d bytes: cut (the full text stays in the raw message)", what, MaxBodyBytes)
		return clip(s, MaxBodyBytes)
	}
	return s
}

func excerpt(s string) string {
	var b strings.Builder
	n := 0
	for f := range strings.FieldsSeq(s) { // lazily: only the first words are used
		if n > 0 {
			b.WriteByte(' ')
			n++
		}
		for _, r := range f {
			if n >= ExcerptRunes {
				return strings.TrimSpace(b.String()) + "…"
			}
			b.WriteRune(r)
			n++
		}
		if n >= ExcerptRunes {
			return strings.TrimSpace(b.String()) + "…"
		}
	}
	return b.String()
}

func isPGPMessage(body []byte) bool {
	return bytes.Contains(body, []byte("-----BEGIN PGP MESSAGE-----")) || (len(body) > 0 && body[0]&0x80 != 0)
}

func isPGPFilename(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".pgp") || strings.HasSuffix(n, ".gpg") || strings.HasSuffix(n, ".asc")
}
