package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// workloadShape is the traffic the as-shipped benchmark sends: a few hundred
// correspondents drawn from a Zipf distribution (a few write often, most
// rarely), each at a sender domain with real SPF, DMARC and, for a share of
// domains, DKIM records in the test DNS server.
type workloadShape struct {
	Seed           int64
	Messages       int
	Users          []string // hosted recipients
	Correspondents int
	Domains        int
	// SignedShare of sender domains sign with DKIM (RSA-2048, a real signer).
	SignedShare float64
}

// workMsg is one message of the workload.
type workMsg struct {
	From, To  string // envelope
	MessageID string // without <>
	Signed    bool
	Raw       []byte
}

// workload is the generated traffic and what describes it.
type workload struct {
	Msgs          []workMsg
	Signed        int
	Bytes         int64
	Attachments   int
	DistinctFroms int
}

var (
	firstNames = strings.Fields("Alice Bruno Chloé David Emma Farid Greta Hugo Inès Jules Karim Léa Marc Nina Oscar Paula Quentin Rosa Samir Tara Ugo Vera Wim Yasmine Zoé")
	lastNames  = strings.Fields("Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent Lefebvre Michel Garcia David Bertrand Roux Vincent Fournier")
	words      = strings.Fields(`the a to of and in for on with that this is it we you be will as
are at from have by not our your meeting project report draft budget review please thanks
regards next week monday friday attached see below update schedule call tomorrow team
client invoice order delivery contract version changes comments agenda minutes notes
question answer proposal deadline quarter results numbers figures plan travel room
lunch office document share folder access account password support ticket issue fixed
release test build server data backup storage network security privacy policy customer`)
	subjects = []string{"Meeting notes", "Quarterly report", "Invoice", "Project update", "Lunch on Friday?",
		"Contract draft", "Travel plans", "Support ticket", "Agenda for Monday", "Release schedule",
		"Budget review", "Your order", "Question about the proposal", "Photos", "Minutes"}
)

// generateWorkload builds the messages, deterministic for a seed but for the
// DKIM keys (which the DNS server then publishes), so every run sends the
// same traffic.
func generateWorkload(tb testing.TB, dns *dnsServer, shape workloadShape) *workload {
	tb.Helper()
	r := rand.New(rand.NewSource(shape.Seed))
	type domain struct {
		name   string
		signer *dkimSigner
	}
	domains := make([]domain, shape.Domains)
	for d := range domains {
		name := fmt.Sprintf("mail%02d.corr.test", d)
		domains[d].name = name
		if float64(d%5) < shape.SignedShare*5 {
			domains[d].signer = newDKIMSigner(tb, dns, name, "s1")
		}
		// As in real mail, SPF sometimes through an include (one more lookup).
		if d%2 == 0 {
			dns.addTXT(tb, name, "v=spf1 ip4:127.0.0.1 ~all")
		} else {
			dns.addTXT(tb, name, "v=spf1 include:_spf."+name+" -all")
			dns.addTXT(tb, "_spf."+name, "v=spf1 ip4:127.0.0.0/8 -all")
		}
		switch d % 4 {
		case 0:
			dns.addTXT(tb, "_dmarc."+name, "v=DMARC1; p=none; rua=mailto:dmarc@"+name)
		case 1:
			dns.addTXT(tb, "_dmarc."+name, "v=DMARC1; p=quarantine")
		case 2:
			dns.addTXT(tb, "_dmarc."+name, "v=DMARC1; p=reject")
		} // 3: no DMARC record
	}
	type corr struct {
		display, addr string
		dom           int
	}
	corrs := make([]corr, shape.Correspondents)
	for i := range corrs {
		f, l := firstNames[r.Intn(len(firstNames))], lastNames[r.Intn(len(lastNames))]
		d := (i * 7) % shape.Domains // the most active correspondents spread over domains
		local := strings.ToLower(fmt.Sprintf("%s.%s%d", asciiName(f), asciiName(l), i))
		corrs[i] = corr{display: f + " " + l, addr: local + "@" + domains[d].name, dom: d}
	}
	zipf := rand.NewZipf(r, 1.1, 1, uint64(shape.Correspondents-1))
	base := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	last := map[[2]string]struct{ id, subject string }{} // the previous message between a pair, for replies
	froms := map[string]bool{}
	w := &workload{}
	for k := range shape.Messages {
		ci := int(zipf.Uint64())
		c := corrs[ci]
		// A correspondent mostly writes to one user, sometimes to another.
		to := shape.Users[(ci*3)%len(shape.Users)]
		if r.Float64() < 0.3 {
			to = shape.Users[r.Intn(len(shape.Users))]
		}
		pair := [2]string{c.addr, to}
		id := fmt.Sprintf("%d.%x@%s", k, shape.Seed, domains[c.dom].name)
		subject := subjects[r.Intn(len(subjects))]
		var extra []string
		if prev, ok := last[pair]; ok && r.Float64() < 0.4 {
			subject = "Re: " + strings.TrimPrefix(prev.subject, "Re: ")
			extra = append(extra, "In-Reply-To: <"+prev.id+">", "References: <"+prev.id+">")
		}
		last[pair] = struct{ id, subject string }{id, subject}
		// Text sizes log-normal around 5 KB (most 2–20 KB); 5% carry an
		// attachment of 20–400 KB, the tail of the distribution.
		textSize := int(math.Exp(math.Log(5000) + 0.8*r.NormFloat64()))
		textSize = min(max(textSize, 600), 120_000)
		attach := 0
		if r.Float64() < 0.05 {
			attach = int(20_000 * math.Pow(20, r.Float64()))
		}
		raw := buildMessage(r, fmt.Sprintf("%s <%s>", c.display, c.addr), to, subject, id,
			base.Add(time.Duration(k)*time.Minute), textSize, r.Float64() < 0.4, attach, extra)
		m := workMsg{From: c.addr, To: to, MessageID: id, Raw: raw}
		if s := domains[c.dom].signer; s != nil {
			m.Raw, m.Signed = s.sign(tb, raw), true
			w.Signed++
		}
		if attach > 0 {
			w.Attachments++
		}
		froms[c.addr] = true
		w.Bytes += int64(len(m.Raw))
		w.Msgs = append(w.Msgs, m)
	}
	w.DistinctFroms = len(froms)
	return w
}

