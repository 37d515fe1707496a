package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/verify/dnsresolver"
	"github.com/caliopen/caliopen/verify/internal/dnstest"
	"github.com/emersion/go-msgauth/dkim"
)

// authEnv is a sending domain published on a real DNS server: DKIM key,
// SPF and DMARC records, as a domain owner would publish them.
type authEnv struct {
	dns *dnstest.Server
	key crypto.Signer // example.org's DKIM key, selector "sel"
	v   *Verifier
}

func newAuthEnv(t *testing.T) *authEnv {
	t.Helper()
	srv := dnstest.Start(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	publishKey(t, srv, "sel._domainkey.example.org", key.Public())
	srv.AddTXT("example.org", "v=spf1 ip4:192.0.2.10 -all")
	srv.AddTXT("_dmarc.example.org", "v=DMARC1; p=reject; rua=mailto:dmarc@example.org")
	return &authEnv{dns: srv, key: key, v: testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: time.Second}))}
}

// testVerifier builds a Verifier on r that re-panics; edit sets the rest of
// its Config.
func testVerifier(r Resolver, edit ...func(*Config)) *Verifier {
	cfg := Config{Resolver: r, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, e := range edit {
		e(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		panic(err)
	}
	v.rethrow = true
	return v
}

func publishKey(t *testing.T, srv *dnstest.Server, name string, pub crypto.PublicKey) {
	t.Helper()
	switch k := pub.(type) {
	case ed25519.PublicKey:
		srv.AddTXT(name, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(k))
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		srv.AddTXT(name, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der))
	}
}

func testMessage(from, body string) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf(`From: Alice <%s>
To: bob@caliopen.test
Subject: quarterly figures
Date: Thu, 26 Nov 2026 06:00:00 +0000
Message-ID: <%d@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

%s
`, from, time.Now().UnixNano(), body), "\n", "\r\n"))
}

// dkimSign signs raw with go-msgauth's signer, as a real sending MTA does.
func dkimSign(t *testing.T, raw []byte, domain, selector string, key crypto.Signer) []byte {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(raw), &dkim.SignOptions{
		Domain:   domain,
		Selector: selector,
		Signer:   key,
	})
	if err != nil {
		t.Fatalf("dkim.Sign: %v", err)
	}
	return out.Bytes()
}

func verifyOK(t *testing.T, v *Verifier, in Input) Facts {
	t.Helper()
	f, err := v.Verify(t.Context(), in)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return f
}

