package lookupd_test

import (
	"context"
	"testing"

	"github.com/caliopen/caliopen/lookupd"
	"github.com/caliopen/caliopen/quota"
	"github.com/caliopen/caliopen/store"
)

// TestQuotaMap: a full mailbox, directly or through an alias, is found with
// the 452 4.2.2 action; a mailbox with room, a domain key and an unknown
// address are not found; without Config.Quota nothing is.
func TestQuotaMap(t *testing.T) {
	ctx := context.Background()
	st := newTestStore(t)
	populate(t, st)
	alice, err := st.GetUserByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	conv, err := st.GetOrCreateConversation(ctx, store.Conversation{UserID: alice.ID, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.PutMessage(ctx, store.Message{UserID: alice.ID, ConversationID: conv.ID, DedupKey: "d", RawSize: 1000}); err != nil {
		t.Fatal(err)
	}
	alice.Quota = 1000 // exactly full
	if err := st.UpdateUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	q, err := quota.New(quota.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, start(t, st, lookupd.Config{Quota: q}).sockAddr)
	for key, want := range map[string]string{
		"alice@example.org":   "OK " + lookupd.QuotaAction,
		"Alice+x@Example.org": "OK " + lookupd.QuotaAction, // extension, case
		"team@example.org":    "OK " + lookupd.QuotaAction, // an alias reaching alice
		"bob@example.org":     "NOTFOUND ",
		"example.org":         "NOTFOUND ",
		"nobody@other.test":   "NOTFOUND ",
	} {
		if got := c.query(lookupd.MapQuota, key); got != want {
			t.Errorf("quota %s = %q, want %q", key, got, want)
		}
	}
	off := dial(t, start(t, st, lookupd.Config{}).sockAddr)
	if got := off.query(lookupd.MapQuota, "alice@example.org"); got != "NOTFOUND " {
		t.Errorf("quota map without a checker: %q, want NOTFOUND", got)
	}
}
