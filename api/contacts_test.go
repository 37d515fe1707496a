package api

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/caliopen/caliopen/privacyindex"
)

// newKey makes an Ed25519/Curve25519 OpenPGP key (fast to generate).
func newKey(t *testing.T, email string) (*openpgp.Entity, string) {
	t.Helper()
	e, err := openpgp.NewEntity("Test", "", email, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA,
		// Created before the harness clock starts, as a real key would be.
		Time: func() time.Time { return time.Now().Add(-24 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return e, buf.String()
}

func privateArmor(t *testing.T, e *openpgp.Entity) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestContactsCRUD(t *testing.T) {
	h := newHarness(t)
	c := decode[contactView](t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token, map[string]any{
		"name": " Dave ",
		"channels": []map[string]string{
			{"protocol": "email", "address": "Dave@Remote.Example"},
			{"protocol": "xmpp", "address": "dave@jabber.example"},
			{"protocol": "phone", "address": "+33 6 12 34 56 78"},
			{"protocol": "matrix", "address": "@dave:matrix.example"},
		},
	}), http.StatusCreated)
	if c.Name != "Dave" || len(c.Channels) != 4 || c.Channels[0].Address != "dave@remote.example" || c.Channels[2].Address != "+33612345678" {
		t.Fatalf("created %+v", c)
	}
	got := decode[contactView](t, h.do(http.MethodGet, "/api/v1/contacts/"+c.ID.String(), h.alice.Token, nil), http.StatusOK)
	if got.ID != c.ID || len(got.Channels) != 4 {
		t.Fatalf("get %+v", got)
	}
	list := decode[page[contactView]](t, h.do(http.MethodGet, "/api/v1/contacts", h.alice.Token, nil), http.StatusOK)
	if len(list.Items) != 1 || list.Items[0].ID != c.ID {
		t.Fatalf("list %+v", list)
	}
	p := decode[contactView](t, h.do(http.MethodPatch, "/api/v1/contacts/"+c.ID.String(), h.alice.Token, map[string]any{"name": "David"}), http.StatusOK)
	if p.Name != "David" || len(p.Channels) != 4 {
		t.Fatalf("patched %+v: name changed, channels kept", p)
	}

	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"channels": []map[string]string{{"protocol": "email", "address": "not-an-address"}}}, "channels[0].address"},
		{map[string]any{"channels": []map[string]string{{"protocol": "pigeon", "address": "x"}}}, "channels[0].protocol"},
		{map[string]any{"channels": []map[string]string{{"protocol": "phone", "address": "12"}}}, "channels[0].address"},
		{map[string]any{"channels": []map[string]string{{"protocol": "matrix", "address": "dave:matrix.example"}}}, "channels[0].address"},
		{map[string]any{"channels": []map[string]string{{"protocol": "xmpp", "address": "jabber.example"}}}, "channels[0].address"},
		{map[string]any{"name": ""}, "name"},
		{map[string]any{"name": strings.Repeat("x", 201)}, "name"},
	} {
		wantError(t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token, tc.body), http.StatusBadRequest, "invalid", tc.field)
	}
	// A channel belongs to one contact.
	wantError(t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token, map[string]any{
		"name": "Dave again", "channels": []map[string]string{{"protocol": "email", "address": "dave@remote.example"}},
	}), http.StatusConflict, "channel_taken", "channels")

	if rec := h.do(http.MethodDelete, "/api/v1/contacts/"+c.ID.String(), h.alice.Token, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: %d", rec.Code)
	}
	wantError(t, h.do(http.MethodGet, "/api/v1/contacts/"+c.ID.String(), h.alice.Token, nil), http.StatusNotFound, "not_found", "")
	wantError(t, h.do(http.MethodGet, "/api/v1/contacts/not-a-uuid", h.alice.Token, nil), http.StatusBadRequest, "invalid", "id")
}

