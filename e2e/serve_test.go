package e2e

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caliopen/caliopen/internal/postfixtest"
)

const password = "Correct-Horse-Battery-Staple-9"

// serveDeployment is `caliopen serve` on the embedded store behind a
// private Postfix using the contrib/postfix fragments.
type serveDeployment struct {
	t                                    *testing.T
	node                                 *node
	dns                                  *dnsServer
	pf                                   *postfixtest.Instance
	milterAddr, lookupdAddr, apiAddr, op string
	// submitAddr is a loopback smtpd without STARTTLS the API submits to.
	submitAddr string
	dbPath     string
	serve      *proc
	tokens     map[string]*apiClient
}

func newServeDeployment(t *testing.T) *serveDeployment {
	t.Helper()
	postfixtest.Require(t)
	d := &serveDeployment{
		t:           t,
		dns:         startDNS(t),
		lookupdAddr: freeAddr(t),
		apiAddr:     freeAddr(t),
		op:          freeAddr(t),
		submitAddr:  freeAddr(t),
		tokens:      map[string]*apiClient{},
	}
	dataDir := t.TempDir()
	d.dbPath = filepath.Join(dataDir, "caliopen.db")
	// The milter line of contrib/postfix/main.cf is kept verbatim: a Unix
	// socket in Postfix's queue directory, where `caliopen serve` listens.
	d.pf = postfixtest.Start(t, postfixtest.Options{
		Include: &postfixtest.Include{LookupdAddr: d.lookupdAddr},
		// Postfix accepts more than the milter: the milter's limit is what is tested.
		Main: []string{"message_size_limit = 10485760"},
		// The API's submission port: loopback, no STARTTLS (api.submission.starttls = false).
		Master: []string{d.submitAddr + " inet n - n - - smtpd\n  -o smtpd_tls_security_level=none"},
	})
	d.milterAddr = "unix:" + d.pf.MilterSocket()
	d.node = newNode(t, map[string]string{
		"CALIOPEN_DATA_DIR":                dataDir,
		"CALIOPEN_LOG_LEVEL":               "debug",
		"CALIOPEN_MILTER_LISTEN":           d.milterAddr,
		"CALIOPEN_MILTER_MAX_MESSAGE_SIZE": "64KB",
		"CALIOPEN_LOOKUPD_SOCKETMAP":       d.lookupdAddr,
		"CALIOPEN_API_LISTEN":              d.apiAddr,
		"CALIOPEN_API_SUBMISSION_ADDRESS":  d.submitAddr,
		"CALIOPEN_OPERATOR_LISTEN":         d.op,
		"CALIOPEN_DNS_SERVER":              d.dns.Addr,
		"CALIOPEN_DNS_TIMEOUT":             "2s",
		// Vector 14: DNS down must not hold the sender beyond the budget,
		// and the pending checks must complete soon after it is back.
		"CALIOPEN_VERIFY_BUDGET":         "1s",
		"CALIOPEN_VERIFY_RETRY_INTERVAL": "1s",
	})
	return d
}

func (d *serveDeployment) start(sets ...string) {
	d.t.Helper()
	var args []string
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	d.serve = d.node.start(append(args, "serve")...)
	d.serve.waitHealthy(d.op, 60*time.Second)
	for _, a := range []string{d.milterAddr, d.lookupdAddr, d.apiAddr} {
		d.serve.waitListening(a, 10*time.Second)
	}
}

func (d *serveDeployment) stop() { d.serve.stop() }

// api returns a logged-in client for user (one login per user per test:
// the API rate-limits logins).
func (d *serveDeployment) api(user string) *apiClient {
	d.t.Helper()
	if c, ok := d.tokens[user]; ok {
		c.t = d.t
		return c
	}
	c := login(d.t, d.apiAddr, user, password)
	d.tokens[user] = c
	return c
}

func (d *serveDeployment) forTest(t *testing.T) *serveDeployment {
	cp := *d
	cp.t = t
	cp.node = &node{t: t, env: d.node.env}
	return &cp
}