func TestAuthentication(t *testing.T) {
	env := newAuthEnv(t)
	signed := dkimSign(t, testMessage("alice@example.org", "The figures are attached."), "example.org", "sel", env.key)
	good := Input{Raw: signed, MailFrom: "bounce@example.org", ClientIP: "192.0.2.10", Helo: "mail.example.org"}

	t.Run("aligned DKIM, SPF and DMARC pass (PI vector 3)", func(t *testing.T) {
		f := verifyOK(t, env.v, good)
		if f.FromDomain != "example.org" {
			t.Errorf("FromDomain = %q", f.FromDomain)
		}
		if len(f.DKIM.Signatures) != 1 {
			t.Fatalf("signatures = %+v", f.DKIM.Signatures)
		}
		s := f.DKIM.Signatures[0]
		if s.Domain != "example.org" || s.Selector != "sel" || s.Result != privacyindex.AuthPass || !s.Aligned || s.Error != "" {
			t.Errorf("signature = %+v; want d=example.org s=sel pass aligned", s)
		}
		if f.SPF.Result != privacyindex.AuthPass || !f.SPF.Aligned || f.SPF.Identity != "mailfrom" || f.SPF.Domain != "example.org" {
			t.Errorf("SPF = %+v; want pass aligned for example.org", f.SPF)
		}
		if f.DMARC.Result != privacyindex.AuthPass || f.DMARC.Via != "dkim" || f.DMARC.Policy != "reject" || f.DMARC.Domain != "example.org" {
			t.Errorf("DMARC = %+v; want pass via dkim, p=reject", f.DMARC)
		}
		var m privacyindex.MessageFeatures
		f.Apply(&m)
		if m.DKIM != privacyindex.AuthPass || !m.DKIMAligned || m.SPF != privacyindex.AuthPass || !m.SPFAligned ||
			m.DMARC != privacyindex.AuthPass || m.ARCSealed || m.Encryption != privacyindex.EncNone {
			t.Errorf("features = %+v", m)
		}
		// What ingest adds for vector 3: TLS 1.3 inbound, an unknown sender.
		m.TLSVersion, m.TLSCipher = "TLSv1.3", "TLS_AES_256_GCM_SHA384"
		if r := privacyindex.Message(m); r.Score != 30 || r.Band != "C" {
			t.Errorf("PI = %d %s; want vector 3's 30 C (facts %+v)", r.Score, r.Band, r.Facts)
		}
	})

	t.Run("tampered body fails DKIM; DMARC still passes on aligned SPF", func(t *testing.T) {
		in := good
		in.Raw = bytes.Replace(signed, []byte("The figures"), []byte("New figures"), 1)
		f := verifyOK(t, env.v, in)
		if f.DKIM.Result != privacyindex.AuthFail || f.DKIM.Aligned || f.DKIM.Signatures[0].Error == "" {
			t.Errorf("DKIM = %+v; want fail with a reason", f.DKIM)
		}
		if f.DMARC.Result != privacyindex.AuthPass || f.DMARC.Via != "spf" {
			t.Errorf("DMARC = %+v; want pass via spf", f.DMARC)
		}
	})

	t.Run("tampered body from an unauthorised IP fails DMARC", func(t *testing.T) {
		in := good
		in.Raw = bytes.Replace(signed, []byte("The figures"), []byte("New figures"), 1)
		in.ClientIP = "198.51.100.7"
		f := verifyOK(t, env.v, in)
		if f.SPF.Result != privacyindex.AuthFail || f.SPF.Aligned {
			t.Errorf("SPF = %+v; want fail", f.SPF)
		}
		if f.DMARC.Result != privacyindex.AuthFail {
			t.Errorf("DMARC = %+v; want fail", f.DMARC)
		}
	})

	t.Run("signature of another domain passes unaligned", func(t *testing.T) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		publishKey(t, env.dns, "k1._domainkey.esp.example.net", pub)
		raw := dkimSign(t, testMessage("alice@example.org", "hello"), "esp.example.net", "k1", priv)
		f := verifyOK(t, env.v, Input{Raw: raw, MailFrom: "bounce@esp.example.net", ClientIP: "203.0.113.5", Helo: "esp.example.net"})
		if f.DKIM.Result != privacyindex.AuthPass || f.DKIM.Aligned || f.DKIM.Signatures[0].Aligned {
			t.Errorf("DKIM = %+v; want pass, unaligned", f.DKIM)
		}
		if f.SPF.Result != privacyindex.AuthNone {
			t.Errorf("SPF = %+v; want none (no record)", f.SPF)
		}
		if f.DMARC.Result != privacyindex.AuthFail {
			t.Errorf("DMARC = %+v; want fail", f.DMARC)
		}
	})

	t.Run("subdomain From uses the organisational domain's policy, relaxed", func(t *testing.T) {
		raw := dkimSign(t, testMessage("alice@news.example.org", "hello"), "example.org", "sel", env.key)
		f := verifyOK(t, env.v, Input{Raw: raw, MailFrom: "", ClientIP: "198.51.100.7", Helo: "out.example.net"})
		if !f.DKIM.Aligned {
			t.Errorf("DKIM = %+v; want aligned in relaxed mode", f.DKIM)
		}
		if f.DMARC.Result != privacyindex.AuthPass || f.DMARC.Domain != "example.org" {
			t.Errorf("DMARC = %+v; want pass from example.org's record", f.DMARC)
		}
	})

	t.Run("strict alignment rejects a parent-domain signature", func(t *testing.T) {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		publishKey(t, env.dns, "s._domainkey.strict.example", pub)
		env.dns.AddTXT("strict.example", "v=spf1 ip4:192.0.2.20 -all")
		env.dns.AddTXT("_dmarc.strict.example", "v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=s")
		raw := dkimSign(t, testMessage("alice@mail.strict.example", "hello"), "strict.example", "s", priv)
		f := verifyOK(t, env.v, Input{Raw: raw, MailFrom: "b@strict.example", ClientIP: "192.0.2.20", Helo: "mx.strict.example"})
		if f.DKIM.Result != privacyindex.AuthPass || f.DKIM.Aligned {
			t.Errorf("DKIM = %+v; want pass, not strictly aligned", f.DKIM)
		}
		if f.SPF.Result != privacyindex.AuthPass || f.SPF.Aligned {
			t.Errorf("SPF = %+v; want pass, not strictly aligned", f.SPF)
		}
		if f.DMARC.Result != privacyindex.AuthFail || f.DMARC.Policy != "reject" {
			t.Errorf("DMARC = %+v; want fail under the subdomain policy", f.DMARC)
		}
	})

	t.Run("null sender is checked on HELO", func(t *testing.T) {
		env.dns.AddTXT("mail.example.org", "v=spf1 a -all")
		env.dns.Add(t, "mail.example.org. 300 IN A 192.0.2.10")
		in := good
		in.MailFrom = ""
		f := verifyOK(t, env.v, in)
		if f.SPF.Result != privacyindex.AuthPass || f.SPF.Identity != "helo" || f.SPF.Domain != "mail.example.org" || !f.SPF.Aligned {
			t.Errorf("SPF = %+v; want pass on helo mail.example.org, aligned", f.SPF)
		}
	})

	t.Run("no DMARC record is none, not fail", func(t *testing.T) {
		raw := testMessage("carol@nodmarc.example", "hi")
		f := verifyOK(t, env.v, Input{Raw: raw, MailFrom: "carol@nodmarc.example", ClientIP: "192.0.2.99", Helo: "x"})
		if f.DMARC.Result != privacyindex.AuthNone || f.DKIM.Result != privacyindex.AuthNone || f.SPF.Result != privacyindex.AuthNone {
			t.Errorf("facts = %+v / %+v / %+v; want all none", f.DKIM, f.SPF, f.DMARC)
		}
	})

	t.Run("signatures beyond the cap are not verified", func(t *testing.T) {
		raw := testMessage("alice@example.org", "many")
		for range 7 {
			raw = dkimSign(t, raw, "example.org", "sel", env.key)
		}
		f := verifyOK(t, env.v, Input{Raw: raw})
		if len(f.DKIM.Signatures) != DefaultMaxDKIMSignatures || f.DKIM.Skipped != 2 {
			t.Errorf("verified %d, skipped %d; want %d and 2", len(f.DKIM.Signatures), f.DKIM.Skipped, DefaultMaxDKIMSignatures)
		}
		if f.DKIM.Result != privacyindex.AuthPass {
			t.Errorf("DKIM = %v; want pass", f.DKIM.Result)
		}
	})

	t.Run("absurd l= body length fails without crashing", func(t *testing.T) {
		raw := bytes.Replace(signed, []byte("DKIM-Signature: "), []byte("DKIM-Signature: l=99999999999999999999999999; "), 1)
		f := verifyOK(t, env.v, Input{Raw: raw})
		if f.DKIM.Result != privacyindex.AuthFail && f.DKIM.Result != privacyindex.AuthPermError {
			t.Errorf("DKIM = %+v; want fail", f.DKIM)
		}
		if f.DKIM.Aligned || f.DKIM.Result == privacyindex.AuthPass {
			t.Errorf("a signature with l= must never pass: %+v", f.DKIM)
		}
	})

	t.Run("From with two addresses has no DMARC domain", func(t *testing.T) {
		raw := bytes.Replace(signed, []byte("From: Alice <alice@example.org>"), []byte("From: a@example.org, b@evil.example"), 1)
		f := verifyOK(t, env.v, Input{Raw: raw, MailFrom: "bounce@example.org", ClientIP: "192.0.2.10"})
		if f.FromDomain != "" || f.DMARC.Result != privacyindex.AuthNone || f.DKIM.Aligned || f.SPF.Aligned {
			t.Errorf("facts = %+v; want no alignment without a single From", f)
		}
	})
}

