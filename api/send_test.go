package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/caliopen/caliopen/store"
)

// relay is an in-process SMTP server standing for Postfix's submission
// service: it records what it accepts and refuses one recipient.
type relay struct {
	mu       sync.Mutex
	msgs     []relayed
	user, pw string
	sawTLS   bool
}

type relayed struct {
	from string
	to   []string
	data []byte
	auth string
}

type relaySession struct {
	r    *relay
	c    *smtp.Conn
	cur  relayed
	auth string
}

func (s *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *relaySession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pw string) error {
		if user != s.r.user || pw != s.r.pw {
			return errors.New("bad credentials")
		}
		s.auth = user
		return nil
	}), nil
}

func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	if s.r.user != "" && s.auth == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	s.cur = relayed{from: from, auth: s.auth}
	return nil
}

func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "refused@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "refused@remote.example: Recipient address rejected: User unknown"}
	}
	s.cur.to = append(s.cur.to, to)
	return nil
}

func (s *relaySession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = b
	_, tlsOn := s.c.TLSConnectionState()
	s.r.mu.Lock()
	s.r.msgs = append(s.r.msgs, s.cur)
	s.r.sawTLS = s.r.sawTLS || tlsOn
	s.r.mu.Unlock()
	return nil
}

func (s *relaySession) Reset()        { s.cur = relayed{} }
func (s *relaySession) Logout() error { return nil }

func (r *relay) received() []relayed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayed(nil), r.msgs...)
}

