package keytrust

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
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
	f.kt = &Verifier{Base: &verify.Verifier{Timeout: 5 * time.Second}, Store: st}
	return f
}

func newKey(t *testing.T) *openpgp.Entity {
	e, err := openpgp.NewEntity("Bob", "", "bob@remote.example", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
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
	return v.Features, v.Details.(Details)
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
	var raw bytes.Buffer
	other.Serialize(&raw)
	ac := "Autocrypt: addr=bob@remote.example; prefer-encrypt=mutual; keydata=" + base64.StdEncoding.EncodeToString(raw.Bytes()) + "\r\n"
	feat, det := f.verify(signed(t, other, ac))
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
