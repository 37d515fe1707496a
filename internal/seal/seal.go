// Package seal encrypts secrets at rest — server-held private keys, TOTP
// secrets, remote account credentials — under the operator's key, so that a
// copy of the store (a backup, a Cassandra snapshot) does not hold them in
// clear. AES-256-GCM; each sealed value is bound to a context string (say
// "user-key:<user ID>:<fingerprint>") so that a value copied onto another
// record does not open there.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the length of an operator key.
const KeySize = 32

// version prefixes every sealed value, so that the format can change.
const version = 1

// ErrOpen: the value was not sealed under any configured key for that
// context, or it was altered.
var ErrOpen = errors.New("seal: cannot open: wrong key, wrong context or altered")

// Config is what a Box is built from.
type Config struct {
	// Key seals new values and opens them. Required, KeySize bytes.
	Key []byte
	// Previous keys still open values sealed before a key rotation.
	Previous [][]byte
}

// Box seals and opens values. Safe for concurrent use.
type Box struct {
	current key
	all     []key
}

type key struct {
	id   [4]byte // first bytes of SHA-256(key): picks the key when opening
	aead cipher.AEAD
}

func newKey(k []byte) (key, error) {
	if len(k) != KeySize {
		return key{}, fmt.Errorf("seal: key is %d bytes, want %d", len(k), KeySize)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return key{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, err
	}
	sum := sha256.Sum256(k)
	var kk key
	copy(kk.id[:], sum[:4])
	kk.aead = aead
	return kk, nil
}

// New builds a Box.
func New(cfg Config) (*Box, error) {
	if cfg.Key == nil {
		return nil, errors.New("seal: no key")
	}
	cur, err := newKey(cfg.Key)
	if err != nil {
		return nil, err
	}
	b := &Box{current: cur, all: []key{cur}}
	for _, p := range cfg.Previous {
		k, err := newKey(p)
		if err != nil {
			return nil, fmt.Errorf("previous %w", err)
		}
		b.all = append(b.all, k)
	}
	return b, nil
}

// Seal encrypts plaintext bound to context.
func (b *Box) Seal(plaintext []byte, context string) ([]byte, error) {
	n := b.current.aead.NonceSize()
	out := make([]byte, 1+4+n, 1+4+n+len(plaintext)+b.current.aead.Overhead())
	out[0] = version
	copy(out[1:5], b.current.id[:])
	if _, err := rand.Read(out[5 : 5+n]); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return b.current.aead.Seal(out, out[5:5+n], plaintext, aad(out[:5], context)), nil
}

// Open decrypts a value sealed for context (ErrOpen otherwise).
func (b *Box) Open(sealed []byte, context string) ([]byte, error) {
	if len(sealed) < 5 || sealed[0] != version {
		return nil, ErrOpen
	}
	for _, k := range b.all {
		if !bytes.Equal(k.id[:], sealed[1:5]) {
			continue
		}
		n := k.aead.NonceSize()
		if len(sealed) < 5+n+k.aead.Overhead() {
			return nil, ErrOpen
		}
		pt, err := k.aead.Open(nil, sealed[5:5+n], sealed[5+n:], aad(sealed[:5], context))
		if err != nil {
			return nil, ErrOpen
		}
		return pt, nil
	}
	return nil, ErrOpen
}

// aad authenticates the header and the context.
func aad(header []byte, context string) []byte {
	return append(append([]byte{}, header...), context...)
}

// LoadKeyFile reads an operator key file: KeySize random bytes, base64. With
// create, a missing file is made (mode 0600, its directory 0700 if new)
// with a fresh key — what a single-machine deployment wants at first start;
// machines that share a store must share one file instead, so they do not
// create it.
func LoadKeyFile(path string, create bool) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		k := make([]byte, KeySize)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("secrets key %s: %w", path, err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) { // created meanwhile by another process
			return LoadKeyFile(path, false)
		}
		if err != nil {
			return nil, fmt.Errorf("secrets key %s: %w", path, err)
		}
		if _, err := f.WriteString(base64.StdEncoding.EncodeToString(k) + "\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("secrets key %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("secrets key %s: %w", path, err)
		}
		return k, f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("secrets key %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets key %s: readable by others (mode %o); chmod 600 it", path, st.Mode().Perm())
	}
	k, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(k) != KeySize {
		return nil, fmt.Errorf("secrets key %s: want %d random bytes in base64", path, KeySize)
	}
	return k, nil
}
