package message

import (
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/charset" // registers every charset x/text knows
	gomail "github.com/emersion/go-message/mail"
	"golang.org/x/net/idna"

	"github.com/caliopen/caliopen/store"
)

// Addr is one address of a header field, decoded.
type Addr struct {
	Name    string `json:"name,omitempty"`
	Address string `json:"address"` // lowercased; normalised when it is a valid address
}

// readEnvelopeFields decodes the addressing and threading fields.
func (m *Message) readEnvelopeFields() {
	h := m.Root.Header
	budget := MaxParticipants
	for _, f := range []struct {
		key string
		dst *[]Addr
	}{{"From", &m.From}, {"Sender", &m.Sender}, {"Reply-To", &m.ReplyTo}, {"To", &m.To}, {"Cc", &m.Cc}, {"Bcc", &m.Bcc}} {
		*f.dst = m.addresses(h, f.key, &budget)
	}
	m.Subject = clip(oneLine(DecodeWords(h.Get("Subject"))), MaxSubjectBytes)
	if h.Has("Date") {
		d, err := parseDate(h.Get("Date"))
		if err != nil {
			m.problem("Date: unreadable %.60q", h.Get("Date"))
		} else {
			m.Date = d
		}
	}
	if h.Has("Message-Id") {
		ids := msgIDs(h.Get("Message-Id"))
		if len(ids) == 0 {
			m.problem("Message-ID: unreadable")
		} else {
			m.MessageID = ids[0]
		}
	}
	m.InReplyTo = msgIDs(h.Get("In-Reply-To"))
	if len(m.InReplyTo) > MaxReferences {
		m.InReplyTo = m.InReplyTo[:MaxReferences]
	}
	refs := msgIDs(strings.Join(h.Values("References"), " "))
	if len(refs) > MaxReferences {
		refs = refs[len(refs)-MaxReferences:]
	}
	m.References = refs
}

// addresses reads every field named key as an address list, falling back
// to picking out anything shaped like an address when the list is malformed.
func (m *Message) addresses(h Header, key string, budget *int) []Addr {
	var out []Addr
	seen := map[string]bool{}
	add := func(name, addr string) {
		a, ok := NormAddr(addr)
		if !ok || seen[a] {
			return
		}
		if *budget <= 0 {
			if *budget == 0 {
				m.problem("more than %d addresses: the rest are not taken as participants", MaxParticipants)
				*budget--
			}
			return
		}
		*budget--
		seen[a] = true
		out = append(out, Addr{Name: clip(oneLine(displayName(name)), MaxNameBytes), Address: a})
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
		m.problem("%s: %v", key, err)
		for _, piece := range splitAddressList(v) {
			if a, err := gomail.ParseAddress(piece); err == nil {
				add(a.Name, a.Address)
				continue
			}
			name, addr := looseAddress(piece)
			if addr != "" {
				add(DecodeWords(name), addr)
			}
		}
	}
	return out
}

// displayName decodes encoded words left in a display name. RFC 2047 §5
// forbids them inside a quoted string, so parsers leave
// "=?utf-8?Q?service=40paypal=2Ecom?=" as is; mail clients decode it, and
// so must we, or the contact shows the encoding.
func displayName(name string) string {
	if !strings.Contains(name, "=?") {
		return name
	}
	return DecodeWords(name)
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

// NormAddr lowercases and normalises an email address (IDN domains to
// A-labels). ok is false for anything that is not an address.
func NormAddr(addr string) (string, bool) {
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

// DecodeWords decodes the RFC 2047 encoded words of a header value in any
// charset go-message knows; s is returned as is when it cannot be decoded.
func DecodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
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