// asciiName drops the accents of the few names that have one, for addresses.
func asciiName(s string) string {
	return strings.NewReplacer("é", "e", "è", "e", "ç", "c").Replace(s)
}

// buildMessage writes a message with a text body of about textSize bytes,
// an HTML alternative when html is set, and an attachment of attach bytes
// (base64) when attach > 0. Lines end in CRLF.
func buildMessage(r *rand.Rand, from, to, subject, id string, date time.Time, textSize int, html bool, attach int, extra []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n",
		from, to, subject, date.Format(time.RFC1123Z), id)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	text := prose(r, textSize)
	textPart := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
	body := textPart
	if html {
		htmlText := "<html><body><p>" + strings.ReplaceAll(text, "\r\n\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n"
		body = multipart("alternative", "alt-"+id, textPart,
			"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"+htmlText)
	}
	if attach > 0 {
		data := make([]byte, attach)
		for i := range data {
			data[i] = byte(r.Intn(256))
		}
		enc := base64.StdEncoding.EncodeToString(data)
		var a strings.Builder
		a.WriteString("Content-Type: application/pdf; name=\"document.pdf\"\r\nContent-Disposition: attachment; filename=\"document.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
		for len(enc) > 76 {
			a.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		a.WriteString(enc + "\r\n")
		body = multipart("mixed", "mix-"+id, body, a.String())
	}
	b.WriteString(body)
	return b.Bytes()
}

// multipart joins parts (each its headers, a blank line and its body) into
// one multipart entity, its Content-Type header first.
func multipart(subtype, boundary string, parts ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Content-Type: multipart/%s; boundary=\"%s\"\r\n\r\n", subtype, boundary)
	for _, p := range parts {
		fmt.Fprintf(&b, "--%s\r\n%s", boundary, p)
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.String()
}

// prose returns about n bytes of words in lines of at most 72 characters,
// with a paragraph break now and then.
func prose(r *rand.Rand, n int) string {
	var b strings.Builder
	line := 0
	for b.Len() < n {
		w := words[r.Intn(len(words))]
		if line+len(w)+1 > 72 {
			b.WriteString("\r\n")
			line = 0
			if r.Intn(6) == 0 {
				b.WriteString("\r\n")
			}
		}
		if line > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}