// startRelay serves SMTP on a loopback port; with tlsCfg it offers STARTTLS.
func startRelay(t *testing.T, r *relay, tlsCfg *tls.Config) string {
	t.Helper()
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &relaySession{r: r, c: c}, nil }))
	srv.Domain = "relay.test"
	srv.AllowInsecureAuth = true
	srv.TLSConfig = tlsCfg
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		DNSNames: []string{"relay.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

type sendAnswer struct {
	MessageID string          `json:"message_id"`
	Encrypted bool            `json:"encrypted"`
	Stored    bool            `json:"stored"`
	Message   *messageSummary `json:"message"`
}

func TestSendPlain(t *testing.T) {
	r := &relay{user: "api", pw: "relay secret"}
	serverTLS, pool := selfSigned(t)
	addr := startRelay(t, r, serverTLS)
	h := newHarness(t, func(c *Config) {
		c.Sender = smtpSender(t, SMTPConfig{Addr: addr, Username: "api", Password: "relay secret", RequireTLS: true,
			TLSConfig: &tls.Config{RootCAs: pool, ServerName: "relay.test"}, Timeout: 10 * time.Second})
	})
	parent := h.deliver(h.alice, richMessage)

	ans := decode[sendAnswer](t, h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{
		"to":      []string{"Carol <Carol@Remote.Example>"},
		"subject": "Re: Café plans", "text": "Sounds good.\nSee you there.", "html": "<p>Sounds good.</p>",
		"in_reply_to": parent.MessageID.String(),
	}), http.StatusCreated)
	if !ans.Stored || ans.Message == nil || ans.Message.ConversationID != parent.ConversationID || ans.Message.Inbound {
		t.Fatalf("sent message not filed in the replied conversation: %+v (want conversation %s)", ans, parent.ConversationID)
	}
	got := r.received()
	if len(got) != 1 {
		t.Fatalf("relay got %d messages", len(got))
	}
	m := got[0]
	if m.from != h.alice.Addr || strings.Join(m.to, ",") != "carol@remote.example" || m.auth != "api" || !r.sawTLS {
		t.Errorf("envelope from %q to %v auth %q tls %v", m.from, m.to, m.auth, r.sawTLS)
	}
	mr, err := mail.CreateReader(bytes.NewReader(m.data))
	if err != nil {
		t.Fatal(err)
	}
	hdr := mr.Header
	from, _ := hdr.AddressList("From")
	subj, _ := hdr.Subject()
	irt, _ := hdr.MsgIDList("In-Reply-To")
	refs, _ := hdr.MsgIDList("References")
	mid, _ := hdr.MessageID()
	date, _ := hdr.Date()
	if len(from) != 1 || from[0].Address != h.alice.Addr || from[0].Name != "Alice" || subj != "Re: Café plans" {
		t.Errorf("From %v Subject %q", from, subj)
	}
	if len(irt) != 1 || irt[0] != "rich-1@remote.example" || len(refs) == 0 || refs[len(refs)-1] != "rich-1@remote.example" {
		t.Errorf("In-Reply-To %v References %v", irt, refs)
	}
	if mid == "" || "<"+mid+">" != "<"+ans.MessageID+">" || !strings.HasSuffix(mid, "@"+h.domain) || date.IsZero() {
		t.Errorf("Message-ID %q (answered %q), Date %v", mid, ans.MessageID, date)
	}
	var bodies []string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		bodies = append(bodies, string(b))
	}
	if len(bodies) != 2 || !strings.Contains(bodies[0], "See you there.") || !strings.Contains(bodies[1], "<p>Sounds good.</p>") {
		t.Errorf("bodies %q", bodies)
	}
	conv := decode[conversationView](t, h.do(http.MethodGet, "/api/v1/conversations/"+parent.ConversationID.String(), h.alice.Token, nil), http.StatusOK)
	if conv.MessageCount != 2 {
		t.Errorf("conversation has %d messages after the reply, want 2", conv.MessageCount)
	}

	// Cc recipients are in the envelope and the header.
	decode[sendAnswer](t, h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{
		"to": []string{"carol@remote.example"}, "cc": []string{"Dan <dan@remote.example>"}, "text": "hi both"}), http.StatusCreated)
	got = r.received()
	if len(got) != 2 || strings.Join(got[1].to, ",") != "carol@remote.example,dan@remote.example" || !bytes.Contains(got[1].data, []byte(`Cc: "Dan" <dan@remote.example>`)) {
		t.Fatalf("cc: to %v\n%s", got[len(got)-1].to, got[len(got)-1].data)
	}

	// Bad input never reaches the relay.
	wantError(t, h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{"to": []string{"nope"}, "text": "x"}), http.StatusBadRequest, "invalid", "to[0]")
	wantError(t, h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{"to": []string{}, "text": "x"}), http.StatusBadRequest, "invalid", "to")
	wantError(t, h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{"to": []string{"a@remote.example"}, "text": "x", "in_reply_to": "42"}), http.StatusBadRequest, "invalid", "in_reply_to")
	wantError(t, h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{"to": []string{"a@remote.example"}, "subject": "x\r\nBcc: victim@remote.example", "text": "x"}), http.StatusBadRequest, "invalid", "subject")
	if n := len(r.received()); n != 2 {
		t.Errorf("relay got %d messages after bad requests, want still 2", n)
	}
}

func TestSendRefused(t *testing.T) {
	r := &relay{}
	addr := startRelay(t, r, nil)
	h := newHarness(t, func(c *Config) { c.Sender = smtpSender(t, SMTPConfig{Addr: addr}) })
	rec := h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{
		"to": []string{"refused@remote.example"}, "subject": "hello", "text": "hi"})
	e := wantError(t, rec, http.StatusBadGateway, "submission_refused", "")
	if !strings.Contains(e.Error.Message, "Recipient address rejected") || e.Error.Details["smtp_code"] != float64(550) {
		t.Errorf("refusal not reported: %+v", e.Error)
	}
	// Not stored as sent.
	list := decode[page[conversationView]](t, h.do(http.MethodGet, "/api/v1/conversations", h.alice.Token, nil), http.StatusOK)
	if len(list.Items) != 0 {
		t.Errorf("a refused message was filed: %+v", list.Items)
	}

	// An unreachable relay is a 502 too, and stores nothing.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	_ = l.Close()
	h2 := newHarness(t, func(c *Config) { c.Sender = smtpSender(t, SMTPConfig{Addr: dead, Timeout: 2 * time.Second}) })
	wantError(t, h2.do(http.MethodPost, "/api/v1/messages", h2.alice.Token, map[string]any{
		"to": []string{"x@remote.example"}, "text": "hi"}), http.StatusBadGateway, "relay_unavailable", "")
}

