package keytrust

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
	"github.com/caliopen/caliopen/verify"
)

type fixture struct {
	t      *testing.T
	ctx    context.Context
	st     store.Store
	kt     *Verifier
	user   uuid.UUID
	sender store.Contact
}

func newFixture(t *testing.T) *fixture {
	st, err := embedded.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	f := &fixture{t: t, ctx: ctx, st: st, user: uuid.Must(uuid.NewV7())}
	if err := st.CreateUser(ctx, store.User{ID: f.user, Name: "alice-" + f.user.String()[:8]}); err != nil {
		t.Fatal(err)
	}
	f.sender = store.Contact{ID: uuid.Must(uuid.NewV7()), UserID: f.user, Name: "Bob",
		Channels: []store.Channel{{Protocol: "email", Address: "bob@remote.example"}}}
	if err := st.PutContact(ctx, f.sender); err != nil {
		t.Fatal(err)
	}
	f.st = st
	f.build(verify.Config{Timeout: 5 * time.Second})
	return f
}

// build makes the fixture's keytrust Verifier on a verifier made of cfg.
func (f *fixture) build(cfg verify.Config) {
	f.t.Helper()
	v, err := verify.New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	if f.kt, err = New(Config{Verify: v, Store: f.st}); err != nil {
		f.t.Fatal(err)
	}
}

func newKey(t *testing.T) *openpgp.Entity { return newKeyFor(t, "bob@remote.example") }