func TestGarbageRecordsArePermErrors(t *testing.T) {
	srv := dnstest.Start(t)
	srv.AddTXT("sel._domainkey.garbage.example", "v=DKIM1; k=rsa; p=!!!not-base64!!!")
	srv.AddTXT("garbage.example", "v=spf1 ip4:999.1.1.1 frobnicate -all")
	srv.AddTXT("_dmarc.garbage.example", "v=DMARC1; p=whenever; adkim=x")
	v := testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: time.Second}))

	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	raw := dkimSign(t, testMessage("alice@garbage.example", "x"), "garbage.example", "sel", key)
	f := verifyOK(t, v, Input{Raw: raw, MailFrom: "alice@garbage.example", ClientIP: "192.0.2.1", Helo: "garbage.example"})
	if f.DKIM.Result != privacyindex.AuthPermError || f.DKIM.Signatures[0].Error == "" {
		t.Errorf("DKIM = %+v; want permerror with a reason", f.DKIM)
	}
	if f.SPF.Result != privacyindex.AuthPermError {
		t.Errorf("SPF = %+v; want permerror", f.SPF)
	}
	if f.DMARC.Result != privacyindex.AuthPermError || f.DMARC.Error == "" {
		t.Errorf("DMARC = %+v; want permerror", f.DMARC)
	}

	// Two SPF records is a permerror too (RFC 7208 §4.5).
	srv.AddTXT("twice.example", "v=spf1 -all")
	srv.AddTXT("twice.example", "v=spf1 +all")
	f = verifyOK(t, v, Input{Raw: testMessage("a@twice.example", "x"), MailFrom: "a@twice.example", ClientIP: "192.0.2.1"})
	if f.SPF.Result != privacyindex.AuthPermError {
		t.Errorf("SPF with two records = %+v; want permerror", f.SPF)
	}
}

