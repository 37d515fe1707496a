package message

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	gomessage "github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"

	"github.com/caliopen/caliopen/store"
)

// maxComposedReferences keeps References bounded in long threads (RFC 5322
// asks for the first and the most recent ones).
const maxComposedReferences = 20

// Draft is an outbound message. Addresses are checked and normalised by
// the caller; Compose only writes them.
type Draft struct {
	From    Addr
	To, Cc  []Addr
	Subject string
	Date    time.Time
	// Text and HTML are the bodies; with both, the message is
	// multipart/alternative.
	Text, HTML string
	// InReplyTo is the Message-ID (without <>) of the message answered;
	// References are that message's References, to which it is added.
	InReplyTo  string
	References []string

	// Encrypt makes a PGP/MIME message (RFC 3156) encrypted to EncryptTo,
	// signed inside by Signer when not nil.
	Encrypt   bool
	EncryptTo []*openpgp.Entity
	Signer    *openpgp.Entity
}

// Compose writes d as an RFC 5322 message and returns it with its
// Message-ID (without <>).
func Compose(d Draft) (raw []byte, messageID string, err error) {
	var h gomail.Header
	h.SetDate(d.Date)
	h.SetAddressList("From", mailAddrs([]Addr{d.From}))
	if len(d.To) > 0 {
		h.SetAddressList("To", mailAddrs(d.To))
	}
	if len(d.Cc) > 0 {
		h.SetAddressList("Cc", mailAddrs(d.Cc))
	}
	h.SetSubject(d.Subject)
	if err := h.GenerateMessageIDWithHostname(store.AddressDomain(d.From.Address)); err != nil {
		return nil, "", fmt.Errorf("compose: message id: %w", err)
	}
	if d.InReplyTo != "" {
		h.SetMsgIDList("In-Reply-To", []string{d.InReplyTo})
		refs := append(slices.Clone(d.References), d.InReplyTo)
		if len(refs) > maxComposedReferences {
			refs = append(refs[:1], refs[len(refs)-maxComposedReferences+1:]...)
		}
		h.SetMsgIDList("References", refs)
	}
	h.Set("MIME-Version", "1.0")
	messageID, _ = h.MessageID()

	var b bytes.Buffer
	if d.Encrypt {
		err = writeEncrypted(&b, h, d.Text, d.HTML, d.EncryptTo, d.Signer)
	} else {
		err = writeBody(&b, h, d.Text, d.HTML)
	}
	if err != nil {
		return nil, "", fmt.Errorf("compose: %w", err)
	}
	return b.Bytes(), messageID, nil
}

func mailAddrs(as []Addr) []*gomail.Address {
	out := make([]*gomail.Address, len(as))
	for i, a := range as {
		out[i] = &gomail.Address{Name: a.Name, Address: a.Address}
	}
	return out
}

// writeBody writes a header and a text body, with an HTML alternative when
// there is one.
func writeBody(w io.Writer, h gomail.Header, text, html string) error {
	if html == "" {
		h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		bw, err := gomail.CreateSingleInlineWriter(w, h)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(bw, text); err != nil {
			return err
		}
		return bw.Close()
	}
	iw, err := gomail.CreateInlineWriter(w, h)
	if err != nil {
		return err
	}
	for _, p := range []struct{ typ, body string }{{"text/plain", text}, {"text/html", html}} {
		var ph gomail.InlineHeader
		ph.SetContentType(p.typ, map[string]string{"charset": "utf-8"})
		pw, err := iw.CreatePart(ph)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(pw, p.body); err != nil {
			return err
		}
		if err := pw.Close(); err != nil {
			return err
		}
	}
	return iw.Close()
}

// writeEncrypted writes a PGP/MIME message (RFC 3156): the body entity is
// encrypted to keys and carried in multipart/encrypted.
func writeEncrypted(w io.Writer, h gomail.Header, text, html string, keys []*openpgp.Entity, signer *openpgp.Entity) error {
	var inner bytes.Buffer
	if err := writeBody(&inner, gomail.Header{}, text, html); err != nil {
		return err
	}
	var armored bytes.Buffer
	aw, err := armor.Encode(&armored, "PGP MESSAGE", nil)
	if err != nil {
		return err
	}
	pw, err := openpgp.Encrypt(aw, keys, signer, &openpgp.FileHints{IsBinary: true}, nil)
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if _, err := pw.Write(inner.Bytes()); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("armor: %w", err)
	}
	armored.WriteString("\r\n")

	h.SetContentType("multipart/encrypted", map[string]string{"protocol": "application/pgp-encrypted"})
	mw, err := gomessage.CreateWriter(w, h.Header)
	if err != nil {
		return err
	}
	var ctl gomessage.Header
	ctl.SetContentType("application/pgp-encrypted", nil)
	ctl.Set("Content-Description", "PGP/MIME version identification")
	var data gomessage.Header
	data.SetContentType("application/octet-stream", map[string]string{"name": "encrypted.asc"})
	data.Set("Content-Description", "OpenPGP encrypted message")
	data.SetContentDisposition("inline", map[string]string{"filename": "encrypted.asc"})
	for _, p := range []struct {
		h    gomessage.Header
		body []byte
	}{{ctl, []byte("Version: 1\r\n")}, {data, armored.Bytes()}} {
		part, err := mw.CreatePart(p.h)
		if err != nil {
			return err
		}
		if _, err := part.Write(p.body); err != nil {
			return err
		}
		if err := part.Close(); err != nil {
			return err
		}
	}
	return mw.Close()
}
