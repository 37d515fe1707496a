package verify

import (
	"net/mail"
	"strings"

	"github.com/caliopen/caliopen/message"
)

// field is one header field, as the message package read it.
type field = message.Field

// all returns the values of every field named name (case-insensitive), top first.
func all(fields []field, name string) []string { return message.Header(fields).Values(name) }

// first returns the topmost value of name, "" when absent.
func first(fields []field, name string) string { return message.Header(fields).Get(name) }

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
