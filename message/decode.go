package message

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"golang.org/x/net/html"
	"golang.org/x/text/encoding/charmap"

	"github.com/caliopen/caliopen/internal/usertext"
)

// mediaType returns the lowercased media type and its parameters, leniently:
// a Content-Type that mime cannot parse still yields its type and the
// parameters that look readable. No Content-Type means text/plain.
func mediaType(v string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return "text/plain", map[string]string{}
	}
	if t, params, err := mime.ParseMediaType(v); (err == nil || err == mime.ErrInvalidMediaParameter) && t != "" {
		if params == nil {
			params = map[string]string{}
		}
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

// disposition returns the lowercased Content-Disposition and its filename
// parameter, decoded.
func disposition(h Header) (string, string) {
	v := h.Get("Content-Disposition")
	if v == "" {
		return "", ""
	}
	d, params, err := mime.ParseMediaType(v)
	if err != nil && err != mime.ErrInvalidMediaParameter {
		d, _, _ = strings.Cut(v, ";")
		return strings.ToLower(strings.TrimSpace(d)), ""
	}
	return strings.ToLower(d), params["filename"]
}

// Filename returns the part's file name, from Content-Disposition or the
// Content-Type name parameter, decoded and on one line.
func (p *Part) Filename() string {
	_, name := disposition(p.Header)
	if name == "" {
		name = p.Params["name"]
	}
	return clip(oneLine(DecodeWords(name)), maxFilenameLen)
}

func (p *Part) transferEncoding() string {
	return strings.ToLower(strings.TrimSpace(p.Header.Get("Content-Transfer-Encoding")))
}

// decode returns p's body with its transfer encoding undone, charged to the
// message's decoding budget; at most limit bytes (0: no limit but the
// budget). Once the budget is spent, nothing more is decoded.
func (m *Message) decode(p *Part, limit int64) []byte {
	body := p.Body()
	if m.budget <= 0 {
		m.problem("part %s: decoding budget of the message spent: not decoded", p.Path)
		return nil
	}
	out, prob := decodeTransfer(p.transferEncoding(), body)
	if prob != "" {
		m.problem("part %s: %s", p.Path, prob)
	}
	if limit > 0 && int64(len(out)) > limit {
		out = out[:limit]
	}
	if int64(len(out)) > m.budget {
		m.problem("part %s: decoding budget of the message spent: cut", p.Path)
		out = out[:m.budget]
	}
	m.budget -= int64(len(out))
	return out
}

// decodeTransfer undoes a Content-Transfer-Encoding, leniently. Identity
// encodings return body itself, not a copy.
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

// decodedSize is the size of p's decoded body, computed without decoding
// when the encoding allows.
func decodedSize(p *Part) int64 {
	body := p.Body()
	switch p.transferEncoding() {
	case "base64":
		n := 0
		for _, c := range body {
			if isB64(c) {
				n++
			}
		}
		return int64(n/4*3) + int64([]int{0, 0, 1, 2}[n%4])
	case "quoted-printable":
		n := int64(0)
		for i := 0; i < len(body); i++ {
			switch {
			case body[i] == '=' && i+2 < len(body) && isHex(body[i+1]) && isHex(body[i+2]):
				i += 2
			case body[i] == '=' && i+1 < len(body) && (body[i+1] == '\n' || body[i+1] == '\r'):
				for i+1 < len(body) && (body[i+1] == '\n' || body[i+1] == '\r') {
					i++
				}
				continue
			}
			n++
		}
		return n
	}
	return int64(len(body))
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f'
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
	// Decode in place: the output is shorter than its input.
	n, err := base64.RawStdEncoding.Decode(clean, clean)
	if err != nil && prob == "" {
		prob = "base64: " + err.Error()
	}
	if junk && prob == "" {
		prob = "base64 with characters outside the alphabet (skipped)"
	}
	return clean[:n], prob
}

// decodeQP decodes quoted-printable; a malformed escape is kept literally.
func decodeQP(body []byte) []byte {
	out := make([]byte, 0, len(body))
	unhex := func(c byte) byte {
		switch {
		case c >= '0' && c <= '9':
			return c - '0'
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10
		}
		return c - 'a' + 10
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		if i+2 < len(body) && isHex(body[i+1]) && isHex(body[i+2]) {
			out = append(out, unhex(body[i+1])<<4|unhex(body[i+2]))
			i += 2
			continue
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
		// A charset decoder may expand its input (1 byte to 3 in UTF-8);
		// the bound keeps that proportional.
		out, rerr := io.ReadAll(io.LimitReader(r, int64(4*len(data)+16)))
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

// Text returns s as valid UTF-8 (read as Windows-1252 when it is not
// UTF-8), cut to at most n bytes on a rune boundary.
func Text(s string, n int) string { return clip(fixText(s), n) }

// oneLine is s as valid UTF-8 on one line: runs of blanks and control
// characters become one space, none at either end, and bidirectional
// overrides are dropped, so that a sender's display name or subject cannot
// read as another one (the rule usertext applies to what users type).
func oneLine(s string) string {
	var b strings.Builder
	space := false
	for _, r := range fixText(s) {
		if r == ' ' || usertext.IsControl(r) {
			space = b.Len() > 0
			continue
		}
		if usertext.IsBidiOverride(r) {
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

func (m *Message) capText(what, s string) string {
	if len(s) > MaxBodyBytes {
		m.problem("%s longer than %d bytes: cut (the full text stays in the raw message)", what, MaxBodyBytes)
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

// htmlText returns the visible text of an HTML document (for excerpts and
// classification), without scripts and styles.
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
