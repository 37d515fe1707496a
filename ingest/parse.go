package ingest

import (
	"time"

	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

// Addr is one address of a header field, decoded.
type Addr = message.Addr

// Parsed is what ingest understood of a message: the one parse (Msg) and
// the facts ingest keeps from it. Every string is valid UTF-8.
type Parsed struct {
	// Msg is the parsed message that verify and keytrust read too (read
	// only); nil only after a parser failure.
	Msg *message.Message

	From, Sender, ReplyTo, To, Cc, Bcc []Addr
	Subject                            string
	Date                               time.Time // zero when absent or unreadable
	MessageID                          string
	InReplyTo, References              []string
	TextBody, HTMLBody, Excerpt        string
	Attachments                        []store.Attachment

	Structure Structure
	// Problems lists what could not be parsed (the raw bytes are kept whole).
	Problems []string
}

// Structure is what the message's shape says about its protection and route,
// as seen without any key or DNS lookup.
type Structure struct {
	ContentType string `json:"content_type,omitempty"` // top-level media type

	PGPMIME        bool   `json:"pgp_mime,omitempty"`         // multipart/encrypted, application/pgp-encrypted
	PGPMIMEPath    string `json:"pgp_mime_path,omitempty"`    // part holding the ciphertext
	PGPInline      bool   `json:"pgp_inline,omitempty"`       // an armored PGP MESSAGE in a text part
	PGPAttachment  bool   `json:"pgp_attachment,omitempty"`   // an encrypted .pgp/.gpg attachment
	PGPSigned      bool   `json:"pgp_signed,omitempty"`       // multipart/signed, application/pgp-signature
	PGPSigPath     string `json:"pgp_sig_path,omitempty"`     // part holding the detached signature
	PGPClearSigned bool   `json:"pgp_clear_signed,omitempty"` // BEGIN PGP SIGNED MESSAGE in a text part
	SMIMEEncrypted bool   `json:"smime_encrypted,omitempty"`
	SMIMESigned    bool   `json:"smime_signed,omitempty"`
	// ClearParts: parts readable by providers beside encrypted ones.
	ClearParts bool `json:"clear_parts,omitempty"`
	// Encryption is the class of end-to-end encryption the message's data
	// shows (fact C1): a label alone is not encryption.
	Encryption privacyindex.Encryption `json:"encryption"`
	// ProtectedHeaders: protected-headers="v1" or a hidden Subject on an encrypted message.
	ProtectedHeaders bool `json:"protected_headers,omitempty"`

	Autocrypt              bool   `json:"autocrypt,omitempty"`
	AutocryptAddr          string `json:"autocrypt_addr,omitempty"`
	AutocryptPreferEncrypt string `json:"autocrypt_prefer_encrypt,omitempty"`
	AutocryptMatchesFrom   bool   `json:"autocrypt_matches_from,omitempty"`

	ListID       string            `json:"list_id,omitempty"`
	ARCSealed    bool              `json:"arc_sealed,omitempty"`
	DKIMSigned   bool              `json:"dkim_signed,omitempty"` // a DKIM-Signature is present: not a pass
	ReceivedHops int               `json:"received_hops"`         // Received: fields before ours
	Hops         privacyindex.Hops `json:"hops"`
}

// Parse reads raw leniently (message.Parse) and keeps what ingest stores.
// It never fails. ownReceived is the number of topmost Received fields that
// our own MTA added (0 for the milter).
func Parse(raw []byte, ownReceived int) *Parsed {
	m := message.Parse(raw, message.Options{})
	p := &Parsed{
		Msg:  m,
		From: m.From, Sender: m.Sender, ReplyTo: m.ReplyTo, To: m.To, Cc: m.Cc, Bcc: m.Bcc,
		Subject: m.Subject, Date: m.Date, MessageID: m.MessageID, InReplyTo: m.InReplyTo, References: m.References,
		TextBody: m.TextBody, HTMLBody: m.HTMLBody, Excerpt: m.Excerpt,
		Problems: m.Problems,
	}
	for _, a := range m.Attachments {
		p.Attachments = append(p.Attachments, store.Attachment{
			PartPath: a.PartPath, Filename: a.Filename, ContentType: a.ContentType, Size: a.Size,
		})
	}
	p.Structure = structure(m, ownReceived)
	return p
}

// normAddr lowercases and normalises an email address.
func normAddr(addr string) (string, bool) { return message.NormAddr(addr) }

// text is s as valid UTF-8, at most n bytes.
func text(s string, n int) string { return message.Text(s, n) }
