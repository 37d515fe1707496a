package verify

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestHarvestedKeyEmails: a harvested key says whose it is through its user
// IDs, whoever attached it; ingest and keytrust match these against the
// contact, not the From of the message that carried the key.
func TestHarvestedKeyEmails(t *testing.T) {
	g := newGnuPG(t)
	fpr := g.genKey(t, "Alice <Alice@Example.org>", "ed25519", "")
	g.run(t, nil, "--quick-add-uid", fpr, "Alice (work) <ALICE@work.example>")
	g.run(t, nil, "--quick-add-uid", fpr, "alice@example.org") // same address, bare form
	g.run(t, nil, "--quick-add-uid", fpr, "Alice Old <old@example.org>")
	g.run(t, nil, "--quick-revoke-uid", fpr, "Alice Old <old@example.org>")
	g.run(t, nil, "--quick-add-uid", fpr, "Alice without address")
	malloryFpr := g.genKey(t, "Mallory <mallory@evil.test>", "ed25519", "")
	want := []string{"alice@example.org", "alice@work.example"}
	v := testVerifier(nil)

	t.Run("autocrypt", func(t *testing.T) {
		raw := []byte(crlf("From: Alice <alice@example.org>\nTo: user@caliopen.test\n" +
			autocryptHeader(t, g, "alice@example.org", fpr) + "Subject: hi\n\nhello\n"))
		keys := verifyOK(t, v, Input{Raw: raw}).PGP.Keys
		if len(keys) != 1 || keys[0].Error != "" || keys[0].Key.Fingerprint != fpr || !slices.Equal(keys[0].Emails, want) {
			t.Fatalf("keys = %+v; want %s with emails %q", keys, fpr, want)
		}
		b, err := json.Marshal(keys[0])
		if err != nil || !strings.Contains(string(b), `"emails":["alice@example.org","alice@work.example"]`) {
			t.Errorf("JSON = %s, %v", b, err)
		}
	})

	t.Run("attachments, also inside an encrypted payload", func(t *testing.T) {
		userFpr := g.genKey(t, "User <user@caliopen.test>", "ed25519", "cv25519")
		userSecret := string(g.run(t, nil, "--armor", "--export-secret-keys", userFpr))
		both := string(g.run(t, nil, "--armor", "--export", fpr, malloryFpr))
		entity := crlf(`Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

Here is "my" key.
--b
Content-Type: application/pgp-keys

` + both + `
--b--
`)
		clear := []byte(crlf("From: Alice <alice@example.org>\nTo: user@caliopen.test\nSubject: keys\nMIME-Version: 1.0\n") + entity)
		armored := string(g.run(t, []byte(entity), "--armor", "--encrypt", "-r", userFpr))
		for name, in := range map[string]Input{
			"clear":     {Raw: clear},
			"encrypted": {Raw: pgpMIME("Subject: keys\n", armored), RecipientKeys: []string{userSecret}},
		} {
			keys := verifyOK(t, v, in).PGP.Keys
			got := map[string][]string{}
			for _, k := range keys {
				if k.Error != "" || k.Key.Source != "attachment" {
					t.Errorf("%s: key %+v", name, k)
				}
				got[k.Key.Fingerprint] = k.Emails
			}
			if len(keys) != 2 || !slices.Equal(got[fpr], want) || !slices.Equal(got[malloryFpr], []string{"mallory@evil.test"}) {
				t.Errorf("%s: emails by key = %q; want %s: %q and %s: [mallory@evil.test]", name, got, fpr, want, malloryFpr)
			}
		}
	})
}