func TestContactKeysAndPrivacy(t *testing.T) {
	h := newHarness(t)
	c := decode[contactView](t, h.do(http.MethodPost, "/api/v1/contacts", h.alice.Token, map[string]any{
		"name": "Erin", "channels": []map[string]string{{"protocol": "email", "address": "erin@remote.example"}},
	}), http.StatusCreated)
	base := "/api/v1/contacts/" + c.ID.String()

	before := decode[contactPIView](t, h.do(http.MethodGet, base+"/privacy", h.alice.Token, nil), http.StatusOK)
	if len(before.Channels) != 1 || before.Channels[0].Autocrypt != "disable" {
		t.Fatalf("privacy without key: %+v", before)
	}

	e, pub := newKey(t, "erin@remote.example")
	k := decode[keyView](t, h.do(http.MethodPost, base+"/keys", h.alice.Token, map[string]string{"armored": pub}), http.StatusCreated)
	wantFP := strings.ToUpper(bytesHex(e.PrimaryKey.Fingerprint))
	if k.Fingerprint != wantFP || k.Algorithm != "ed25519" || k.Bits == 0 || k.Verified || k.Source != "import" {
		t.Fatalf("imported %+v, want fingerprint %s ed25519", k, wantFP)
	}
	wantError(t, h.do(http.MethodPost, base+"/keys", h.alice.Token, map[string]string{"armored": pub}), http.StatusConflict, "key_exists", "")
	wantError(t, h.do(http.MethodPost, base+"/keys", h.alice.Token, map[string]string{"armored": privateArmor(t, e)}), http.StatusBadRequest, "invalid", "armored")
	wantError(t, h.do(http.MethodPost, base+"/keys", h.alice.Token, map[string]string{"armored": "hello"}), http.StatusBadRequest, "invalid", "armored")

	keys := decode[page[keyView]](t, h.do(http.MethodGet, base+"/keys", h.alice.Token, nil), http.StatusOK)
	if len(keys.Items) != 1 || !strings.Contains(keys.Items[0].Armored, "BEGIN PGP PUBLIC KEY BLOCK") {
		t.Fatalf("keys %+v", keys)
	}

	withKey := decode[contactPIView](t, h.do(http.MethodGet, base+"/privacy", h.alice.Token, nil), http.StatusOK)
	if withKey.Channels[0].Mode != "email + OpenPGP" || !withKey.Recommendation.Found || withKey.Recommendation.Mode != "email + OpenPGP" {
		t.Fatalf("privacy with key: %+v", withKey.Recommendation)
	}
	v := decode[keyView](t, h.do(http.MethodPost, base+"/keys/"+strings.ToLower(wantFP)+"/verify", h.alice.Token, nil), http.StatusOK)
	if !v.Verified {
		t.Fatal("key not verified")
	}
	verified := decode[contactPIView](t, h.do(http.MethodGet, base+"/privacy", h.alice.Token, nil), http.StatusOK)
	if verified.Channels[0].Score <= withKey.Channels[0].Score || verified.Channels[0].Autocrypt != "encrypt" {
		t.Errorf("verifying the key did not raise the potential: %d → %d (%s)", withKey.Channels[0].Score, verified.Channels[0].Score, verified.Channels[0].Autocrypt)
	}

	wantError(t, h.do(http.MethodPost, base+"/keys/ABCD/verify", h.alice.Token, nil), http.StatusBadRequest, "invalid", "fingerprint")
	wantError(t, h.do(http.MethodDelete, base+"/keys/"+strings.Repeat("A", 40), h.alice.Token, nil), http.StatusNotFound, "not_found", "")
	if rec := h.do(http.MethodDelete, base+"/keys/"+wantFP, h.alice.Token, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("delete key: %d %s", rec.Code, rec.Body)
	}
	keys = decode[page[keyView]](t, h.do(http.MethodGet, base+"/keys", h.alice.Token, nil), http.StatusOK)
	if len(keys.Items) != 0 {
		t.Fatalf("key still there: %+v", keys)
	}
}

func TestMeAccountPI(t *testing.T) {
	h := newHarness(t)
	h.deliver(h.alice, richMessage)
	me := decode[meView](t, h.do(http.MethodGet, "/api/v1/me", h.alice.Token, nil), http.StatusOK)
	if me.Name != h.alice.Name || len(me.Addresses) != 1 || me.Addresses[0] != h.alice.Addr {
		t.Fatalf("me %+v", me)
	}
	if me.Privacy.Version != privacyindex.Version || me.Privacy.Band == "" || len(me.Privacy.Facts) == 0 || len(me.Privacy.Advice) == 0 {
		t.Fatalf("account PI %+v", me.Privacy)
	}
	// No key pair, no second factor: both are advised.
	var actions []string
	for _, a := range me.Privacy.Advice {
		actions = append(actions, a.Action)
	}
	if !strings.Contains(strings.Join(actions, " "), "enable_second_factor") {
		t.Errorf("advice %v lacks the second factor", actions)
	}
	if strings.Contains(fmtJSON(t, me), "PrivateKey") || strings.Contains(fmtJSON(t, me), "password_hash") {
		t.Error("GET /me exposes secrets")
	}
}

