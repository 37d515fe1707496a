package quota_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/quota"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
)

func TestCheck(t *testing.T) {
	if _, err := quota.New(quota.Config{}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Fatalf("New without a store: %v", err)
	}
	ctx := context.Background()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	q, err := quota.New(quota.Config{Store: st, Default: 100})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, own int64) uuid.UUID {
		u := store.User{ID: uuid.Must(uuid.NewV7()), Name: name, Quota: own, CreatedAt: time.Now()}
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		c, err := st.GetOrCreateConversation(ctx, store.Conversation{UserID: u.ID, Key: "k"})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.PutMessage(ctx, store.Message{UserID: u.ID, ConversationID: c.ID, DedupKey: "d", RawSize: 60}); err != nil {
			t.Fatal(err)
		}
		return u.ID
	}
	for _, tc := range []struct {
		name   string
		own    int64
		adding int64
		over   bool
	}{
		{"deflt", 0, 40, false},  // 60+40 = the default: fits
		{"deflt2", 0, 41, true},  // one byte over the default
		{"own", 200, 140, false}, // their own quota wins
		{"unlim", -1, 1 << 40, false},
		{"full", 60, 0, true}, // RCPT-time check: full already
	} {
		err := q.Check(ctx, mk(tc.name, tc.own), tc.adding)
		if got := errors.Is(err, store.ErrOverQuota); got != tc.over || (err != nil && !got) {
			t.Errorf("%s: Check(+%d) = %v, want over=%v", tc.name, tc.adding, err, tc.over)
		}
	}
	if err := q.Check(ctx, uuid.Must(uuid.NewV7()), 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown user: %v, want ErrNotFound", err)
	}
}
