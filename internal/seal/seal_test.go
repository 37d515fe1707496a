package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func mustKey(t *testing.T, dir, name string) []byte {
	t.Helper()
	k, err := LoadKeyFile(filepath.Join(dir, name), true)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenBoundToContextAndKey(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := mustKey(t, dir, "a"), mustKey(t, dir, "b")
	if bytes.Equal(k1, k2) {
		t.Fatal("two generated keys are equal")
	}
	b1, err := New(Config{Key: k1})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")
	s, err := b1.Seal(secret, "user-key:u1")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s, secret) {
		t.Fatal("sealed value holds the plaintext")
	}
	if got, err := b1.Open(s, "user-key:u1"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := b1.Open(s, "user-key:u2"); !errors.Is(err, ErrOpen) {
		t.Fatalf("other context opened: %v", err)
	}
	tampered := append([]byte{}, s...)
	tampered[len(tampered)-1] ^= 1
	if _, err := b1.Open(tampered, "user-key:u1"); !errors.Is(err, ErrOpen) {
		t.Fatalf("tampered value opened: %v", err)
	}
	b2, _ := New(Config{Key: k2})
	if _, err := b2.Open(s, "user-key:u1"); !errors.Is(err, ErrOpen) {
		t.Fatalf("other key opened: %v", err)
	}
	// After a rotation the old key still opens old values; new ones use the new key.
	rot, err := New(Config{Key: k2, Previous: [][]byte{k1}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rot.Open(s, "user-key:u1"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("rotated open: %q %v", got, err)
	}
	s2, _ := rot.Seal(secret, "c")
	if _, err := b1.Open(s2, "c"); !errors.Is(err, ErrOpen) {
		t.Fatal("a value sealed after rotation opens with the old key")
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "secret.key")
	if _, err := LoadKeyFile(p, false); err == nil {
		t.Fatal("missing file without create: no error")
	}
	k, err := LoadKeyFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
	again, err := LoadKeyFile(p, true)
	if err != nil || !bytes.Equal(k, again) {
		t.Fatalf("reload gave another key: %v", err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(p, false); err == nil {
		t.Fatal("world-readable key file accepted")
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(bad, false); err == nil {
		t.Fatal("malformed key file accepted")
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a key: no error")
	}
}
