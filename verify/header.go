package verify

import (
	"bytes"
	"net/mail"
	"strings"
)

// field is one header field, unfolded.
type field struct {
	Name  string // as written
	Value string // unfolded, leading/trailing space trimmed
	// Raw is the field exactly as received, folding kept, every line ending
	// in CRLF: "simple" DKIM/ARC canonicalization signs these bytes.
	Raw string
}

// splitMessage splits raw into its header fields (in order, top first) and the
// body. It never fails: a message without a blank line is all header, a line
// that is not a field is skipped (as the DKIM verifier does not, so DKIM
// decides for itself what such a message means).
func splitMessage(raw []byte) ([]field, []byte) {
	var (
		fields []field
		cur    *field
		rest   = raw
	)
	for len(rest) > 0 {
		line := rest
		next := []byte(nil)
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, next = rest[:i], rest[i+1:]
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return fields, next
		}
		rest = next
		if line[0] == ' ' || line[0] == '\t' {
			if cur != nil {
				cur.Value += " " + strings.TrimSpace(string(line))
				cur.Raw += string(line) + "\r\n"
			}
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(bytes.TrimSpace(name)) == 0 {
			cur = nil
			continue
		}
		fields = append(fields, field{
			Name:  string(bytes.TrimSpace(name)),
			Value: strings.TrimSpace(string(value)),
			Raw:   string(line) + "\r\n",
		})
		cur = &fields[len(fields)-1]
	}
	return fields, nil
}

// all returns the values of every field named name (case-insensitive), top first.
func all(fields []field, name string) []string {
	var out []string
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// first returns the topmost value of name, "" when absent.
func first(fields []field, name string) string {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// parseTags parses a DKIM-style tag list ("a=1; b = 2"), folding whitespace
// out of values. Malformed pieces are skipped: callers only read tags for
// reporting; the libraries that decide results parse strictly themselves.
func parseTags(s string) map[string]string {
	tags := make(map[string]string)
	for part := range strings.SplitSeq(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := tags[k]; dup || k == "" {
			continue
		}
		tags[k] = strings.Join(strings.Fields(v), "")
	}
	return tags
}

// fromAddress returns the single From address of the header, lowercased, or
// "" when there is none or several (RFC 7489 §6.6.1: DMARC needs exactly one
// author domain).
func fromAddress(fields []field) string {
	froms := all(fields, "From")
	if len(froms) != 1 {
		return ""
	}
	list, err := mail.ParseAddressList(froms[0])
	if err != nil || len(list) != 1 {
		// Fall back to the angle-addr, which survives broken display names.
		v := froms[0]
		if i, j := strings.LastIndexByte(v, '<'), strings.LastIndexByte(v, '>'); i >= 0 && j > i {
			v = v[i+1 : j]
		}
		v = strings.TrimSpace(v)
		if strings.Count(v, "@") != 1 || strings.ContainsAny(v, " \t,") {
			return ""
		}
		return strings.ToLower(v)
	}
	return strings.ToLower(list[0].Address)
}

// domainOf returns the lowercased domain of an address, without trailing dot.
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(addr[i+1:]), ".")
}