func TestSendEncrypted(t *testing.T) {
	r := &relay{}
	addr := startRelay(t, r, nil)
	h := newHarness(t, func(c *Config) { c.Sender = smtpSender(t, SMTPConfig{Addr: addr}) })
	priv, pub := newKey(t, "grace@remote.example")
	// Alice's key is held by the server: sent mail is signed with it and
	// also encrypted to it.
	alicePriv, alicePub := newKey(t, h.alice.Addr)
	u, err := h.st.GetUser(context.Background(), h.alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	u.Setup = store.AccountSetup{HasKeyPair: true, KeyCustody: "server", PrivateKey: privateArmor(t, alicePriv), PublicKey: alicePub}
	if err := h.st.UpdateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	ct := decode[contactView](t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token, map[string]any{
		"name": "Grace", "channels": []map[string]string{{"protocol": "email", "address": "grace@remote.example"}},
	}), http.StatusCreated)
	decode[keyView](t, h.do(http.MethodPost, "/api/v1/contacts/"+ct.ID.String()+"/keys", h.alice.Token, map[string]string{"armored": pub}), http.StatusCreated)

	// One recipient without a key: 409 naming it, nothing sent.
	e := wantError(t, h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{
		"to": []string{"grace@remote.example", "heidi@remote.example"}, "subject": "s", "text": "secret", "encrypt": true,
	}), http.StatusConflict, "missing_keys", "")
	if rs, _ := e.Error.Details["recipients"].([]any); len(rs) != 1 || rs[0] != "heidi@remote.example" {
		t.Errorf("missing recipients %v, want [heidi@remote.example]", e.Error.Details)
	}
	if len(r.received()) != 0 {
		t.Fatal("a message went out despite a missing key")
	}

	ans := decode[sendAnswer](t, h.do(http.MethodPost, "/api/v1/messages", h.alice.Token, map[string]any{
		"to": []string{"grace@remote.example"}, "subject": "plans", "text": "the secret plan", "encrypt": true,
	}), http.StatusCreated)
	if !ans.Encrypted {
		t.Error("answer does not say encrypted")
	}
	got := r.received()
	if len(got) != 1 {
		t.Fatalf("relay got %d messages", len(got))
	}
	raw := got[0].data
	if bytes.Contains(raw, []byte("the secret plan")) {
		t.Fatal("plaintext visible in the sent message")
	}
	ent, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	typ, params, _ := ent.Header.ContentType()
	if typ != "multipart/encrypted" || params["protocol"] != "application/pgp-encrypted" {
		t.Fatalf("Content-Type %s %v", typ, params)
	}
	mr := ent.MultipartReader()
	p1, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	ctl, _ := io.ReadAll(p1.Body)
	if t1, _, _ := p1.Header.ContentType(); t1 != "application/pgp-encrypted" || !strings.Contains(string(ctl), "Version: 1") {
		t.Fatalf("first part %s %q", t1, ctl)
	}
	p2, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	armored, _ := io.ReadAll(p2.Body)
	md, err := openpgp.ReadMessage(armoredBody(t, armored), openpgp.EntityList{priv, alicePriv}, nil, nil)
	if err != nil {
		t.Fatalf("decrypt with the recipient's key: %v", err)
	}
	plain, err := io.ReadAll(md.UnverifiedBody)
	if err != nil {
		t.Fatal(err)
	}
	if !md.IsSigned || md.SignedBy == nil || md.SignatureError != nil || md.SignedBy.Entity.PrimaryKey.KeyId != alicePriv.PrimaryKey.KeyId {
		t.Errorf("not signed by Alice's key: signed %v, error %v", md.IsSigned, md.SignatureError)
	}
	// Alice can read her own sent copy.
	if _, err := openpgp.ReadMessage(armoredBody(t, armored), openpgp.EntityList{alicePriv}, nil, nil); err != nil {
		t.Errorf("the sender cannot decrypt her sent copy: %v", err)
	}
	inner, err := message.Read(bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(inner.Body)
	if it, _, _ := inner.Header.ContentType(); it != "text/plain" || !strings.Contains(string(body), "the secret plan") {
		t.Fatalf("decrypted entity %s %q", it, body)
	}
}
