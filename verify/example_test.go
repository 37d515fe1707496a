package verify_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/verify"
	"github.com/caliopen/caliopen/verify/dnsresolver"
)

// How ingest wires the verifier: one Verifier for the process, one Verify
// per message, its facts applied to the Privacy Index features.
func ExampleVerifier() {
	dns, err := dnsresolver.New(dnsresolver.Config{
		Server:    "127.0.0.1:53",
		Timeout:   3 * time.Second,
		CacheSize: dnsresolver.DefaultCacheSize,
	})
	if err != nil {
		return // no server configured
	}
	v, err := verify.New(verify.Config{
		Resolver:          dns,
		Logger:            slog.Default(),
		TrustSpamHeaders:  true, // our own rspamd/SpamAssassin runs before the milter
		TrustedARCSealers: []string{"lists.example.net"},
		Keys: verify.KeyLookupFunc(func(ctx context.Context, addr string) ([]string, error) {
			return nil, nil // the contact's armored keys from the store
		}),
	})
	if err != nil {
		return // a limit in the configuration is wrong
	}
	raw := []byte("From: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
	facts, err := v.Verify(context.Background(), verify.Input{
		Raw:      raw,
		MailFrom: "alice@example.org",
		ClientIP: "192.0.2.10",
		Helo:     "mail.example.org",
		// RecipientKeys: the user's armored private key when held server-side.
	})
	if err != nil {
		return // cancelled: answer 4xx, nothing stored
	}
	var m privacyindex.MessageFeatures
	facts.Apply(&m)
	_ = privacyindex.Message(m)
}
