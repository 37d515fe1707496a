package message

import (
	"bytes"
	"fmt"
	"strings"
)

// Field is one header field.
type Field struct {
	Name  string // as written, without surrounding blanks
	Value string // unfolded: continuation lines joined by one space, trimmed
	// Raw is the field exactly as received, folding kept, every line ending
	// in CRLF: DKIM and ARC "simple" canonicalization sign these bytes.
	Raw string
}

// Header is a header's fields in order, top first.
type Header []Field

// Get returns the topmost value of name (case-insensitive), "" when absent.
func (h Header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Values returns the values of every field named name, top first.
func (h Header) Values(name string) []string {
	var out []string
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// Has reports whether a field named name is present.
func (h Header) Has(name string) bool {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// readHeader splits an entity (a whole message or one MIME part) into its
// header and the offset of its body, leniently: it never fails, it drops what
// it cannot read and says so in problems.
//
//   - a first line that is not a header field (no "Name:") means there is no
//     header at all: everything is body (an mbox "From " line is skipped);
//   - a malformed line inside the header is dropped when a header field
//     follows it, else it is taken as the start of a body whose blank
//     separator line is missing;
//   - a header without a blank line after it ends at the end of the data.
func readHeader(raw []byte) (h Header, body int, problems []string) {
	pos := 0
	first := true
	start, end := -1, -1 // byte range of the field being read (continuations included)
	flush := func() {
		if start >= 0 {
			h = append(h, makeField(raw[start:end]))
		}
		start = -1
	}
	for pos < len(raw) {
		line, next := nextLine(raw, pos)
		content := trimEOL(line)
		switch {
		case len(content) == 0: // blank line: end of header
			flush()
			return h, next, problems
		case first && bytes.HasPrefix(content, []byte("From ")):
			problems = append(problems, "mbox From_ line skipped")
		case content[0] == ' ' || content[0] == '\t':
			if start >= 0 {
				end = next
			} else if first {
				problems = append(problems, "header starts with a continuation line: dropped")
			}
		case isField(content):
			flush()
			start, end = pos, next
		default:
			if first {
				return nil, 0, append(problems, noHeader)
			}
			flush()
			if nextIsField(raw, next) {
				problems = append(problems, fmt.Sprintf("malformed header line dropped: %.80q", content))
				break
			}
			return h, pos, append(problems, "no blank line between header and body")
		}
		first = false
		pos = next
	}
	flush()
	if len(raw) > 0 {
		problems = append(problems, "no body (header not ended by a blank line)")
	}
	return h, len(raw), problems
}

// makeField builds a field from its lines (the first, then continuations).
func makeField(b []byte) Field {
	var rawB, val strings.Builder
	rawB.Grow(len(b) + 2)
	val.Grow(len(b))
	var f Field
	for i, pos := 0, 0; pos < len(b); i++ {
		line, next := nextLine(b, pos)
		content := trimEOL(line)
		rawB.Write(content)
		rawB.WriteString("\r\n")
		if i == 0 {
			name, value, _ := bytes.Cut(content, []byte(":"))
			f.Name = string(bytes.TrimSpace(name))
			val.Write(bytes.TrimSpace(value))
		} else if c := bytes.TrimSpace(content); len(c) > 0 {
			if val.Len() > 0 {
				val.WriteByte(' ')
			}
			val.Write(c)
		}
		pos = next
	}
	f.Value, f.Raw = val.String(), rawB.String()
	return f
}

// noHeader is the problem of an entity that starts with its body; a MIME
// part without header is plain text by definition, so parts do not report it.
const noHeader = "no header: the message is taken as body only"

// nextLine returns the line starting at pos (with its end of line) and the
// position after it.
func nextLine(raw []byte, pos int) ([]byte, int) {
	i := bytes.IndexByte(raw[pos:], '\n')
	if i < 0 {
		return raw[pos:], len(raw)
	}
	return raw[pos : pos+i+1], pos + i + 1
}

func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

// isField reports whether line starts a header field: a non-empty name of
// printable ASCII without ":", then ":" (blanks before the colon tolerated).
func isField(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// nextIsField reports whether the next line that is not a continuation
// starts a header field.
func nextIsField(raw []byte, pos int) bool {
	for pos < len(raw) {
		line, next := nextLine(raw, pos)
		content := trimEOL(line)
		if len(content) == 0 {
			return false
		}
		if content[0] != ' ' && content[0] != '\t' {
			return isField(content)
		}
		pos = next
	}
	return false
}