// TestServeEmbedded is scenario A: one `caliopen serve` on the embedded
// store, a real Postfix with the contrib fragments, and mail through SMTP.
func TestServeEmbedded(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	d := newServeDeployment(t)

	// Provisioning through the CLI, before serve holds the store's lock,
	// while GnuPG makes vector 5's keys.
	provisioned := make(chan error, 1)
	go func() {
		cmds := [][]string{{"domain", "add", "example.test"}}
		for _, u := range []string{"alice", "bob", "carol", "dave", "ivan", "grace"} {
			cmds = append(cmds, []string{"user", "add", "--address", u + "@example.test", u})
		}
		cmds = append(cmds, []string{"alias", "add", "team@example.test", "bob@example.test", "carol@example.test"})
		for _, c := range cmds {
			if out, err := d.node.cli(password+"\n", c...); err != nil {
				provisioned <- fmt.Errorf("caliopen %s: %v\n%s", strings.Join(c, " "), err, out)
				return
			}
		}
		provisioned <- nil
	}()
	keys := makeVector5Keys(t)
	if err := <-provisioned; err != nil {
		t.Fatal(err)
	}
	if out := d.node.mustCLI("", "alias", "list", "example.test"); !strings.Contains(out, "team@example.test") {
		t.Fatalf("alias list: %q", out)
	}
	// Vector 5 needs grace's private key on the server (see giveServerKey).
	v5 := giveServerKey(t, d, keys)

	// The shipped fragments are in force, lookupd's port substituted.
	pc, err := d.pf.PostconfN(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"smtpd_milters":           postfixtest.DefaultMilter,
		"non_smtpd_milters":       postfixtest.DefaultMilter,
		"virtual_mailbox_maps":    "socketmap:inet:" + d.lookupdAddr + ":mailboxes",
		"virtual_transport":       "discard:",
		"milter_default_action":   "tempfail",
		"virtual_mailbox_domains": "socketmap:inet:" + d.lookupdAddr + ":domains",
	} {
		if pc[k] != v {
			t.Fatalf("postconf %s = %q, want %q (from contrib/postfix/main.cf)", k, pc[k], v)
		}
	}

	d.start()

	t.Run("StoredAndReadable", func(t *testing.T) { testStoredAndReadable(t, d.forTest(t)) })
	t.Run("StartTLSVector2", func(t *testing.T) { testVector2(t, d.forTest(t)) })
	t.Run("UnknownUser550", func(t *testing.T) { testUnknownUser(t, d.forTest(t)) })
	t.Run("AliasAndExtension", func(t *testing.T) { testAliasAndExtension(t, d.forTest(t)) })
	t.Run("Oversized552", func(t *testing.T) { testOversized(t, d.forTest(t)) })
	t.Run("BrokenMIME", func(t *testing.T) { testBrokenMIME(t, d.forTest(t)) })
	t.Run("DuplicateStoredOnce", func(t *testing.T) { testDuplicate(t, d.forTest(t)) })
	t.Run("DKIMVector3", func(t *testing.T) { testVector3(t, d.forTest(t)) })
	t.Run("DNSDownVector14", func(t *testing.T) { testVector14(t, d.forTest(t)) })
	t.Run("PGPVector5", func(t *testing.T) { testVector5(t, d.forTest(t), v5) })
	t.Run("APISend", func(t *testing.T) { testAPISend(t, d.forTest(t)) })
	// Last: these stop and restart serve.
	t.Run("MilterDown", func(t *testing.T) { testMilterDown(t, d.forTest(t)) })
	t.Run("APISendRelayOffersSTARTTLS", func(t *testing.T) { testAPISendRelayTLS(t, d.forTest(t)) })
}

