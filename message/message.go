// Package message is the one reading of an RFC 5322 message: a lenient
// parse that keeps the raw byte range of every part, decodes what it can
// (transfer encodings, charsets, RFC 2047 words), never fails on bad input
// (it records problems instead), and one classification of what protects
// the message (encryption, signatures, Autocrypt, protected headers).
//
// Parse runs once per message on the delivery path; ingest, verify and
// keytrust read its result, and the API finds attachments in it. After
// Parse a Message is read only, so concurrent readers need no lock.
// Compose writes outbound mail (MIME, PGP/MIME).
package message

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limits that keep one hostile message from costing too much. Whatever they
// cut stays in the raw bytes; the cut is recorded as a problem.
const (
	MaxDepth        = 32       // multipart nesting
	MaxParts        = 1000     // MIME parts read
	MaxDecodedBytes = 64 << 20 // transfer- and charset-decoded bytes, whole message
	MaxBodyBytes    = 1 << 20  // text and HTML body kept, each
	MaxParticipants = 200      // addresses taken from the header, all roles
	MaxReferences   = 50       // References kept (the newest)
	MaxSubjectBytes = 2048
	MaxNameBytes    = 256
	MaxProblems     = 32
	ExcerptRunes    = 200
	maxBoundary     = 200
	maxMsgIDBytes   = 998
	maxFilenameLen  = 512
)

// Options tunes Parse; the zero value uses the defaults above.
type Options struct {
	// MaxDecodedBytes is the decoding budget of the whole message (all
	// parts together); MaxDecodedBytes when zero.
	MaxDecodedBytes int64
}

// Part is one MIME entity. Its bytes are a slice of the message's raw
// bytes, never a copy: a signature is checked on exactly what arrived.
type Part struct {
	Header    Header
	MediaType string            // lowercased; text/plain when absent or unreadable
	Params    map[string]string // Content-Type parameters, keys lowercased
	Path      string            // IMAP-style: "1" for a single-part body, "1.2" …
	// Start, BodyStart and End are offsets into Message.Raw: the part's
	// header is Raw[Start:BodyStart] (with its blank line), its body
	// Raw[BodyStart:End].
	Start, BodyStart, End int
	Parts                 []*Part // children of a multipart

	raw []byte // the message's raw bytes
}

// Bytes returns the whole entity, header and body, as received.
func (p *Part) Bytes() []byte { return p.raw[p.Start:p.End] }

// Body returns the undecoded body.
func (p *Part) Body() []byte { return p.raw[p.BodyStart:p.End] }

// IsMultipart reports a multipart entity whose parts could be read.
func (p *Part) IsMultipart() bool {
	return strings.HasPrefix(p.MediaType, "multipart/") && len(p.Parts) > 0
}

// Message is one parsed message.
type Message struct {
	Raw  []byte
	Root *Part // Root.Header is the message header

	From, Sender, ReplyTo, To, Cc, Bcc []Addr
	Subject                            string
	Date                               time.Time // zero when absent or unreadable
	MessageID                          string    // without <>
	InReplyTo, References              []string

	TextBody    string
	HTMLBody    string
	Excerpt     string // empty for an encrypted message
	Attachments []Attachment

	Class Classification

	// Problems lists what could not be read (the raw bytes are kept whole).
	Problems []string

	budget int64 // decoding budget left
	parts  int
}

// Header returns the message header.
func (m *Message) Header() Header { return m.Root.Header }

// Body returns the undecoded body of the message (after the header).
func (m *Message) Body() []byte { return m.Root.Body() }

// Attachment is a part that is not a text body.
type Attachment struct {
	PartPath    string
	Filename    string
	ContentType string
	Size        int64 // decoded size
}

// Parse reads raw leniently. It never fails: what cannot be read is left
// out and listed in Problems. raw is kept, not copied: the caller must not
// change it afterwards.
func Parse(raw []byte, opt Options) *Message {
	m := &Message{Raw: raw, budget: opt.MaxDecodedBytes}
	if m.budget <= 0 {
		m.budget = MaxDecodedBytes
	}
	m.Root = m.entity(0, len(raw), nil, 0, true)
	m.readEnvelopeFields()
	c := collector{m: m}
	c.visit(m.Root, 0, nil)
	m.TextBody = m.capText("text body", strings.ReplaceAll(c.text.String(), "\r\n", "\n"))
	m.HTMLBody = m.capText("HTML body", strings.ReplaceAll(c.html.String(), "\r\n", "\n"))
	m.classify(&c)
	if m.Class.Encryption == 0 {
		src := m.TextBody
		if strings.TrimSpace(src) == "" {
			src = htmlText(m.HTMLBody)
		}
		m.Excerpt = excerpt(src)
	}
	return m
}

func (m *Message) problem(format string, args ...any) {
	if len(m.Problems) >= MaxProblems {
		return
	}
	m.Problems = append(m.Problems, clip(fixText(fmt.Sprintf(format, args...)), 200))
	if len(m.Problems) == MaxProblems {
		m.Problems[MaxProblems-1] = "more problems not listed"
	}
}