// TestObservedPI: the contact and account PIs are computed from the
// traffic ingest stored, with its message PIs.
func TestObservedPI(t *testing.T) {
	h := newHarness(t)
	d := h.deliver(h.alice, richMessage)
	h.clock.Advance(time.Minute)
	h.deliver(h.alice, strings.Replace(richMessage, "rich-1@", "rich-2@", 1))
	m := decode[messageView](t, h.do(http.MethodGet, "/api/v1/messages/"+d.MessageID.String(), h.alice.Token, nil), http.StatusOK)
	if m.PI.Version != privacyindex.Version || m.PI.Band == "" || len(m.PI.Details) == 0 {
		t.Fatalf("message PI %+v: want the stored snapshot with details", m.PI)
	}
	conv := decode[conversationView](t, h.do(http.MethodGet, "/api/v1/conversations/"+d.ConversationID.String(), h.alice.Token, nil), http.StatusOK)
	if conv.Participants[0].ContactID == nil {
		t.Fatalf("no contact for the sender: %+v", conv.Participants)
	}
	carol := *conv.Participants[0].ContactID
	pi := decode[contactPIView](t, h.do(http.MethodGet, "/api/v1/contacts/"+carol.String()+"/privacy", h.alice.Token, nil), http.StatusOK)
	if !pi.Observed || pi.Messages != 2 || pi.Score != m.PI.Score || pi.Band != m.PI.Band {
		t.Fatalf("contact PI observed %v over %d messages, score %d %s; want 2 messages scoring %d %s",
			pi.Observed, pi.Messages, pi.Score, pi.Band, m.PI.Score, m.PI.Band)
	}
	if !conv.PI.Scored || conv.PI.Score != m.PI.Score {
		t.Errorf("conversation PI %+v, want %d", conv.PI, m.PI.Score)
	}
	me := decode[meView](t, h.do(http.MethodGet, "/api/v1/me", h.alice.Token, nil), http.StatusOK)
	if !me.Privacy.HasTraffic || me.Privacy.Traffic != float64(m.PI.Score) {
		t.Errorf("account PI traffic %v (has %v), want %d", me.Privacy.Traffic, me.Privacy.HasTraffic, m.PI.Score)
	}
}

// TestContactNameCache: participant lists follow the API's own contact
// writes at once, despite the name cache.
func TestContactNameCache(t *testing.T) {
	h := newHarness(t)
	d := h.deliver(h.alice, richMessage)
	path := "/api/v1/conversations/" + d.ConversationID.String()
	conv := decode[conversationView](t, h.do(http.MethodGet, path, h.alice.Token, nil), http.StatusOK)
	if conv.Participants[0].ContactID == nil {
		t.Fatalf("no contact: %+v", conv.Participants)
	}
	contact := "/api/v1/contacts/" + conv.Participants[0].ContactID.String()
	decode[contactView](t, h.do(http.MethodPatch, contact, h.alice.Token, map[string]any{"name": "Caroline"}), http.StatusOK)
	conv = decode[conversationView](t, h.do(http.MethodGet, path, h.alice.Token, nil), http.StatusOK)
	if conv.Participants[0].ContactName != "Caroline" {
		t.Fatalf("contact_name %q after rename, want Caroline", conv.Participants[0].ContactName)
	}
	if rec := h.do(http.MethodDelete, contact, h.alice.Token, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("delete contact: %d", rec.Code)
	}
	conv = decode[conversationView](t, h.do(http.MethodGet, path, h.alice.Token, nil), http.StatusOK)
	if conv.Participants[0].ContactID != nil {
		t.Fatalf("deleted contact still resolved: %+v", conv.Participants[0])
	}
}