// 1. A message to a known user is stored and readable through the API.
func testStoredAndReadable(t *testing.T, d *serveDeployment) {
	raw := msg("Sam Sender <sam@plain.test>", "alice@example.test", "Hello Alice", "a1@plain.test",
		"Hi Alice,\nthis came through a real Postfix.\n")
	mustDeliver(t, d.pf, false, "sam@plain.test", []string{"alice@example.test"}, raw)
	m := d.api("alice").waitMessage("Hello Alice", 20*time.Second)
	if !strings.Contains(m.TextBody, "this came through a real Postfix.") {
		t.Errorf("text body = %q", m.TextBody)
	}
	if got := m.from(); got != "sam@plain.test" {
		t.Errorf("from = %q, want sam@plain.test (participants %+v)", got, m.Participants)
	}
	if !m.Inbound {
		t.Errorf("message not inbound")
	}
	if m.MessageID != "a1@plain.test" {
		t.Errorf("message_id = %q", m.MessageID)
	}
	var rawBack []byte
	d.api("alice").must("GET", "/messages/"+m.ID+"/raw", nil, &rawBack)
	if !bytes.Equal(rawBack, raw) {
		t.Errorf("raw differs from what was sent:\n got %q\nwant %q", rawBack, raw)
	}
	// Vector 1: no STARTTLS, nothing verified, unknown sender: 7, E.
	expectPI(t, m, 7, "E")
}

// 2. STARTTLS (TLS 1.3) is recorded; vector 2: 22, D.
func testVector2(t *testing.T, d *serveDeployment) {
	raw := msg("tls@tls.test", "alice@example.test", "Vector 2 over TLS", "v2@tls.test", "Sealed in transit only.\n")
	mustDeliver(t, d.pf, true, "tls@tls.test", []string{"alice@example.test"}, raw)
	m := d.api("alice").waitMessage("Vector 2 over TLS", 20*time.Second)
	sec := decodeSecurity(t, m)
	if sec.Features.TLSVersion != "TLSv1.3" {
		t.Errorf("security features TLSVersion = %q, want TLSv1.3 (security %s)", sec.Features.TLSVersion, m.Security)
	}
	if sec.Envelope.TLSVersion != "TLSv1.3" {
		t.Errorf("security envelope tls_version = %q, want TLSv1.3", sec.Envelope.TLSVersion)
	}
	expectPI(t, m, 22, "D")
	expectFacts(t, m, map[string]float64{"C1": 0, "T1": 15, "T3": 2, "A1": 0, "X2": 3, "X3": 2})
}

// 3. An unknown user is refused at RCPT with 550 5.1.1.
func testUnknownUser(t *testing.T, d *serveDeployment) {
	raw := msg("sam@plain.test", "nobody@example.test", "To nobody", "nobody@plain.test", "x\n")
	tr := sendOne(t, d.pf, false, "sam@plain.test", []string{"nobody@example.test"}, raw)
	if len(tr.Rcpt) != 1 || tr.Rcpt[0].Code != 550 || !strings.Contains(tr.Rcpt[0].Text, "5.1.1") {
		t.Fatalf("RCPT nobody@example.test = %+v, want 550 5.1.1", tr.Rcpt)
	}
	if tr.Accepted() {
		t.Fatalf("message to an unknown user accepted: %v", tr.Final)
	}
	// An unknown domain is not ours to accept either (relay denied, 5xx).
	tr = sendOne(t, d.pf, false, "sam@plain.test", []string{"x@not-hosted.test"}, raw)
	if len(tr.Rcpt) != 1 || tr.Rcpt[0].Code/100 != 5 {
		t.Fatalf("RCPT x@not-hosted.test = %+v, want 5xx", tr.Rcpt)
	}
}

// 4. An alias with two targets and a +extension address reach their users.
func testAliasAndExtension(t *testing.T, d *serveDeployment) {
	raw := msg("sam@plain.test", "team@example.test", "To the team", "team1@plain.test", "Team mail.\n")
	mustDeliver(t, d.pf, false, "sam@plain.test", []string{"team@example.test"}, raw)
	raw2 := msg("sam@plain.test", "carol+news@example.test", "Carol plus news", "ext1@plain.test", "Extension mail.\n")
	mustDeliver(t, d.pf, false, "sam@plain.test", []string{"carol+news@example.test"}, raw2)
	// Case does not matter either.
	raw3 := msg("sam@plain.test", "Bob+X@Example.TEST", "Bob mixed case", "ext2@plain.test", "Mixed case.\n")
	mustDeliver(t, d.pf, false, "sam@plain.test", []string{"Bob+X@Example.TEST"}, raw3)

	bob, carol := d.api("bob"), d.api("carol")
	bob.waitMessage("To the team", 20*time.Second)
	carol.waitMessage("To the team", 20*time.Second)
	carol.waitMessage("Carol plus news", 20*time.Second)
	bob.waitMessage("Bob mixed case", 20*time.Second)
	if n := len(bob.bySubject("To the team")); n != 1 {
		t.Errorf("bob has %d copies of the alias message, want 1", n)
	}
	if n := len(carol.bySubject("To the team")); n != 1 {
		t.Errorf("carol has %d copies of the alias message, want 1", n)
	}
	if n := len(bob.bySubject("Carol plus news")); n != 0 {
		t.Errorf("bob got carol's +extension message")
	}
	if n := len(d.api("alice").bySubject("To the team")); n != 0 {
		t.Errorf("alice got the team alias message")
	}
}

