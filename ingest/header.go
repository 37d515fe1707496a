package ingest

import (
	"bufio"
	"bytes"
	"fmt"

	"github.com/emersion/go-message/textproto"
)

// readHeader splits an entity (a whole message or one MIME part) into its
// header and body, leniently: it never fails, it drops what it cannot read
// and says so in problems.
//
//   - a first line that is not a header field (no "Name:") means there is no
//     header at all: everything is body (an mbox "From " line is skipped);
//   - a malformed line inside the header is dropped when a header field
//     follows it, else it is taken as the start of a body whose blank
//     separator line is missing;
//   - a header without a blank line after it ends at the end of the data;
//   - there is no size limit on a header or a line (raw is in memory already).
//
// The kept fields are handed to go-message's textproto reader, which then
// parses them without error.
func readHeader(raw []byte) (textproto.Header, []byte, []string) {
	var problems []string
	var kept bytes.Buffer
	pos := 0
	first := true
	inField := false // the last kept line started or continued a field
	for pos < len(raw) {
		line, next := nextLine(raw, pos)
		content := trimEOL(line)
		switch {
		case len(content) == 0: // blank line: end of header
			return parseKept(kept.Bytes(), &problems), raw[next:], problems
		case first && bytes.HasPrefix(content, []byte("From ")):
			problems = append(problems, "mbox From_ line skipped")
		case content[0] == ' ' || content[0] == '\t':
			if inField {
				kept.Write(content)
				kept.WriteString("\r\n")
			} else if first {
				problems = append(problems, "header starts with a continuation line: dropped")
			}
		case isField(content):
			kept.Write(content)
			kept.WriteString("\r\n")
			inField = true
		default:
			if first {
				problems = append(problems, "no header: the message is taken as body only")
				return textproto.Header{}, raw, problems
			}
			if nextIsField(raw, next) {
				problems = append(problems, fmt.Sprintf("malformed header line dropped: %.80q", content))
				inField = false
				break
			}
			problems = append(problems, "no blank line between header and body")
			return parseKept(kept.Bytes(), &problems), raw[pos:], problems
		}
		first = false
		pos = next
	}
	if len(raw) > 0 {
		problems = append(problems, "no body (header not ended by a blank line)")
	}
	return parseKept(kept.Bytes(), &problems), nil, problems
}

func parseKept(kept []byte, problems *[]string) textproto.Header {
	if len(kept) == 0 {
		return textproto.Header{}
	}
	buf := make([]byte, 0, len(kept)+2)
	buf = append(buf, kept...)
	buf = append(buf, '\r', '\n')
	h, err := textproto.ReadHeader(bufio.NewReaderSize(bytes.NewReader(buf), 64<<10))
	if err != nil { // not expected: every kept line is well formed
		*problems = append(*problems, "header: "+clip(err.Error(), 120))
	}
	return h
}

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