func TestSPFLookupLimits(t *testing.T) {
	srv := dnstest.Start(t)
	// A chain of 11 includes: the 11th DNS-querying term exceeds the limit of 10.
	for i := range 11 {
		srv.AddTXT(fmt.Sprintf("l%d.chain.example", i), fmt.Sprintf("v=spf1 include:l%d.chain.example -all", i+1))
	}
	srv.AddTXT("l11.chain.example", "v=spf1 ip4:192.0.2.1 -all")
	srv.AddTXT("chain.example", "v=spf1 include:l0.chain.example -all")
	// Three void lookups (names without records): over the limit of 2.
	srv.AddTXT("void.example", "v=spf1 a:n1.void.example a:n2.void.example a:n3.void.example ip4:192.0.2.1 -all")
	// A redirect to a record that passes, and qualifiers.
	srv.AddTXT("redir.example", "v=spf1 redirect=target.example")
	srv.AddTXT("target.example", "v=spf1 ip6:2001:db8::/32 ~all")
	v := testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: srv.Addr, Timeout: time.Second}))

	cases := []struct {
		sender, ip string
		want       privacyindex.AuthResult
	}{
		{"a@chain.example", "192.0.2.1", privacyindex.AuthPermError},
		{"a@void.example", "192.0.2.1", privacyindex.AuthPermError},
		{"a@redir.example", "2001:db8::25", privacyindex.AuthPass},
		{"a@redir.example", "192.0.2.1", privacyindex.AuthSoftFail},
	}
	for _, c := range cases {
		f := verifyOK(t, v, Input{Raw: testMessage(c.sender, "x"), MailFrom: c.sender, ClientIP: c.ip, Helo: "h.example"})
		if f.SPF.Result != c.want {
			t.Errorf("SPF(%s from %s) = %+v; want %s", c.sender, c.ip, f.SPF, c.want)
		}
	}
}

func TestDNSTimeoutGivesTempErrorInTime(t *testing.T) {
	v := testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: dnstest.Blackhole(t), Timeout: 300 * time.Millisecond}))
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	raw := dkimSign(t, testMessage("alice@example.org", "x"), "example.org", "sel", key)
	start := time.Now()
	f := verifyOK(t, v, Input{Raw: raw, MailFrom: "alice@example.org", ClientIP: "192.0.2.10", Helo: "mail.example.org"})
	elapsed := time.Since(start)
	if f.DKIM.Result != privacyindex.AuthTempError {
		t.Errorf("DKIM = %+v; want temperror", f.DKIM)
	}
	if f.SPF.Result != privacyindex.AuthTempError {
		t.Errorf("SPF = %+v; want temperror", f.SPF)
	}
	if f.DMARC.Result != privacyindex.AuthTempError {
		t.Errorf("DMARC = %+v; want temperror", f.DMARC)
	}
	// DMARC, DKIM and SPF each wait for one lookup at most.
	if elapsed > 5*time.Second {
		t.Errorf("verification took %v with 300ms DNS timeouts", elapsed)
	}
}

func TestOverallTimeoutBoundsVerification(t *testing.T) {
	v := testVerifier(dnstest.NewResolver(t, dnsresolver.Config{Server: dnstest.Blackhole(t), Timeout: 10 * time.Second}), func(c *Config) { c.Timeout = 300 * time.Millisecond })
	start := time.Now()
	f := verifyOK(t, v, Input{Raw: testMessage("alice@example.org", "x"), MailFrom: "alice@example.org", ClientIP: "192.0.2.10"})
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Verify took %v with a 300ms overall timeout", d)
	}
	if f.SPF.Result != privacyindex.AuthTempError {
		t.Errorf("SPF = %+v; want temperror", f.SPF)
	}
}

func TestCancelledContextIsAnError(t *testing.T) {
	v := testVerifier(nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := v.Verify(ctx, Input{Raw: testMessage("a@example.org", "x")}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v; want context.Canceled", err)
	}
}

func TestNoResolverIsTempError(t *testing.T) {
	v := testVerifier(nil)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	raw := dkimSign(t, testMessage("alice@example.org", "x"), "example.org", "sel", key)
	f := verifyOK(t, v, Input{Raw: raw, MailFrom: "alice@example.org", ClientIP: "192.0.2.10"})
	if f.DKIM.Result != privacyindex.AuthTempError || f.SPF.Result != privacyindex.AuthTempError || f.DMARC.Result != privacyindex.AuthTempError {
		t.Errorf("facts = %v %v %v; want temperror everywhere", f.DKIM.Result, f.SPF.Result, f.DMARC.Result)
	}
}