// 6. Over milter.max_message_size (Postfix's limit is larger): 552.
func testOversized(t *testing.T, d *serveDeployment) {
	body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n", 2000) // ~130 KB
	raw := msg("sam@plain.test", "dave@example.test", "Too big", "big1@plain.test", body)
	tr := sendOne(t, d.pf, false, "sam@plain.test", []string{"dave@example.test"}, raw)
	if tr.Final.Code != 552 || !strings.Contains(tr.Final.Text, "5.3.4") {
		t.Fatalf("oversized message: final reply %v, want 552 5.3.4 (RCPT %v DATA %v)", tr.Final, tr.Rcpt, tr.Data)
	}
	// Under the limit still passes.
	small := msg("sam@plain.test", "dave@example.test", "Small enough", "small1@plain.test", strings.Repeat("x", 1000)+"\n")
	mustDeliver(t, d.pf, false, "sam@plain.test", []string{"dave@example.test"}, small)
	dave := d.api("dave")
	dave.waitMessage("Small enough", 20*time.Second)
	if n := len(dave.bySubject("Too big")); n != 0 {
		t.Errorf("the refused oversized message was stored %d times", n)
	}
}

// 7. Broken MIME (one header, multipart without boundary, 8-bit garbage) is stored as received.
func testBrokenMIME(t *testing.T, d *serveDeployment) {
	raw := []byte("Content-Type: multipart/mixed\r\n\r\n--nothing\r\n\xff\xfe\xc3\x28 garbage \x80\x81\x9f\r\nmore \xe9t\xe9 bytes\r\n--nothing--\r\n")
	mustDeliver(t, d.pf, false, "sam@plain.test", []string{"ivan@example.test"}, raw)
	ivan := d.api("ivan")
	var ms []message
	waitFor(t, 20*time.Second, "ivan has the broken message", func() (bool, string) {
		ms = ivan.messages()
		return len(ms) > 0, fmt.Sprint(len(ms))
	})
	if len(ms) != 1 {
		t.Fatalf("ivan has %d messages, want 1", len(ms))
	}
	full := ivan.message(ms[0].ID)
	var rawBack []byte
	ivan.must("GET", "/messages/"+ms[0].ID+"/raw", nil, &rawBack)
	if !bytes.Equal(rawBack, raw) {
		t.Errorf("broken message not stored as received:\n got %q\nwant %q", rawBack, raw)
	}
	sec := decodeSecurity(t, full)
	t.Logf("broken message: subject %q excerpt %q parse problems %q", full.Subject, full.Excerpt, sec.ParseProblems)
}

// 8. The same message (same bytes, same Message-ID) twice: one copy.
func testDuplicate(t *testing.T, d *serveDeployment) {
	raw := msg("sam@plain.test", "alice@example.test", "Said twice", "dup1@plain.test", "Once is enough.\n")
	t1 := mustDeliver(t, d.pf, false, "sam@plain.test", []string{"alice@example.test"}, raw)
	t2 := mustDeliver(t, d.pf, false, "sam@plain.test", []string{"alice@example.test"}, raw)
	if t1.QueueID() == t2.QueueID() {
		t.Errorf("both deliveries have queue id %q", t1.QueueID())
	}
	judy := d.api("alice")
	judy.waitMessage("Said twice", 20*time.Second)
	// Give a (wrong) second copy the time to appear.
	time.Sleep(500 * time.Millisecond)
	if n := len(judy.bySubject("Said twice")); n != 1 {
		t.Fatalf("alice has %d copies of a message delivered twice, want 1", n)
	}

	// The same bytes on several connections at once: still one copy.
	raw2 := msg("sam@plain.test", "alice@example.test", "Said at once", "dup2@plain.test", "Concurrent duplicates.\n")
	const n = 4
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			s, err := postfixtest.SendMail(ctx, d.pf.SMTPAddr, postfixtest.SendOptions{},
				postfixtest.Message{From: "sam@plain.test", To: []string{"alice@example.test"}, Raw: raw2})
			if err == nil && (len(s.Transactions) != 1 || !s.Transactions[0].Accepted()) {
				err = fmt.Errorf("not accepted: %+v", s.Transactions)
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Errorf("concurrent duplicate: %v", err)
		}
	}
	judy.waitMessage("Said at once", 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	if got := len(judy.bySubject("Said at once")); got != 1 {
		t.Fatalf("alice has %d copies of a message delivered %d times concurrently, want 1", got, n)
	}
}

