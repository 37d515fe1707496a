package message

import (
	"bytes"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// maxESKPackets bounds the session key packets read before the encrypted
// data: one per recipient (and passphrase).
const maxESKPackets = 1000

// IsEncryptedOpenPGP reports whether data (armored or binary) really is an
// encrypted OpenPGP message (RFC 9580 §10.3): at least one public-key or
// symmetric-key encrypted session key packet (PKESK v3/v6, SKESK v4/v5/v6),
// then an encrypted data packet (SEIPD v1/v2, the AEAD draft packet, or a
// legacy SED), read whole. Marker packets are skipped. A Content-Type, an
// armor header or a file name is only a claim; this is the check.
func IsEncryptedOpenPGP(data []byte) bool {
	bin, err := Dearmor(data)
	if err != nil || len(bin) == 0 {
		return false
	}
	or := packet.NewOpaqueReader(bytes.NewReader(bin))
	esk := 0
	for range maxESKPackets + 2 {
		op, err := or.Next()
		if err != nil {
			return false
		}
		c := op.Contents
		switch op.Tag {
		case 10: // marker packet: ignored by readers (RFC 9580 §5.8)
		case 1: // PKESK
			if len(c) < 2 || c[0] != 3 && c[0] != 6 {
				return false
			}
			esk++
		case 3: // SKESK
			if len(c) < 2 || c[0] != 4 && c[0] != 5 && c[0] != 6 {
				return false
			}
			esk++
		case 9: // legacy SED
			return esk > 0 && len(c) > 0
		case 18: // SEIPD v1 (MDC) or v2 (AEAD)
			return esk > 0 && len(c) > 1 && (c[0] == 1 || c[0] == 2)
		case 20: // AEAD encrypted data (draft, GnuPG's OCB mode)
			return esk > 0 && len(c) > 1 && c[0] == 1
		default:
			return false
		}
		if esk > maxESKPackets {
			return false
		}
	}
	return false
}

// Dearmor returns the binary OpenPGP message in data, armored or not.
func Dearmor(data []byte) ([]byte, error) {
	if i := bytes.Index(data, []byte(ArmorMessage)); i >= 0 {
		blk, err := armor.Decode(bytes.NewReader(data[i:]))
		if err != nil {
			return nil, fmt.Errorf("armor: %w", err)
		}
		b, err := io.ReadAll(io.LimitReader(blk.Body, int64(len(data))))
		if err != nil {
			return nil, fmt.Errorf("armor: %w", err)
		}
		return b, nil
	}
	return data, nil
}
