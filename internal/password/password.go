// Package password hashes and verifies account passwords with Argon2id
// (RFC 9106), stored as PHC strings so parameters can change without
// invalidating old hashes.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/crypto/argon2"
)

// Parameters follow RFC 9106's second recommended option (64 MiB, 3 passes),
// scaled to one lane per core a login may use.
const (
	memoryKiB = 64 * 1024
	passes    = 3
	lanes     = 2
	saltLen   = 16
	keyLen    = 32
	// MaxLength bounds the work an attacker can make us do per attempt.
	MaxLength = 1024
)

// ErrMalformed is returned for a stored hash that is not an Argon2id PHC string.
var ErrMalformed = errors.New("password: malformed hash")

var b64 = base64.RawStdEncoding

// Hash returns the PHC string of pw: $argon2id$v=19$m=…,t=…,p=…$salt$key.
func Hash(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("password: empty")
	}
	if len(pw) > MaxLength {
		return "", fmt.Errorf("password: longer than %d bytes", MaxLength)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password: salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, passes, memoryKiB, lanes, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, memoryKiB, passes, lanes, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify reports whether pw matches hash, in constant time over the key.
func Verify(hash, pw string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, ErrMalformed
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, ErrMalformed
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 {
		return false, ErrMalformed
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, ErrMalformed
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, ErrMalformed
	}
	if len(pw) > MaxLength {
		return false, nil
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// Strength scores pw from 0 (trivial) to 4 (strong), zxcvbn-style bands by a
// simple entropy estimate: length × log2(alphabet), with repeated characters
// discounted. It feeds the account Privacy Index, not an access decision.
func Strength(pw string) int {
	var lower, upper, digit, other bool
	seen := map[rune]bool{}
	for _, r := range pw {
		seen[r] = true
		switch {
		case unicode.IsLower(r):
			lower = true
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsDigit(r):
			digit = true
		default:
			other = true
		}
	}
	alphabet := 0
	for _, c := range []struct {
		on   bool
		size int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {other, 33}} {
		if c.on {
			alphabet += c.size
		}
	}
	if alphabet == 0 {
		return 0
	}
	// Bits per character of the alphabet, counted only over distinct
	// characters so "aaaaaaaaaaaa" is not mistaken for a long password.
	bitsPer := 0.0
	for n := alphabet; n > 1; n /= 2 {
		bitsPer++
	}
	bits := bitsPer * float64(min(len(seen), len([]rune(pw))))
	switch {
	case bits < 28:
		return 0
	case bits < 36:
		return 1
	case bits < 60:
		return 2
	case bits < 80:
		return 3
	}
	return 4
}
