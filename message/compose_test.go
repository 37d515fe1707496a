package message

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/caliopen/caliopen/privacyindex"
)

func TestComposeReadsBack(t *testing.T) {
	refs := make([]string, 30)
	for i := range refs {
		refs[i] = fmt.Sprintf("r%d@x.example", i)
	}
	raw, id, err := Compose(Draft{
		From: Addr{Name: "Alice Ä", Address: "alice@example.org"}, To: []Addr{{Address: "bob@remote.example"}},
		Subject: "héllo", Date: time.Unix(1700000000, 0), Text: "plain", HTML: "<p>rich</p>",
		InReplyTo: "parent@x.example", References: refs,
	})
	if err != nil {
		t.Fatal(err)
	}
	m := Parse(raw, Options{})
	if m.MessageID != id || !strings.HasSuffix(id, "@example.org") || m.Subject != "héllo" || m.From[0].Name != "Alice Ä" {
		t.Errorf("id %q/%q subject %q from %+v", m.MessageID, id, m.Subject, m.From)
	}
	if m.TextBody != "plain" || m.HTMLBody != "<p>rich</p>" || len(m.Problems) != 0 {
		t.Errorf("text %q html %q problems %q", m.TextBody, m.HTMLBody, m.Problems)
	}
	if len(m.References) != maxComposedReferences || m.References[0] != "r0@x.example" ||
		m.References[len(m.References)-1] != "parent@x.example" || m.InReplyTo[0] != "parent@x.example" {
		t.Errorf("references = %q", m.References)
	}
}

func TestComposeEncrypted(t *testing.T) {
	e, err := openpgp.NewEntity("Bob", "", "bob@remote.example", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := Compose(Draft{
		From: Addr{Address: "alice@example.org"}, To: []Addr{{Address: "bob@remote.example"}},
		Subject: "s", Date: time.Now(), Text: "secret text", Encrypt: true, EncryptTo: []*openpgp.Entity{e}, Signer: e,
	})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("secret text")) {
		t.Fatal("plaintext in the encrypted message")
	}
	m := Parse(raw, Options{})
	c := m.Class
	if c.Encryption != privacyindex.EncMIME || !c.PGPMIME || len(c.Ciphertexts) != 1 || !c.Ciphertexts[0].MIME || !c.Ciphertexts[0].Encrypted {
		t.Fatalf("class = %+v", c)
	}
	md, err := openpgp.ReadMessage(bytes.NewReader(mustDearmor(t, c.Ciphertexts[0].Data)), openpgp.EntityList{e}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(md.UnverifiedBody)
	if err != nil || md.SignatureError != nil || !md.IsSigned {
		t.Fatalf("read %v, signature %v signed %v", err, md.SignatureError, md.IsSigned)
	}
	if inner := Parse(plain, Options{}); inner.TextBody != "secret text" {
		t.Errorf("inner text = %q", inner.TextBody)
	}
}

func mustDearmor(t *testing.T, b []byte) []byte {
	t.Helper()
	bin, err := Dearmor(b)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
