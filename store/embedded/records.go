package embedded

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

// Values are JSON, but for conversations and messages (see codec.go). The
// model hides some fields from JSON (secrets kept out of API answers), so
// users are stored through a record that carries them explicitly.

type userRecord struct {
	store.User
	PasswordHash string `json:"password_hash,omitempty"`
	PrivateKey   string `json:"private_key,omitempty"`
}

func userToRecord(u store.User) userRecord {
	return userRecord{User: u, PasswordHash: u.PasswordHash, PrivateKey: u.Setup.PrivateKey}
}

func (r userRecord) user() store.User {
	u := r.User
	u.PasswordHash = r.PasswordHash
	u.Setup.PrivateKey = r.PrivateKey
	return u
}

func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}

func decode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}

// put encodes v under key.
func put(b *bolt.Bucket, key []byte, v any) error {
	val, err := encode(v)
	if err != nil {
		return err
	}
	return b.Put(key, val)
}

// get decodes the value under key into v; false when there is none.
func get(b *bolt.Bucket, key []byte, v any) (bool, error) {
	val := b.Get(key)
	if val == nil {
		return false, nil
	}
	return true, decode(val, v)
}

// Message records carry the text and HTML bodies, so they are segmented
// (segments.go).

func putMessageRecord(b *bolt.Bucket, m store.Message) error {
	return putSegmented(b, idKey(m.ID), encodeMessage(m))
}

func getMessageRecord(b *bolt.Bucket, key []byte) (store.Message, bool, error) {
	v, err := getSegmented(b, key)
	if v == nil || err != nil {
		return store.Message{}, false, err
	}
	m, err := decodeMessage(v)
	return m, err == nil, err
}
