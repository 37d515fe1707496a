package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// BlobChunkSize is the most any engine keeps in one row or value of a blob.
const BlobChunkSize = 512 << 10

// BlobHash is the content address of data: hex SHA-256.
func BlobHash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// NormalizeDomain lowercases name, drops a trailing dot and checks it is a
// plausible DNS name (LDH labels, at least two labels, ≤ 253 octets).
func NormalizeDomain(name string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if d == "" || len(d) > 253 {
		return "", fmt.Errorf("%w: domain %q: empty or longer than 253 characters", ErrInvalid, name)
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("%w: domain %q: needs at least two labels", ErrInvalid, name)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("%w: domain %q: bad label %q", ErrInvalid, name, l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("%w: domain %q: character %q not allowed", ErrInvalid, name, c)
			}
		}
	}
	return d, nil
}

// NormalizeAddress lowercases an email address and checks its shape. A
// leading "@" (catch-all "@domain") is accepted when catchAll is true.
func NormalizeAddress(addr string, catchAll bool) (string, error) {
	a := strings.ToLower(strings.TrimSpace(addr))
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return "", fmt.Errorf("%w: address %q: no @", ErrInvalid, addr)
	}
	local, domain := a[:at], a[at+1:]
	if local == "" && !catchAll {
		return "", fmt.Errorf("%w: address %q: empty local part", ErrInvalid, addr)
	}
	if len(local) > 64 {
		return "", fmt.Errorf("%w: address %q: local part longer than 64", ErrInvalid, addr)
	}
	for _, c := range local {
		if c <= ' ' || c == '@' || c == '<' || c == '>' || c == '"' || c == ',' || c == ';' || c == 0x7f {
			return "", fmt.Errorf("%w: address %q: character %q not allowed", ErrInvalid, addr, c)
		}
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	return local + "@" + d, nil
}

// AddressDomain returns the part after the last "@".
func AddressDomain(addr string) string {
	return addr[strings.LastIndexByte(addr, '@')+1:]
}

// ClampLimit applies DefaultLimit and MaxLimit to p.Limit.
func (p Page) ClampLimit() int {
	switch {
	case p.Limit <= 0:
		return DefaultLimit
	case p.Limit > MaxLimit:
		return MaxLimit
	}
	return p.Limit
}
