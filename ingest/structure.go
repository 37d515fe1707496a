package ingest

import (
	"regexp"
	"strings"

	"golang.org/x/net/html"

	"github.com/caliopen/caliopen/privacyindex"
)

const (
	armorBegin       = "-----BEGIN PGP MESSAGE-----"
	armorEnd         = "-----END PGP MESSAGE-----"
	clearSignedBegin = "-----BEGIN PGP SIGNED MESSAGE-----"
	maxReceived      = 100 // Received: fields looked at
)

// countText classifies one text leaf: empty, only armored PGP messages,
// partly armored, or clear.
func (w *walker) countText(mt, s string) {
	if mt == "text/html" {
		s = htmlText(s)
	}
	if strings.Contains(s, clearSignedBegin) {
		w.p.Structure.PGPClearSigned = true
	}
	if strings.TrimSpace(s) == "" {
		return
	}
	if !strings.Contains(s, armorBegin) {
		w.clearLeaves++
		return
	}
	w.p.Structure.PGPInline = true
	if strings.TrimSpace(outsideArmor(s)) == "" {
		w.armorLeaves++
		return
	}
	w.clearLeaves++ // readable text beside the armor
	w.armorLeaves++
}

// outsideArmor returns s without its armored PGP MESSAGE blocks.
func outsideArmor(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, armorBegin)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		j := strings.Index(s[i:], armorEnd)
		if j < 0 {
			return b.String()
		}
		s = s[i+j+len(armorEnd):]
	}
}

var hiddenSubjects = map[string]bool{
	"...": true, "…": true, "[...]": true, "encrypted message": true, "encrypted subject": true,
	"p≡p": true, "pep": true,
}

// classify derives the structure facts from the header and the walk.
func (p *Parsed) classify(ownReceived int, w *walker) {
	s := &p.Structure
	h := p.Header

	containers := s.PGPMIME || s.SMIMEEncrypted
	switch {
	case w.clearLeaves == 0 && containers:
		s.Encryption = privacyindex.EncMIME
	case w.clearLeaves == 0 && (w.armorLeaves > 0 || s.PGPAttachment):
		s.Encryption = privacyindex.EncInline
	case containers || w.armorLeaves > 0 || s.PGPAttachment:
		s.Encryption = privacyindex.EncPartial
		s.ClearParts = true
	}
	if s.Encryption != privacyindex.EncNone {
		_, params := mediaType(h)
		if strings.EqualFold(params["protected-headers"], "v1") || hiddenSubjects[strings.ToLower(strings.TrimSpace(p.Subject))] {
			s.ProtectedHeaders = true
		}
	}

	if v := h.Get("List-Id"); v != "" {
		s.ListID = clip(fixText(strings.TrimSpace(v)), 255)
		if s.ListID == "" {
			s.ListID = "-"
		}
	}
	s.ARCSealed = h.Has("Arc-Seal")
	s.DKIMSigned = h.Has("Dkim-Signature")

	if v := h.Get("Autocrypt"); v != "" {
		s.Autocrypt = true
		attrs := autocryptAttrs(v)
		if a, ok := normAddr(attrs["addr"]); ok {
			s.AutocryptAddr = a
			s.AutocryptMatchesFrom = len(p.From) == 1 && p.From[0].Address == a
		}
		if pe := attrs["prefer-encrypt"]; pe != "" {
			s.AutocryptPreferEncrypt = clip(fixText(pe), 32)
		}
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
}

func autocryptAttrs(v string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if k == "keydata" {
			out[k] = "present"
			continue
		}
		out[k] = strings.TrimSpace(val)
	}
	return out
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

// htmlText returns the visible text of an HTML document (for excerpts and
// structure checks), without scripts and styles.
func htmlText(s string) string {
	if s == "" {
		return ""
	}
	z := html.NewTokenizer(strings.NewReader(s))
	var b strings.Builder
	skip := 0
	for {
		switch z.Next() {
		case html.ErrorToken:
			return b.String()
		case html.StartTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style", "title":
				skip++
			case "br", "p", "div", "tr", "li", "pre":
				b.WriteByte('\n')
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style", "title":
				if skip > 0 {
					skip--
				}
			}
		case html.TextToken:
			if skip == 0 {
				b.Write(z.Text())
			}
		}
		if b.Len() > MaxBodyBytes {
			return b.String()
		}
	}
}
