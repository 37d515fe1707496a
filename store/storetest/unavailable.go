package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// RunUnavailable checks that a store whose backend is gone (a closed embedded
// store, a Cassandra cluster that cannot be reached) answers every method
// with an error wrapping store.ErrUnavailable, and never panics. open returns
// such a store; the suite does not close it.
func RunUnavailable(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	s := open(t)
	ctx := t.Context()
	id, other := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	now := time.Now()
	conv := store.Conversation{ID: other, UserID: id, Key: "k", CreatedAt: now}
	msg := store.Message{UserID: id, ConversationID: other, DedupKey: "d", ReceivedAt: now}

	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"Ping", func(ctx context.Context) error { return s.Ping(ctx) }},
		{"AddDomain", func(ctx context.Context) error { return s.AddDomain(ctx, store.Domain{Name: "example.org"}) }},
		{"GetDomain", func(ctx context.Context) error { _, err := s.GetDomain(ctx, "example.org"); return err }},
		{"ListDomains", func(ctx context.Context) error { _, err := s.ListDomains(ctx); return err }},
		{"RemoveDomain", func(ctx context.Context) error { return s.RemoveDomain(ctx, "example.org") }},
		{"CreateUser", func(ctx context.Context) error { return s.CreateUser(ctx, store.User{ID: id, Name: "u"}) }},
		{"GetUser", func(ctx context.Context) error { _, err := s.GetUser(ctx, id); return err }},
		{"GetUserByName", func(ctx context.Context) error { _, err := s.GetUserByName(ctx, "u"); return err }},
		{"ListUsers", func(ctx context.Context) error { _, err := s.ListUsers(ctx); return err }},
		{"UpdateUser", func(ctx context.Context) error { return s.UpdateUser(ctx, store.User{ID: id, Name: "u"}) }},
		{"DeleteUser", func(ctx context.Context) error { return s.DeleteUser(ctx, id) }},
		{"AddAddress", func(ctx context.Context) error {
			return s.AddAddress(ctx, store.Address{Address: "a@example.org", UserID: id})
		}},
		{"GetAddress", func(ctx context.Context) error { _, err := s.GetAddress(ctx, "a@example.org"); return err }},
		{"ListAddresses", func(ctx context.Context) error { _, err := s.ListAddresses(ctx, id); return err }},
		{"RemoveAddress", func(ctx context.Context) error { return s.RemoveAddress(ctx, "a@example.org") }},
		{"PutAlias", func(ctx context.Context) error {
			return s.PutAlias(ctx, store.Alias{Address: "@example.org", Targets: []string{"a@example.net"}})
		}},
		{"GetAlias", func(ctx context.Context) error { _, err := s.GetAlias(ctx, "@example.org"); return err }},
		{"ListAliases", func(ctx context.Context) error { _, err := s.ListAliases(ctx, "example.org"); return err }},
		{"RemoveAlias", func(ctx context.Context) error { return s.RemoveAlias(ctx, "@example.org") }},
		{"PutContact", func(ctx context.Context) error {
			return s.PutContact(ctx, store.Contact{ID: other, UserID: id, Channels: []store.Channel{{Protocol: "email", Address: "b@example.net"}}})
		}},
		{"GetContact", func(ctx context.Context) error { _, err := s.GetContact(ctx, id, other); return err }},
		{"ListContacts", func(ctx context.Context) error { _, err := s.ListContacts(ctx, id); return err }},
		{"FindContactByChannel", func(ctx context.Context) error {
			_, err := s.FindContactByChannel(ctx, id, "email", "b@example.net")
			return err
		}},
		{"DeleteContact", func(ctx context.Context) error { return s.DeleteContact(ctx, id, other) }},
		{"GetOrCreateConversation", func(ctx context.Context) error { _, err := s.GetOrCreateConversation(ctx, conv); return err }},
		{"GetConversation", func(ctx context.Context) error { _, err := s.GetConversation(ctx, id, other); return err }},
		{"GetConversationByKey", func(ctx context.Context) error { _, err := s.GetConversationByKey(ctx, id, "k"); return err }},
		{"UpdateConversation", func(ctx context.Context) error { return s.UpdateConversation(ctx, conv) }},
		{"ListConversations", func(ctx context.Context) error {
			_, _, err := s.ListConversations(ctx, id, store.Page{})
			return err
		}},
		{"DeleteConversation", func(ctx context.Context) error { return s.DeleteConversation(ctx, id, other) }},
		{"PutMessage", func(ctx context.Context) error { _, _, err := s.PutMessage(ctx, msg); return err }},
		{"GetMessage", func(ctx context.Context) error { _, err := s.GetMessage(ctx, id, other); return err }},
		{"FindMessageByMessageID", func(ctx context.Context) error {
			_, err := s.FindMessageByMessageID(ctx, id, "x@example.net")
			return err
		}},
		{"ListMessages", func(ctx context.Context) error {
			_, _, err := s.ListMessages(ctx, id, other, store.Page{})
			return err
		}},
		{"SetFlags", func(ctx context.Context) error { return s.SetFlags(ctx, id, other, store.Flags{Read: true}) }},
		{"SetSecurity", func(ctx context.Context) error { return s.SetSecurity(ctx, id, other, nil, store.PI{}) }},
		{"DeleteMessage", func(ctx context.Context) error { return s.DeleteMessage(ctx, id, other) }},
		{"PutBlob", func(ctx context.Context) error { _, err := s.PutBlob(ctx, []byte("blob")); return err }},
		{"GetBlob", func(ctx context.Context) error { _, err := s.GetBlob(ctx, store.BlobHash([]byte("blob"))); return err }},
		{"PutToken", func(ctx context.Context) error {
			return s.PutToken(ctx, store.Token{Hash: "h", UserID: id, CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
		}},
		{"GetToken", func(ctx context.Context) error { _, err := s.GetToken(ctx, "h"); return err }},
		{"DeleteToken", func(ctx context.Context) error { return s.DeleteToken(ctx, "h") }},
		{"DeleteUserTokens", func(ctx context.Context) error { return s.DeleteUserTokens(ctx, id, "h") }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			// A bounded wait: an engine that retries forever fails here.
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			err := safeCall(ctx, c.call)
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s on an unavailable store: %v, want an error wrapping %q", c.name, err, store.ErrUnavailable)
			}
		})
	}
}

// safeCall turns a panic into an error so one bad method does not hide the rest.
func safeCall(ctx context.Context, call func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return call(ctx)
}
