package verify

import (
	"bytes"
	"encoding/base64"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/caliopen/caliopen/message"
	"github.com/caliopen/caliopen/store"
)

// autocryptKeys reads the Autocrypt header (Autocrypt Level 1 §2.1). Per the
// spec the header is ignored when its addr does not match From, when a
// critical attribute is unknown, or when there is more than one; each such
// case is still reported, with Error set, so the caller can see why.
func autocryptKeys(headers []message.Autocrypt, from string, r *pgpRun) []HarvestedKey {
	if len(headers) == 0 {
		return nil
	}
	if len(headers) > 1 {
		return []HarvestedKey{{Key: store.PublicKey{Source: "autocrypt"}, Error: "several Autocrypt headers: all ignored"}}
	}
	a := headers[0]
	hk := HarvestedKey{Key: store.PublicKey{Source: "autocrypt"}, Addr: a.Addr, PreferEncrypt: a.PreferEncrypt}
	switch {
	case a.Critical != "":
		hk.Error = "unknown critical attribute " + a.Critical
		return []HarvestedKey{hk}
	case hk.Addr == "" || a.Keydata == "":
		hk.Error = "addr or keydata missing"
		return []HarvestedKey{hk}
	case from == "" || hk.Addr != from:
		hk.Error = "addr does not match From"
		return []HarvestedKey{hk}
	}
	bin, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(a.Keydata), ""))
	if err != nil {
		hk.Error = "keydata is not base64: " + err.Error()
		return []HarvestedKey{hk}
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(bin))
	if err != nil || len(el) == 0 {
		hk.Error = "keydata is not an OpenPGP key"
		if err != nil {
			hk.Error += ": " + err.Error()
		}
		return []HarvestedKey{hk}
	}
	// Autocrypt carries exactly one key; extra entities are ignored.
	fillKey(&hk, el[0], r.v.now())
	r.add(el[:1])
	return []HarvestedKey{hk}
}

// attachedKeys reads an application/pgp-keys part, armored or binary.
func attachedKeys(data []byte, r *pgpRun) []HarvestedKey {
	var (
		el  openpgp.EntityList
		err error
	)
	if bytes.Contains(data, []byte(message.ArmorPublicKey)) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil || len(el) == 0 {
		msg := "attached key does not parse"
		if err != nil {
			msg += ": " + err.Error()
		}
		return []HarvestedKey{{Key: store.PublicKey{Source: "attachment"}, Error: msg}}
	}
	var out []HarvestedKey
	for _, e := range el[:min(len(el), maxHarvestedKeys)] {
		hk := HarvestedKey{Key: store.PublicKey{Source: "attachment"}}
		fillKey(&hk, e, r.v.now())
		out = append(out, hk)
	}
	r.add(el[:len(out)])
	return out
}

// fillKey sets the fingerprint, algorithm, size, user-ID addresses and public
// armor of e.
func fillKey(hk *HarvestedKey, e *openpgp.Entity, now time.Time) {
	pk := e.PrimaryKey
	hk.Emails = entityEmails(e, now)
	hk.Key.Fingerprint = fingerprint(pk)
	hk.Key.Algorithm = AlgorithmName(pk.PubKeyAlgo)
	hk.Key.Bits = keyBitLength(pk)
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err == nil {
		// Serialize writes the public parts only, whatever was sent.
		if err = e.Serialize(w); err == nil {
			err = w.Close()
		}
	}
	if err != nil {
		hk.Error = "key cannot be re-encoded: " + err.Error()
		return
	}
	hk.Key.Armored = buf.String()
}