// 9. Vector 3: DKIM-signed, aligned, SPF pass, DMARC p=reject, TLS 1.3 → 30, C.
func testVector3(t *testing.T, d *serveDeployment) {
	signer := newDKIMSigner(t, d.dns, "signed.test", "e2e")
	d.dns.addTXT(t, "signed.test", "v=spf1 ip4:127.0.0.1 -all")
	d.dns.addTXT(t, "_dmarc.signed.test", "v=DMARC1; p=reject")
	raw := signer.sign(t, msg("News <news@signed.test>", "alice@example.test", "Vector 3 signed", "v3@signed.test", "Authenticated.\n"))
	mustDeliver(t, d.pf, true, "news@signed.test", []string{"alice@example.test"}, raw)
	m := d.api("alice").waitMessage("Vector 3 signed", 20*time.Second)
	sec := decodeSecurity(t, m)
	if sec.Features.DKIM != "pass" || sec.Features.SPF != "pass" || sec.Features.DMARC != "pass" {
		t.Errorf("features DKIM %q SPF %q DMARC %q, want pass pass pass (security %s)", sec.Features.DKIM, sec.Features.SPF, sec.Features.DMARC, m.Security)
	}
	if sec.Verification.DKIM.Result != "pass" || !sec.Verification.DKIM.Aligned || sec.Verification.SPF.Result != "pass" ||
		sec.Verification.DMARC.Result != "pass" || sec.Verification.DMARC.Policy != "reject" {
		t.Errorf("verification facts %+v, want DKIM pass aligned, SPF pass, DMARC pass p=reject", sec.Verification)
	}
	if sec.Features.TLSVersion != "TLSv1.3" {
		t.Errorf("TLS %q", sec.Features.TLSVersion)
	}
	expectPI(t, m, 30, "C")
	expectFacts(t, m, map[string]float64{"T1": 15, "A1": 8, "A2": 0, "X3": 2})
}

// vector5 is what makeVector5Keys made before serve started.
type vector5 struct {
	grace     *gpgHome
	sender    *gpgHome
	senderPub string
	senderFpr string
}

// makeVector5Keys makes grace's RSA-3072 key pair and the sender's key with GnuPG.
func makeVector5Keys(t *testing.T) *vector5 {
	t.Helper()
	graceHome := newGPGHome(t)
	graceHome.genRSA("Grace", "grace@example.test", 3072)
	sender := newGPGHome(t)
	sender.genRSA("Paul Sender", "paul@pgp.test", 2048)
	sender.importKey(graceHome.exportPublic("grace@example.test"))
	return &vector5{grace: graceHome, sender: sender, senderPub: sender.exportPublic("paul@pgp.test"), senderFpr: sender.fingerprint("paul@pgp.test")}
}

// giveServerKey gives grace a server-side private key with the CLI
// (`caliopen user key`), before serve holds the embedded store's lock.
func giveServerKey(t *testing.T, d *serveDeployment, v *vector5) *vector5 {
	t.Helper()
	out, err := d.node.cli(v.grace.exportSecret("grace@example.test"), "user", "key", "grace")
	if err != nil || !strings.Contains(out, "custody: server") {
		t.Fatalf("caliopen user key grace: %v\n%s", err, out)
	}
	return v
}

