package ingest

import (
	"regexp"
	"strings"

	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/privacyindex"
)

const maxReceived = 100 // Received: fields looked at

// structure derives the structure facts from the message's classification
// and its route header fields.
func structure(m *message.Message, ownReceived int) Structure {
	c := m.Class
	s := Structure{
		ContentType: m.Root.MediaType,
		PGPMIME:     c.PGPMIME, PGPMIMEPath: c.PGPMIMEPath, PGPInline: c.PGPInline, PGPAttachment: c.PGPAttachment,
		PGPSigned: c.PGPSigned, PGPSigPath: c.PGPSigPath, PGPClearSigned: c.PGPClearSigned,
		SMIMEEncrypted: c.SMIMEEncrypted, SMIMESigned: c.SMIMESigned,
		ClearParts:       c.Encryption == privacyindex.EncPartial,
		Encryption:       c.Encryption,
		ProtectedHeaders: c.ProtectedHeaders,
	}
	h := m.Header()
	if v := h.Get("List-Id"); v != "" {
		s.ListID = text(v, 255)
		if s.ListID == "" {
			s.ListID = "-"
		}
	}
	s.ARCSealed = h.Has("Arc-Seal")
	s.DKIMSigned = h.Has("Dkim-Signature")

	if len(c.Autocrypt) > 0 {
		a := c.Autocrypt[0]
		s.Autocrypt = true
		if addr, ok := normAddr(a.Addr); ok {
			s.AutocryptAddr = addr
			s.AutocryptMatchesFrom = len(m.From) == 1 && m.From[0].Address == addr
		}
		s.AutocryptPreferEncrypt = text(a.PreferEncrypt, 32)
	}

	received := h.Values("Received")
	if ownReceived > 0 {
		if ownReceived >= len(received) {
			received = nil
		} else {
			received = received[ownReceived:]
		}
	}
	if len(received) > maxReceived {
		received = received[:maxReceived]
	}
	s.ReceivedHops = len(received)
	s.Hops = hops(received)
	return s
}

var (
	withProto = regexp.MustCompile(`(?i)\bwith\s+([a-z0-9]+)`)
	fromPart  = regexp.MustCompile(`(?is)^\s*from\s+(.*?)\s+by\s`)
)

// clear protocols in a Received "with" clause (RFC 3848: an "S" means TLS).
var clearProtos = map[string]bool{"smtp": true, "esmtp": true, "esmtpa": true, "utf8smtp": true, "utf8smtpa": true, "http": true}
var tlsProtos = map[string]bool{
	"esmtps": true, "esmtpsa": true, "smtps": true, "utf8smtps": true, "utf8smtpsa": true,
	"lmtps": true, "lmtpsa": true, "https": true, "httpsa": true,
}

// hops summarises upstream Received fields (fact T3, advisory: anyone can
// write them). Hops from the loopback or without a "from" clause are
// internal to a sender's host and not counted.
func hops(received []string) privacyindex.Hops {
	var hp privacyindex.Hops
	allTLS := true
	for _, r := range received {
		lower := strings.ToLower(r)
		m := fromPart.FindStringSubmatch(lower)
		if m == nil {
			continue
		}
		from := m[1]
		if strings.Contains(from, "localhost") || strings.Contains(from, "127.0.0.1") || strings.Contains(from, "[::1]") ||
			strings.Contains(from, "ipv6:::1") {
			continue
		}
		hp.Count++
		tls := strings.Contains(lower, "using tls") || strings.Contains(lower, "version=tls") ||
			strings.Contains(lower, "(tls") || strings.Contains(lower, "with tls")
		proto := ""
		if pm := withProto.FindStringSubmatch(stripComments(lower)); pm != nil {
			proto = pm[1]
		}
		if tlsProtos[proto] {
			tls = true
		}
		if !tls {
			allTLS = false
			if clearProtos[proto] {
				hp.AnyClear = true
			}
		}
	}
	hp.AllTLS = hp.Count > 0 && allTLS
	return hp
}

// stripComments removes parenthesised comments (nested) from a header value.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}
