package verify

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// A small MIME reader of our own: RFC 3156 signatures cover the exact bytes of
// a part, which general MIME libraries do not give back, and we need only
// structure, transfer decoding and bounds — never charsets.

const (
	maxMIMEDepth = 16   // nesting beyond this is not a real mail client's
	maxMIMEParts = 1000 // per message, so a hostile message cannot make us walk forever
)

// part is one MIME entity: its header and undecoded body.
type part struct {
	fields    []field
	body      []byte
	mediaType string // lowercased, "text/plain" when absent or broken
	params    map[string]string
}

func parsePart(raw []byte) part {
	fields, body := splitMessage(raw)
	p := part{fields: fields, body: body, mediaType: "text/plain"}
	if ct := first(fields, "Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err == nil || err == mime.ErrInvalidMediaParameter {
			p.mediaType = strings.ToLower(mt)
			p.params = params
		}
	}
	if p.params == nil {
		p.params = map[string]string{}
	}
	return p
}

func (p part) isMultipart() bool { return strings.HasPrefix(p.mediaType, "multipart/") }

// children splits a multipart body on its boundary. The CRLF before each
// delimiter belongs to the delimiter (RFC 2046 §5.1.1), so each child is
// exactly the bytes a signature covers.
func (p part) children() [][]byte {
	b := p.params["boundary"]
	if b == "" || len(b) > 200 {
		return nil
	}
	delim := []byte("--" + b)
	body := p.body
	var (
		out   [][]byte
		start = -1
	)
	for pos := 0; pos <= len(body); {
		// A delimiter line starts at the beginning of the body or after a LF.
		i := bytes.Index(body[pos:], delim)
		if i < 0 {
			break
		}
		i += pos
		if i > 0 && body[i-1] != '\n' {
			pos = i + len(delim)
			continue
		}
		after := body[i+len(delim):]
		closing := bytes.HasPrefix(after, []byte("--"))
		if !closing && !delimiterEnd(after) {
			// "--b" followed by more than whitespace is a line of content
			// that merely starts like the delimiter ("--bb").
			pos = i + len(delim)
			continue
		}
		if start >= 0 {
			end := i
			// Strip the line break that precedes the delimiter.
			if end > start && body[end-1] == '\n' {
				end--
				if end > start && body[end-1] == '\r' {
					end--
				}
			}
			out = append(out, body[start:end])
			if len(out) >= maxMIMEParts {
				return out
			}
		}
		if closing {
			return out
		}
		// The child begins after the rest of the delimiter line.
		nl := bytes.IndexByte(after, '\n')
		if nl < 0 {
			return out
		}
		start = i + len(delim) + nl + 1
		pos = start
	}
	// No closing delimiter: keep what we have, the last part running to the end.
	if start >= 0 && start <= len(body) {
		out = append(out, body[start:])
	}
	return out
}

// delimiterEnd reports whether only transport padding (RFC 2046 LWSP) and a
// line break, or the end of the body, follow a delimiter.
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

// decoded returns the body with its Content-Transfer-Encoding undone, at most
// limit bytes. A broken encoding yields what could be decoded.
func (p part) decoded(limit int64) []byte {
	var r io.Reader = bytes.NewReader(p.body)
	switch strings.ToLower(strings.TrimSpace(first(p.fields, "Content-Transfer-Encoding"))) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &spaceStripper{r: r})
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	}
	out, _ := io.ReadAll(io.LimitReader(r, limit))
	return out
}

// filename returns the part's file name, from Content-Disposition or the
// Content-Type name parameter.
func (p part) filename() string {
	if cd := first(p.fields, "Content-Disposition"); cd != "" {
		if _, params, err := mime.ParseMediaType(cd); err == nil && params["filename"] != "" {
			return params["filename"]
		}
	}
	return p.params["name"]
}

// spaceStripper drops whitespace so base64 split in lines decodes.
type spaceStripper struct{ r io.Reader }

func (s *spaceStripper) Read(b []byte) (int, error) {
	for {
		n, err := s.r.Read(b)
		j := 0
		for _, c := range b[:n] {
			if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				b[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
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
