package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// Conversations and messages, the records every list reads by the dozen,
// use a compact binary encoding instead of JSON: decoding a page is then a
// fraction of the cost (no reflection, no text UUIDs or RFC 3339 times).
// TestCodecCoversEveryField fails when the model gains a field this file
// does not carry. The first byte is the format version.
const (
	conversationFormat = 1
	messageFormat      = 1
)

type encoder struct{ b []byte }

func (e *encoder) byte(v byte)       { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64)  { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)    { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) id(v uuid.UUID)    { e.b = append(e.b, v[:]...) }
func (e *encoder) str(v string)      { e.uvarint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) bytes(v []byte)    { e.uvarint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) time(v time.Time)  { e.varint(v.Unix()); e.uvarint(uint64(v.Nanosecond())) }
func (e *encoder) strs(v []string)   { e.uvarint(uint64(len(v))); forEach(v, e.str) }
func (e *encoder) ids(v []uuid.UUID) { e.uvarint(uint64(len(v))); forEach(v, e.id) }

func (e *encoder) bool(v bool) {
	if v {
		e.byte(1)
	} else {
		e.byte(0)
	}
}

func forEach[T any](v []T, f func(T)) {
	for _, x := range v {
		f(x)
	}
}

func (e *encoder) participants(v []store.Participant) {
	e.uvarint(uint64(len(v)))
	for _, p := range v {
		e.str(p.Role)
		e.str(p.Protocol)
		e.str(p.Address)
		e.str(p.Name)
		e.id(p.ContactID)
	}
}

// decoder reads what encoder wrote; the first error sticks and later reads
// return zero values, so callers check err once at the end.
type decoder struct {
	b   []byte
	err error
}

var errTruncated = errors.New("truncated record")

func (d *decoder) take(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errTruncated
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int {
	v := d.varint()
	if v < math.MinInt || v > math.MaxInt {
		d.err = fmt.Errorf("integer %d out of range", v)
		return 0
	}
	return int(v)
}

func (d *decoder) bool() bool { return d.byte() != 0 }

func (d *decoder) id() uuid.UUID {
	var v uuid.UUID
	copy(v[:], d.take(16))
	return v
}

// str copies: the input is bbolt's mapped memory, valid only in the transaction.
func (d *decoder) str() string { return string(d.take(d.uvarint())) }

func (d *decoder) bytes() []byte {
	b := d.take(d.uvarint())
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// zeroUnix is time.Time{}.Unix(): the zero time must decode as the zero
// time, not as its UTC equivalent with another internal representation.
var zeroUnix = time.Time{}.Unix()

func (d *decoder) time() time.Time {
	sec, nsec := d.varint(), d.uvarint()
	if nsec >= 1e9 {
		d.err = fmt.Errorf("nanoseconds %d out of range", nsec)
	}
	if d.err != nil || (sec == zeroUnix && nsec == 0) {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// count reads a slice length, bounded by what is left so corrupt input
// cannot make us allocate gigabytes.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/minSize) {
		if d.err == nil {
			d.err = errTruncated
		}
		return 0
	}
	return int(n)
}

func (d *decoder) strs() []string {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	v := make([]string, n)
	for i := range v {
		v[i] = d.str()
	}
	return v
}

func (d *decoder) ids() []uuid.UUID {
	n := d.count(16)
	if n == 0 {
		return nil
	}
	v := make([]uuid.UUID, n)
	for i := range v {
		v[i] = d.id()
	}
	return v
}

func (d *decoder) participants() []store.Participant {
	n := d.count(4 + 16)
	if n == 0 {
		return nil
	}
	v := make([]store.Participant, n)
	for i := range v {
		v[i] = store.Participant{Role: d.str(), Protocol: d.str(), Address: d.str(), Name: d.str(), ContactID: d.id()}
	}
	return v
}

func (d *decoder) finish(what string, format byte) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("decode %s (format %d): %w", what, format, d.err)
	}
	return nil
}