// entity reads the entity raw[start:end] and, for a multipart, its parts.
func (m *Message) entity(start, end int, path []int, depth int, top bool) *Part {
	m.parts++
	b := m.Raw[start:end]
	h, body, probs := readHeader(b)
	p := &Part{Header: h, Start: start, BodyStart: start + body, End: end, Path: partPath(path), raw: m.Raw}
	for _, pr := range probs {
		if pr == noHeader && !top {
			continue // a part without header is plain text by definition
		}
		if top {
			m.problem("%s", pr)
		} else {
			m.problem("part %s: %s", p.Path, pr)
		}
	}
	p.MediaType, p.Params = mediaType(h.Get("Content-Type"))
	if !strings.HasPrefix(p.MediaType, "multipart/") {
		return p
	}
	if depth >= MaxDepth {
		m.problem("part %s: nesting deeper than %d: not read", p.Path, MaxDepth)
		return p
	}
	kids, probs := splitMultipart(p.Body(), p.Params["boundary"])
	for _, pr := range probs {
		m.problem("part %s: %s", p.Path, pr)
	}
	for i, k := range kids {
		if m.parts >= MaxParts {
			m.problem("more than %d MIME parts: the rest is not read", MaxParts)
			break
		}
		child := append(path[:len(path):len(path)], i+1)
		p.Parts = append(p.Parts, m.entity(p.BodyStart+k[0], p.BodyStart+k[1], child, depth+1, false))
	}
	if len(p.Parts) == 0 {
		m.problem("part %s: %s without parts: read as text", p.Path, p.MediaType)
	}
	return p
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

// splitMultipart returns the byte ranges of the parts of a multipart body.
// A delimiter line starts the body or follows a LF, and only transport
// padding may follow it; the line break before it belongs to it (RFC 2046
// §5.1.1), so each part is exactly the bytes a signature covers. A missing
// close delimiter ends the last part at the end of the data.
func splitMultipart(body []byte, boundary string) ([][2]int, []string) {
	if boundary == "" {
		return nil, []string{"multipart without boundary"}
	}
	if len(boundary) > maxBoundary {
		return nil, []string{"multipart boundary too long"}
	}
	delim := []byte("--" + boundary)
	var (
		out   [][2]int
		start = -1
	)
	for pos := 0; pos <= len(body); {
		i := indexAt(body, pos, delim)
		if i < 0 {
			break
		}
		if i > 0 && body[i-1] != '\n' {
			pos = i + len(delim)
			continue
		}
		after := body[i+len(delim):]
		closing := len(after) >= 2 && after[0] == '-' && after[1] == '-'
		if !closing && !delimiterEnd(after) {
			// "--b" followed by more than blanks is content that merely
			// starts like the delimiter ("--bb").
			pos = i + len(delim)
			continue
		}
		if start >= 0 {
			end := i
			if end > start && body[end-1] == '\n' {
				end--
				if end > start && body[end-1] == '\r' {
					end--
				}
			}
			out = append(out, [2]int{start, end})
			if len(out) >= MaxParts {
				return out, nil
			}
		}
		if closing {
			return out, nil
		}
		nl := indexAt(after, 0, []byte("\n"))
		if nl < 0 {
			return out, []string{"multipart not closed by its boundary"}
		}
		start = i + len(delim) + nl + 1
		pos = start
	}
	if start >= 0 {
		out = append(out, [2]int{start, len(body)})
		return out, []string{"multipart not closed by its boundary"}
	}
	return nil, []string{"boundary not found in multipart body"}
}

func indexAt(b []byte, pos int, sep []byte) int {
	if pos > len(b) {
		return -1
	}
	i := bytes.Index(b[pos:], sep)
	if i < 0 {
		return -1
	}
	return pos + i
}

// delimiterEnd reports whether only transport padding and a line break,
// or the end of the body, follow a delimiter.
func delimiterEnd(after []byte) bool {
	for _, c := range after {
		switch c {
		case ' ', '\t':
		case '\r', '\n':
			return true
		default:
			return false
		}
	}
	return true
}

// ReadHeader reads only the header of raw, leniently, as Parse does.
func ReadHeader(raw []byte) Header {
	h, _, _ := readHeader(raw)
	return h
}

// Find returns the part at an IMAP-style path (Part.Path), nil when there
// is none. A multipart's own path names its first child, as in IMAP; only
// the body of a single-part message is "1" itself.
func (m *Message) Find(path string) *Part {
	if !m.Root.IsMultipart() {
		if path == "1" {
			return m.Root
		}
		return nil
	}
	p := m.Root
	for {
		var next *Part
		for _, k := range p.Parts {
			if k.Path == path {
				return k
			}
			if strings.HasPrefix(path, k.Path+".") {
				next = k
				break
			}
		}
		if next == nil {
			return nil
		}
		p = next
	}
}

// Content returns p's body with its transfer encoding undone and, for
// text, converted to UTF-8. It serves one part on request and is not
// charged to the message's decoding budget.
func (p *Part) Content() []byte {
	data, _ := decodeTransfer(p.transferEncoding(), p.Body())
	if strings.HasPrefix(p.MediaType, "text/") {
		s, _ := decodeCharset(p.Params["charset"], data)
		return []byte(s)
	}
	return data
}
