package verify

import (
	"context"
	"testing"

	"github.com/caliopen/caliopen/privacyindex"
)

func TestSpamVerdicts(t *testing.T) {
	cases := []struct {
		name, headers string
		want          SpamFacts
	}{
		{"spamassassin spam", "X-Spam-Status: Yes, score=7.3 required=5.0 tests=BAYES_99\n autolearn=no version=4.0.0\nX-Spam-Flag: YES\n",
			SpamFacts{Checked: true, Spam: true, Score: 7.3, Threshold: 5, Source: "spamassassin"}},
		{"spamassassin ham", "X-Spam-Status: No, score=-0.1 required=5.0 tests=NONE\n",
			SpamFacts{Checked: true, Score: -0.1, Threshold: 5, Source: "spamassassin"}},
		{"rspamd", "X-Spamd-Result: default: True [12.30 / 15.00];\n R_SPF_FAIL(1.00)[-all]\n",
			SpamFacts{Checked: true, Spam: true, Score: 12.3, Threshold: 15, Source: "rspamd"}},
		{"rspamd short", "X-Spam: Yes\n", SpamFacts{Checked: true, Spam: true, Source: "rspamd"}},
		// Only the topmost verdict is ours; the one below came with the message.
		{"topmost wins", "X-Spam-Status: Yes, score=9 required=5\nX-Spam-Status: No, score=0 required=5\n",
			SpamFacts{Checked: true, Spam: true, Score: 9, Threshold: 5, Source: "spamassassin"}},
		{"none", "X-Mailer: x\n", SpamFacts{}},
	}
	v := testVerifier(nil, func(c *Config) { c.TrustSpamHeaders = true })
	for _, c := range cases {
		raw := []byte(crlf(c.headers + "From: a@example.org\nSubject: x\n\nbody\n"))
		f := verifyOK(t, v, Input{Raw: raw})
		if f.Spam != c.want {
			t.Errorf("%s: spam = %+v; want %+v", c.name, f.Spam, c.want)
		}
	}

	f := verifyOK(t, testVerifier(nil), Input{Raw: []byte(crlf("X-Spam-Flag: NO\nFrom: a@example.org\n\nx\n"))})
	if f.Spam.Checked {
		t.Errorf("untrusted spam header believed: %+v", f.Spam)
	}
}

func TestARCIsReportedNeverTrustedUnvalidated(t *testing.T) {
	raw := []byte(crlf(`ARC-Seal: i=2; a=rsa-sha256; t=1; cv=pass; d=lists.example.net; s=arc; b=AAAA
ARC-Message-Signature: i=2; a=rsa-sha256; d=lists.example.net; s=arc; h=from; bh=AAAA; b=AAAA
ARC-Authentication-Results: i=2; lists.example.net; dkim=pass
ARC-Seal: a=rsa-sha256; t=1; cv=none; d=origin.example; i=1; s=arc; b=AAAA
From: a@example.org
Subject: forwarded

x
`))
	v := testVerifier(nil, func(c *Config) { c.TrustedARCSealers = []string{"Lists.Example.NET."} })
	f := verifyOK(t, v, Input{Raw: raw})
	a := f.ARC
	if !a.Sealed || a.Instances != 2 || a.Sealer != "lists.example.net" || a.ClaimedCV != "pass" || !a.TrustedSealer {
		t.Errorf("ARC = %+v", a)
	}
	if a.Trusted || a.Result != privacyindex.AuthFail || a.Error == "" {
		t.Errorf("ARC = %+v; a chain that does not validate must fail, untrusted", a)
	}
	var m privacyindex.MessageFeatures
	f.Apply(&m)
	if !m.ARCSealed || m.ARCTrusted || m.ARC != privacyindex.AuthFail {
		t.Errorf("features = %+v", m)
	}
}

func TestOrgDomain(t *testing.T) {
	cases := map[string]string{
		"mail.example.org":    "example.org",
		"example.org":         "example.org",
		"a.b.example.co.uk":   "example.co.uk",
		"co.uk":               "co.uk",
		"Mail.Example.ORG.":   "example.org",
		"foo.bar.github.io":   "bar.github.io",
		"mx.example.internal": "example.internal",
	}
	for in, want := range cases {
		if got := orgDomain(in); got != want {
			t.Errorf("orgDomain(%q) = %q; want %q", in, got, want)
		}
	}
	if aligned("a.example.org", "b.example.org", true) || !aligned("a.example.org", "b.example.org", false) || aligned("", "", false) {
		t.Error("alignment modes wrong")
	}
}

func TestPlainMessageDoesNotTouchTheKeyStore(t *testing.T) {
	calls := 0
	v := testVerifier(nil, func(c *Config) {
		c.Keys = KeyLookupFunc(func(context.Context, string) ([]string, error) {
			calls++
			return nil, nil
		})
	})
	f := verifyOK(t, v, Input{Raw: testMessage("alice@example.org", "nothing signed here"), RecipientKeys: []string{"not even a key"}})
	if calls != 0 || len(f.PGP.Problems) != 0 || f.PGP.Signature != privacyindex.SigNone {
		t.Errorf("calls = %d, PGP = %+v; want no lookup, no problems, unsigned", calls, f.PGP)
	}
}