// 10. Vector 5: PGP/MIME by GnuPG to grace's server-side RSA-3072 key,
// signed by a sender whose key grace imported (first seen), TLS 1.3, no DKIM → 73, B.
func testVector5(t *testing.T, d *serveDeployment, v *vector5) {
	grace := d.api("grace")
	var ct struct {
		ID string `json:"id"`
	}
	grace.must("POST", "/contacts", map[string]any{
		"name":     "Paul Sender",
		"channels": []map[string]string{{"protocol": "email", "address": "paul@pgp.test"}},
	}, &ct)
	var key struct {
		Fingerprint string `json:"fingerprint"`
		Bits        int    `json:"bits"`
	}
	grace.must("POST", "/contacts/"+ct.ID+"/keys", map[string]string{"armored": v.senderPub}, &key)
	if key.Fingerprint != v.senderFpr {
		t.Errorf("imported key fingerprint %q, want %q", key.Fingerprint, v.senderFpr)
	}

	inner := []byte("Content-Type: text/plain; charset=utf-8\r\n\r\nOnly Grace can read this.\r\n")
	armored := v.sender.encryptSign(inner, "paul@pgp.test", "grace@example.test")
	raw := pgpMIME("Paul Sender <paul@pgp.test>", "grace@example.test", "Vector 5 sealed", "v5@pgp.test", armored)
	mustDeliver(t, d.pf, true, "paul@pgp.test", []string{"grace@example.test"}, raw)

	m := grace.waitMessage("Vector 5 sealed", 20*time.Second)
	sec := decodeSecurity(t, m)
	if !sec.Verification.PGP.Decrypted {
		t.Errorf("server did not decrypt with grace's server-side key: pgp facts %+v", sec.Verification.PGP)
	}
	if sec.Verification.PGP.SignerFingerprint != v.senderFpr || !sec.Verification.PGP.SignerKnown {
		t.Errorf("signer %q known=%v, want %q known", sec.Verification.PGP.SignerFingerprint, sec.Verification.PGP.SignerKnown, v.senderFpr)
	}
	if sec.Verification.KeyState != "first_seen" {
		t.Errorf("key_state %q, want first_seen", sec.Verification.KeyState)
	}
	expectPI(t, m, 73, "B")
	expectFacts(t, m, map[string]float64{"C1": 35, "C2": 10, "T1": 15, "A1": 0, "A2": 5, "A3": 1, "X2": 3, "X3": 2})
}

// 11. API sending: alice sends to bob through Postfix; bob gets it, alice keeps it.
func testAPISend(t *testing.T, d *serveDeployment) {
	alice := d.api("alice")
	var resp struct {
		MessageID string   `json:"message_id"`
		Stored    bool     `json:"stored"`
		Message   *message `json:"message"`
	}
	alice.must("POST", "/messages", map[string]any{
		"to": []string{"Bob <bob@example.test>"}, "subject": "Sent through the API", "text": "Hello Bob, from the API.",
	}, &resp)
	if !resp.Stored || resp.MessageID == "" {
		t.Errorf("send response: %+v", resp)
	}
	bob := d.api("bob")
	m := bob.waitMessage("Sent through the API", 30*time.Second)
	if m.from() != "alice@example.test" || !strings.Contains(m.TextBody, "Hello Bob, from the API.") || !m.Inbound {
		t.Errorf("bob's copy: from %q inbound %v body %q", m.from(), m.Inbound, m.TextBody)
	}
	sent := alice.bySubject("Sent through the API")
	if len(sent) != 1 || sent[0].Inbound {
		t.Fatalf("alice's sent copies: %+v, want one outbound", sent)
	}
}