func newKeyFor(t *testing.T, email string) *openpgp.Entity {
	e, err := openpgp.NewEntity("Someone", "", email, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func armoredPublic(t *testing.T, e *openpgp.Entity) string {
	var buf bytes.Buffer
	w, _ := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.String()
}

// signed builds an RFC 3156 multipart/signed message from Bob signed by e.
func signed(t *testing.T, e *openpgp.Entity, extraHeader string) []byte {
	part := "Content-Type: text/plain; charset=utf-8\r\n\r\nHello Alice\r\n"
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, e, strings.NewReader(part), nil); err != nil {
		t.Fatal(err)
	}
	return []byte("From: Bob <bob@remote.example>\r\nTo: alice@example.org\r\nSubject: signed\r\n" + extraHeader +
		"MIME-Version: 1.0\r\nContent-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\n" + part + "\r\n--b1\r\nContent-Type: application/pgp-signature\r\n\r\n" +
		strings.ReplaceAll(sig.String(), "\n", "\r\n") + "\r\n--b1--\r\n")
}

func (f *fixture) verify(raw []byte) (privacyindex.MessageFeatures, Details) {
	f.t.Helper()
	c, err := f.st.GetContact(f.ctx, f.user, f.sender.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	v, err := f.kt.Verify(f.ctx, ingest.VerifyInput{UserID: f.user, Raw: raw, From: "bob@remote.example", Sender: &c,
		Envelope: ingest.Envelope{MailFrom: "bob@remote.example"}})
	if err != nil {
		f.t.Fatal(err)
	}
	// As ingest does once the message is stored for the first time.
	if v.AfterStore != nil {
		if err := v.AfterStore(f.ctx); err != nil {
			f.t.Fatal(err)
		}
	}
	return v.Features, v.Details.(Details)
}

// verifyOnly verifies without storing: a retry whose message was stored already.
func (f *fixture) verifyOnly(raw []byte) privacyindex.MessageFeatures {
	f.t.Helper()
	c, _ := f.st.GetContact(f.ctx, f.user, f.sender.ID)
	v, err := f.kt.Verify(f.ctx, ingest.VerifyInput{UserID: f.user, Raw: raw, From: "bob@remote.example", Sender: &c})
	if err != nil {
		f.t.Fatal(err)
	}
	return v.Features
}

func (f *fixture) importKey(e *openpgp.Entity, verified bool) {
	c, _ := f.st.GetContact(f.ctx, f.user, f.sender.ID)
	c.Keys = append(c.Keys, store.PublicKey{Fingerprint: fmt.Sprintf("%X", e.PrimaryKey.Fingerprint), Algorithm: "ed25519",
		Armored: armoredPublic(f.t, e), Source: "import", Verified: verified})
	if err := f.st.PutContact(f.ctx, c); err != nil {
		f.t.Fatal(err)
	}
}

func TestTrustOnFirstUseThenConsistent(t *testing.T) {
	f := newFixture(t)
	bob := newKey(t)
	f.importKey(bob, false)
	want := []privacyindex.KeyTrust{privacyindex.KeyFirstSeen, privacyindex.KeyFirstSeen, privacyindex.KeyConsistent, privacyindex.KeyConsistent}
	for i, w := range want {
		feat, det := f.verify(signed(t, bob, ""))
		if feat.Signature != privacyindex.SigValid {
			t.Fatalf("message %d: signature %v (%+v), want valid", i, feat.Signature, det.PGP)
		}
		if feat.Key != w || feat.KeyChanged {
			t.Fatalf("message %d: key trust %v changed=%v, want %v", i, feat.Key, feat.KeyChanged, w)
		}
	}
}

func TestVerifiedKeyAndChange(t *testing.T) {
	f := newFixture(t)
	bob, other := newKey(t), newKey(t)
	f.importKey(bob, true)
	if feat, _ := f.verify(signed(t, bob, "")); feat.Key != privacyindex.KeyVerified || feat.KeyChanged {
		t.Fatalf("verified key: %v changed=%v", feat.Key, feat.KeyChanged)
	}
	// A new key in an Autocrypt header is recorded but never replaces the
	// verified one: it is a change the user must confirm.
	feat, det := f.verify(signed(t, other, autocrypt(other)))
	if !feat.KeyChanged || det.KeyState != "changed" {
		t.Fatalf("different key from a verified contact: changed=%v state=%q", feat.KeyChanged, det.KeyState)
	}
	if r := privacyindex.Message(feat); !r.Warning || r.Score > 24 {
		t.Fatalf("PI of a key change: %d warning=%v", r.Score, r.Warning)
	}
	c, _ := f.st.GetContact(f.ctx, f.user, f.sender.ID)
	if len(c.Keys) != 2 || !c.Keys[0].Verified || c.Keys[1].Verified || c.Keys[1].Source != "autocrypt" {
		t.Fatalf("contact keys after the change: %+v", c.Keys)
	}
}

func TestUnsignedAndUnknownSender(t *testing.T) {
	f := newFixture(t)
	feat, det := f.verify([]byte("From: bob@remote.example\r\nSubject: plain\r\n\r\nhi\r\n"))
	if feat.Key != privacyindex.KeyNone || feat.Signature != privacyindex.SigNone || det.KeyState != "none" {
		t.Fatalf("plain message: key %v sig %v state %q", feat.Key, feat.Signature, det.KeyState)
	}
	// Signed by a key we do not hold: valid but unknown, no key trust.
	feat, _ = f.verify(signed(t, newKey(t), ""))
	if feat.Key != privacyindex.KeyNone || feat.Signature == privacyindex.SigValid {
		t.Fatalf("unknown signer: key %v sig %v", feat.Key, feat.Signature)
	}
}

func autocrypt(e *openpgp.Entity) string {
	var raw bytes.Buffer
	e.Serialize(&raw)
	return "Autocrypt: addr=bob@remote.example; prefer-encrypt=mutual; keydata=" + base64.StdEncoding.EncodeToString(raw.Bytes()) + "\r\n"
}

func TestRetriesCountOnce(t *testing.T) {
	f := newFixture(t)
	bob := newKey(t)
	f.importKey(bob, false)
	msg := signed(t, bob, "")
	f.verify(msg)
	for range 3 { // redeliveries of a stored message record nothing
		if feat := f.verifyOnly(msg); feat.Key != privacyindex.KeyFirstSeen {
			t.Fatalf("retry: key trust %v", feat.Key)
		}
	}
	c, _ := f.st.GetContact(f.ctx, f.user, f.sender.ID)
	if c.Keys[0].SeenCount != 1 {
		t.Fatalf("SeenCount after one message and three retries = %d, want 1", c.Keys[0].SeenCount)
	}
}

func TestThirdPartyKeyIsNotTheSenders(t *testing.T) {
	f := newFixture(t)
	mallory := newKeyFor(t, "mallory@evil.example")
	var raw bytes.Buffer
	w, _ := armor.Encode(&raw, openpgp.PublicKeyType, nil)
	mallory.Serialize(w)
	w.Close()
	attached := "From: Bob <bob@remote.example>\r\nSubject: a key\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nhere\r\n" +
		"--m\r\nContent-Type: application/pgp-keys\r\n\r\n" + strings.ReplaceAll(raw.String(), "\n", "\r\n") + "\r\n--m--\r\n"
	f.verify([]byte(attached))
	if c, _ := f.st.GetContact(f.ctx, f.user, f.sender.ID); len(c.Keys) != 0 {
		t.Fatalf("a key for mallory@ became bob's: %+v", c.Keys)
	}
	// And a message from "bob" signed by it earns no key trust.
	if feat, _ := f.verify(signed(t, mallory, "")); feat.Key != privacyindex.KeyNone || feat.Signature == privacyindex.SigValid {
		t.Fatalf("mallory's signature on bob's mail: key %v signature %v", feat.Key, feat.Signature)
	}
}

func TestUnverifiedKeyChangeWarns(t *testing.T) {
	f := newFixture(t)
	bob, other := newKey(t), newKey(t)
	f.importKey(bob, false)
	f.verify(signed(t, bob, "")) // bob signs with his key: TOFU
	// A message (not signed by bob's key) announces another key for bob.
	feat, det := f.verify([]byte("From: Bob <bob@remote.example>\r\nSubject: new key\r\n" + autocrypt(other) + "\r\nhi\r\n"))
	if !feat.KeyChanged || det.KeyState != "changed" {
		t.Fatalf("new unverified key after a signing key: changed=%v state=%q", feat.KeyChanged, det.KeyState)
	}
	// Signed by the known key, the same announcement is a rollover, not an attack.
	f2 := newFixture(t)
	f2.importKey(bob, false)
	f2.verify(signed(t, bob, ""))
	if feat, _ := f2.verify(signed(t, bob, autocrypt(other))); feat.KeyChanged {
		t.Fatal("a new key announced in a message signed by the known key warned")
	}
	// And signing with the announced key afterwards is no change either.
	if feat, det := f2.verify(signed(t, other, "")); feat.KeyChanged || feat.Key != privacyindex.KeyFirstSeen {
		t.Fatalf("first message signed with the announced key: %v changed=%v (%s)", feat.Key, feat.KeyChanged, det.KeyState)
	}
}

func TestContactKeyCap(t *testing.T) {
	f := newFixture(t)
	for range MaxKeysPerContact + 3 {
		f.verify([]byte("From: Bob <bob@remote.example>\r\nSubject: k\r\n" + autocrypt(newKey(t)) + "\r\nhi\r\n"))
	}
	if c, _ := f.st.GetContact(f.ctx, f.user, f.sender.ID); len(c.Keys) != MaxKeysPerContact {
		t.Fatalf("contact has %d keys, want the cap %d", len(c.Keys), MaxKeysPerContact)
	}
}

// countingDNS answers "no such name" and counts the questions.
type countingDNS struct{ n atomic.Int64 }

func (c *countingDNS) fail(name string) error {
	c.n.Add(1)
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (c *countingDNS) LookupTXT(_ context.Context, n string) ([]string, error) { return nil, c.fail(n) }
func (c *countingDNS) LookupMX(_ context.Context, n string) ([]*net.MX, error) { return nil, c.fail(n) }
func (c *countingDNS) LookupIPAddr(_ context.Context, n string) ([]net.IPAddr, error) {
	return nil, c.fail(n)
}
func (c *countingDNS) LookupAddr(_ context.Context, n string) ([]string, error) {
	return nil, c.fail(n)
}

// A message for several users asks DNS once: only the OpenPGP part depends
// on the user.
func TestDNSOncePerMessage(t *testing.T) {
	f := newFixture(t)
	dns := &countingDNS{}
	f.build(verify.Config{Timeout: 5 * time.Second, Resolver: dns})
	raw := []byte("From: Bob <bob@remote.example>\r\nTo: alice@example.org\r\nSubject: hi\r\n" +
		"DKIM-Signature: v=1; a=rsa-sha256; d=remote.example; s=s1; h=from; bh=AAAA; b=AAAA\r\n\r\nhi\r\n")
	env := ingest.Envelope{MailFrom: "bob@remote.example", ClientAddr: "192.0.2.1", Helo: "mx.remote.example"}
	if _, err := f.kt.Verify(f.ctx, ingest.VerifyInput{UserID: f.user, Raw: raw, From: "bob@remote.example", Envelope: env}); err != nil {
		t.Fatal(err)
	}
	once := dns.n.Load()
	if once == 0 {
		t.Fatal("no DNS question for a DKIM-signed message with SPF and DMARC to check")
	}
	other := uuid.Must(uuid.NewV7())
	if err := f.st.CreateUser(f.ctx, store.User{ID: other, Name: "carol-" + other.String()[:8]}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.kt.Verify(f.ctx, ingest.VerifyInput{UserID: other, Raw: raw, From: "bob@remote.example", Envelope: env}); err != nil {
		t.Fatal(err)
	}
	if got := dns.n.Load(); got != once {
		t.Fatalf("second user's delivery asked DNS %d more times", got-once)
	}
	// Another client sending the same bytes is checked again (SPF depends on it).
	env.ClientAddr = "198.51.100.7"
	if _, err := f.kt.Verify(f.ctx, ingest.VerifyInput{UserID: other, Raw: raw, From: "bob@remote.example", Envelope: env}); err != nil {
		t.Fatal(err)
	}
	if dns.n.Load() == once {
		t.Fatal("same bytes from another client reused the first client's SPF result")
	}
}