func encodeConversation(c store.Conversation) []byte {
	e := encoder{b: make([]byte, 0, 256+len(c.Excerpt)+len(c.Subject))}
	e.byte(conversationFormat)
	e.id(c.ID)
	e.id(c.UserID)
	e.str(c.Key)
	e.ids(c.ContactIDs)
	e.participants(c.Participants)
	e.str(c.Subject)
	e.time(c.CreatedAt)
	e.time(c.LastActivity)
	e.id(c.LastMessageID)
	e.str(c.Excerpt)
	e.varint(int64(c.MessageCount))
	e.varint(int64(c.UnreadCount))
	e.strs(c.Protocols)
	return e.b
}

func decodeConversation(b []byte) (store.Conversation, error) {
	d := decoder{b: b}
	if f := d.byte(); f != conversationFormat {
		return store.Conversation{}, fmt.Errorf("decode conversation: unknown format %d", f)
	}
	c := store.Conversation{
		ID:            d.id(),
		UserID:        d.id(),
		Key:           d.str(),
		ContactIDs:    d.ids(),
		Participants:  d.participants(),
		Subject:       d.str(),
		CreatedAt:     d.time(),
		LastActivity:  d.time(),
		LastMessageID: d.id(),
		Excerpt:       d.str(),
		MessageCount:  d.int(),
		UnreadCount:   d.int(),
		Protocols:     d.strs(),
	}
	return c, d.finish("conversation", conversationFormat)
}

func encodeMessage(m store.Message) []byte {
	e := encoder{b: make([]byte, 0, 512+len(m.TextBody)+len(m.HTMLBody)+len(m.Security)+len(m.PI.Details))}
	e.byte(messageFormat)
	e.id(m.ID)
	e.id(m.UserID)
	e.id(m.ConversationID)
	e.str(m.DedupKey)
	e.str(m.Protocol)
	e.bool(m.Inbound)
	e.time(m.Date)
	e.time(m.ReceivedAt)
	e.str(m.MessageID)
	e.strs(m.InReplyTo)
	e.strs(m.References)
	e.str(m.Subject)
	e.participants(m.Participants)
	e.str(m.Excerpt)
	e.str(m.TextBody)
	e.str(m.HTMLBody)
	e.uvarint(uint64(len(m.Attachments)))
	for _, a := range m.Attachments {
		e.str(a.PartPath)
		e.str(a.Filename)
		e.str(a.ContentType)
		e.varint(a.Size)
	}
	e.bool(m.Flags.Read)
	e.bool(m.Flags.Starred)
	e.strs(m.Flags.Tags)
	e.bytes(m.Security)
	e.varint(int64(m.PI.Version))
	e.varint(int64(m.PI.Score))
	e.str(m.PI.Band)
	e.bool(m.PI.Warning)
	e.bytes(m.PI.Details)
	e.str(m.RawHash)
	e.varint(m.RawSize)
	return e.b
}

func decodeMessage(b []byte) (store.Message, error) {
	d := decoder{b: b}
	if f := d.byte(); f != messageFormat {
		return store.Message{}, fmt.Errorf("decode message: unknown format %d", f)
	}
	m := store.Message{
		ID:             d.id(),
		UserID:         d.id(),
		ConversationID: d.id(),
		DedupKey:       d.str(),
		Protocol:       d.str(),
		Inbound:        d.bool(),
		Date:           d.time(),
		ReceivedAt:     d.time(),
		MessageID:      d.str(),
		InReplyTo:      d.strs(),
		References:     d.strs(),
		Subject:        d.str(),
		Participants:   d.participants(),
		Excerpt:        d.str(),
		TextBody:       d.str(),
		HTMLBody:       d.str(),
	}
	if n := d.count(4); n > 0 {
		m.Attachments = make([]store.Attachment, n)
		for i := range m.Attachments {
			m.Attachments[i] = store.Attachment{PartPath: d.str(), Filename: d.str(), ContentType: d.str(), Size: d.varint()}
		}
	}
	m.Flags = store.Flags{Read: d.bool(), Starred: d.bool(), Tags: d.strs()}
	m.Security = d.bytes()
	m.PI = store.PI{Version: d.int(), Score: d.int(), Band: d.str(), Warning: d.bool(), Details: d.bytes()}
	m.RawHash = d.str()
	m.RawSize = d.varint()
	return m, d.finish("message", messageFormat)
}