// 5. Milter (serve) down: the sender gets 4xx and Postfix keeps nothing; a
// sending MTA queues and retries; after restart every message is stored once.
func testMilterDown(t *testing.T, d *serveDeployment) {
	relay := startRelay(t, d.pf.SMTPAddr)
	// A transaction open when serve stops: its message must not be acknowledged.
	midRaw := msg("sam@plain.test", "dave@example.test", "Cut mid-transaction", "down0@plain.test", "The milter went away.\n")
	mid := openTx(t, d.pf.SMTPAddr, "sam@plain.test", "dave@example.test")
	if mid.Rcpt.Code != 250 {
		t.Fatalf("RCPT before the stop: %v", mid.Rcpt)
	}
	d.stop()
	data, final := mid.finish(midRaw)
	if final.Code == 250 || !tempFailed(postfixtest.Transaction{Data: data, Final: final}) {
		t.Fatalf("message sent after serve stopped mid-transaction: DATA %v final %v, want 4xx", data, final)
	}
	t.Logf("serve stopped mid-transaction: DATA %v final %v", data, final)

	raw := msg("sam@plain.test", "dave@example.test", "While down", "down1@plain.test", "Retry me.\n")
	tr := sendOne(t, d.pf, false, "sam@plain.test", []string{"dave@example.test"}, raw)
	if tr.Accepted() {
		t.Fatalf("accepted while caliopen serve is down: %v", tr.Final)
	}
	if !tempFailed(tr) {
		t.Fatalf("while down: RCPT %v final %v, want a 4xx", tr.Rcpt, tr.Final)
	}
	if n, _ := d.pf.QueueCount(); n != 0 {
		t.Fatalf("Postfix kept %d messages it did not acknowledge", n)
	}

	// The same through a sending MTA: it must queue the message.
	viaRelay := msg("relay@plain.test", "dave@example.test", "Relayed while down", "down2@plain.test", "Queued at the sender.\n")
	mustDeliver(t, relay, false, "relay@plain.test", []string{"dave@example.test"}, viaRelay)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := relay.WaitLog(ctx, "status=deferred"); err != nil {
		t.Fatalf("relay did not defer: %v", err)
	}
	if n, _ := relay.QueueCount(); n != 1 {
		t.Fatalf("relay queue holds %d messages, want 1", n)
	}

	d.start()
	if err := relay.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := relay.WaitQueueEmpty(ctx); err != nil {
		t.Fatalf("relay queue after restart: %v", err)
	}
	// The direct clients retry.
	mustDeliver(t, d.pf, false, "sam@plain.test", []string{"dave@example.test"}, raw)
	mustDeliver(t, d.pf, false, "sam@plain.test", []string{"dave@example.test"}, midRaw)

	dave := d.api("dave")
	dave.waitMessage("While down", 20*time.Second)
	dave.waitMessage("Relayed while down", 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := len(dave.bySubject("While down")); n != 1 {
		t.Errorf("%d copies of the retried message, want 1", n)
	}
	if n := len(dave.bySubject("Cut mid-transaction")); n != 1 {
		t.Errorf("%d copies of the message cut mid-transaction, want 1", n)
	}
	if n := len(dave.bySubject("Relayed while down")); n != 1 {
		t.Errorf("%d copies of the relayed message, want 1", n)
	}
	// Messages stored before the restart are still there.
	if n := len(dave.bySubject("Small enough")); n != 1 {
		t.Errorf("after restart dave has %d copies of an earlier message, want 1", n)
	}
}

// tempFailed: some stage answered 4xx and none 5xx.
func tempFailed(tr postfixtest.Transaction) bool {
	four := false
	for _, r := range append(append([]postfixtest.Reply{tr.Mail}, tr.Rcpt...), tr.Data, tr.Final) {
		switch r.Code / 100 {
		case 4:
			four = true
		case 5:
			return false
		}
	}
	return four
}

// The API submits to a relay offering STARTTLS with a certificate it cannot
// verify (Debian's Postfix default: snakeoil), while api.submission.starttls
// is false (the default): sending must still work, as documented
// ("STARTTLS for submission", default false).
func testAPISendRelayTLS(t *testing.T, d *serveDeployment) {
	d.stop()
	d.start("api.submission.address=" + d.pf.SMTPAddr)
	alice := d.api("alice")
	err := alice.do("POST", "/messages", map[string]any{
		"to": []string{"bob@example.test"}, "subject": "Sent via a STARTTLS relay", "text": "Hello again.",
	}, nil)
	if err != nil {
		t.Fatalf("POST /api/v1/messages with api.submission.starttls=false to a relay offering STARTTLS: %v", err)
	}
	d.api("bob").waitMessage("Sent via a STARTTLS relay", 30*time.Second)
}
