package message

import "testing"

// A remote sender's display name and subject cannot carry bidirectional
// overrides or C1 controls (which would let "\u202egro.lapyap@ecivres" read
// as another name): they are dropped, as usertext refuses them from users.
func TestNamesAndSubjectsDropBidiOverrides(t *testing.T) {
	raw := []byte("From: \"\u202egro.lapyap@ecivres\u202c\" <x@evil.example>\r\n" +
		"Subject: pay\u2066now\u2069\u0085 please\r\n\r\nbody\r\n")
	m := Parse(raw, Options{})
	if len(m.From) != 1 || m.From[0].Name != "gro.lapyap@ecivres" {
		t.Errorf("From = %+v, want the name without U+202E/U+202C", m.From)
	}
	if m.Subject != "paynow please" {
		t.Errorf("Subject = %q, want %q", m.Subject, "paynow please")
	}
}
