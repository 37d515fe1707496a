package api

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/verify"
)

type keyView struct {
	Fingerprint string    `json:"fingerprint"`
	Algorithm   string    `json:"algorithm"`
	Bits        int       `json:"bits"`
	Source      string    `json:"source"`
	Verified    bool      `json:"verified"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	SeenCount   int       `json:"seen_count"`
	Armored     string    `json:"armored,omitempty"`
}

func viewKey(k store.PublicKey) keyView {
	return keyView{Fingerprint: k.Fingerprint, Algorithm: k.Algorithm, Bits: k.Bits, Source: k.Source,
		Verified: k.Verified, FirstSeen: k.FirstSeen, LastSeen: k.LastSeen, SeenCount: k.SeenCount}
}

// maxArmoredKey bounds an imported key (keys with many signatures reach a
// few tens of KiB; a key with photo IDs beyond this is refused), and
// maxContactKeys the keys one contact holds: each is parsed again whenever
// the contact is encrypted to.
const (
	maxArmoredKey  = 256 << 10
	maxContactKeys = 20
)

// parsePublicKey reads exactly one armored OpenPGP public key (a private key
// is refused: the server must never be handed one by mistake) and describes
// its primary key.
func parsePublicKey(armored string, now time.Time) (store.PublicKey, *openpgp.Entity, error) {
	if len(armored) > maxArmoredKey {
		return store.PublicKey{}, nil, keyTooLarge()
	}
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return store.PublicKey{}, nil, badRequest("armored", "not an ASCII-armored OpenPGP block")
	}
	if block.Type == openpgp.PrivateKeyType {
		return store.PublicKey{}, nil, badRequest("armored", "this is a private key: import the public key only")
	}
	if block.Type != openpgp.PublicKeyType {
		return store.PublicKey{}, nil, badRequest("armored", "not a public key block (%s)", block.Type)
	}
	el, err := openpgp.ReadKeyRing(block.Body)
	if err != nil {
		return store.PublicKey{}, nil, badRequest("armored", "unreadable public key")
	}
	if len(el) != 1 {
		return store.PublicKey{}, nil, badRequest("armored", "expected one key, found %d", len(el))
	}
	e := el[0]
	if e.PrivateKey != nil {
		return store.PublicKey{}, nil, badRequest("armored", "this is a private key: import the public key only")
	}
	if e.Revoked(now) {
		return store.PublicKey{}, nil, badRequest("armored", "this key is revoked")
	}
	pk := e.PrimaryKey
	bits, _ := pk.BitLength()
	// Re-armor what we parsed: no comments or trailing data from the input.
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return store.PublicKey{}, nil, fmt.Errorf("armor: %w", err)
	}
	if err := e.Serialize(w); err != nil {
		return store.PublicKey{}, nil, badRequest("armored", "key cannot be re-serialised: %v", err)
	}
	if err := w.Close(); err != nil {
		return store.PublicKey{}, nil, fmt.Errorf("armor: %w", err)
	}
	if buf.Len() > maxArmoredKey {
		return store.PublicKey{}, nil, keyTooLarge()
	}
	return store.PublicKey{
		Fingerprint: strings.ToUpper(hex.EncodeToString(pk.Fingerprint)),
		Algorithm:   verify.AlgorithmName(pk.PubKeyAlgo),
		Bits:        int(bits),
		Armored:     buf.String(),
		FirstSeen:   now,
		LastSeen:    now,
	}, e, nil
}

func keyTooLarge() *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Field: "armored",
		Message: fmt.Sprintf("key larger than %d bytes", maxArmoredKey)}
}

type importKeyRequest struct {
	Armored string `json:"armored"`
}

func (s *Server) importKey(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	var req importKeyRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Armored) == "" {
		return badRequest("armored", "armored is required")
	}
	ctx := c.Request().Context()
	ct, err := s.st.GetContact(ctx, userID(c), id)
	if err != nil {
		return err
	}
	k, e, err := parsePublicKey(req.Armored, s.now().UTC())
	if err != nil {
		return err
	}
	if _, ok := e.EncryptionKey(s.now()); !ok {
		return badRequest("armored", "this key has no valid encryption subkey")
	}
	if slices.ContainsFunc(ct.Keys, func(x store.PublicKey) bool { return x.Fingerprint == k.Fingerprint }) {
		return &Error{Status: http.StatusConflict, Code: "key_exists", Field: "armored", Message: "this contact already has this key"}
	}
	if len(ct.Keys) >= maxContactKeys {
		return &Error{Status: http.StatusConflict, Code: "too_many_keys", Field: "armored",
			Message: fmt.Sprintf("a contact holds at most %d keys: delete one first", maxContactKeys)}
	}
	k.Source = "import"
	ct.Keys = append(ct.Keys, k)
	ct.UpdatedAt = s.now().UTC()
	if err := s.st.PutContact(ctx, ct); err != nil {
		return fmt.Errorf("put contact: %w", err)
	}
	v := viewKey(k)
	c.Response().Header().Set(echo.HeaderLocation, fmt.Sprintf("%s/contacts/%s/keys/%s", Prefix, ct.ID, k.Fingerprint))
	return c.JSON(http.StatusCreated, v)
}

func (s *Server) listKeys(c echo.Context) error {
	ct, err := s.loadContact(c)
	if err != nil {
		return err
	}
	out := page[keyView]{Items: make([]keyView, 0, len(ct.Keys))}
	for _, k := range ct.Keys {
		v := viewKey(k)
		v.Armored = k.Armored
		out.Items = append(out.Items, v)
	}
	return c.JSON(http.StatusOK, out)
}

// withKey loads the contact and the index of the key named in the path.
func (s *Server) withKey(c echo.Context) (store.Contact, int, error) {
	ct, err := s.loadContact(c)
	if err != nil {
		return ct, 0, err
	}
	fp := strings.ToUpper(strings.ReplaceAll(c.Param("fingerprint"), " ", ""))
	if _, err := hex.DecodeString(fp); err != nil || (len(fp) != 40 && len(fp) != 64) {
		return ct, 0, badRequest("fingerprint", "fingerprint must be 40 or 64 hex digits")
	}
	i := slices.IndexFunc(ct.Keys, func(k store.PublicKey) bool { return k.Fingerprint == fp })
	if i < 0 {
		return ct, 0, errNotFound
	}
	return ct, i, nil
}

// verifyKey records that the user confirmed the fingerprint out of band
// (fact A3 "verified"): the one step that lifts a correspondent to band A.
func (s *Server) verifyKey(c echo.Context) error {
	ct, i, err := s.withKey(c)
	if err != nil {
		return err
	}
	ct.Keys[i].Verified = true
	ct.UpdatedAt = s.now().UTC()
	if err := s.st.PutContact(c.Request().Context(), ct); err != nil {
		return fmt.Errorf("put contact: %w", err)
	}
	return c.JSON(http.StatusOK, viewKey(ct.Keys[i]))
}

func (s *Server) deleteKey(c echo.Context) error {
	ct, i, err := s.withKey(c)
	if err != nil {
		return err
	}
	ct.Keys = slices.Delete(ct.Keys, i, i+1)
	ct.UpdatedAt = s.now().UTC()
	if err := s.st.PutContact(c.Request().Context(), ct); err != nil {
		return fmt.Errorf("put contact: %w", err)
	}
	return noContent(c)
}

// encryptionEntity picks the key to encrypt to among a contact's keys:
// verified first, then the most recently seen; only keys that can encrypt now.
func encryptionEntity(keys []store.PublicKey, now time.Time) (*openpgp.Entity, error) {
	ks := slices.Clone(keys)
	slices.SortStableFunc(ks, func(a, b store.PublicKey) int {
		if a.Verified != b.Verified {
			if a.Verified {
				return -1
			}
			return 1
		}
		return b.LastSeen.Compare(a.LastSeen)
	})
	for _, k := range ks {
		el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(k.Armored))
		if err != nil || len(el) == 0 {
			continue
		}
		if _, ok := el[0].EncryptionKey(now); ok && !el[0].Revoked(now) {
			return el[0], nil
		}
	}
	return nil, errors.New("no usable encryption key")
}
