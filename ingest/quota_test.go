package ingest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/caliopen/caliopen/quota"
	"github.com/caliopen/caliopen/store"
)

// TestQuota: a message that would take a recipient over quota is stored for
// no one and the error wraps store.ErrOverQuota; deleting mail makes room.
func TestQuota(t *testing.T) {
	f := newFixture(t)
	q, err := quota.New(quota.Config{Store: f.st, Default: 1 << 30})
	must(t, err)
	f.with(func(c *Config) { c.Quota = q })
	msg := func(i int) string {
		return fmt.Sprintf("From: carol@example.net\r\nTo: team@example.org\r\nMessage-ID: <q%d@example.net>\r\nSubject: q%d\r\n\r\n%0600d\r\n", i, i, i)
	}
	alice, err := f.st.GetUser(f.ctx, f.alice)
	must(t, err)
	alice.Quota = int64(len(msg(1)) * 3 / 2) // one message fits, two do not
	must(t, f.st.UpdateUser(f.ctx, alice))

	first := f.ingest(msg(1), "team@example.org")
	if len(first.Deliveries) != 2 {
		t.Fatalf("first message: %d deliveries, want 2", len(first.Deliveries))
	}
	_, err = f.in.Ingest(f.ctx, Envelope{Recipients: []string{"team@example.org"}}, []byte(msg(2)))
	if !errors.Is(err, store.ErrOverQuota) {
		t.Fatalf("second message over alice's quota: %v, want ErrOverQuota", err)
	}
	for _, u := range []struct {
		name string
		want int64
	}{{"alice", int64(len(msg(1)))}, {"bob", int64(len(msg(1)))}} {
		id := f.alice
		if u.name == "bob" {
			id = f.bob
		}
		if n, err := f.st.Usage(f.ctx, id); err != nil || n != u.want {
			t.Errorf("%s's usage after the refusal: %d, %v; want %d (nothing stored)", u.name, n, err, u.want)
		}
	}
	// A retry of the message Alice already holds (say it failed for Bob the
	// first time) is not refused for her quota: it adds nothing.
	if res, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"team@example.org"}}, []byte(msg(1))); err != nil || len(res.Deliveries) != 2 {
		t.Fatalf("retry of a message already stored: %+v, %v; want two deliveries, no quota error", res, err)
	}
	// Alice deletes her message: the same delivery now goes through.
	var aliceMsg Delivery
	for _, d := range first.Deliveries {
		if d.UserID == f.alice {
			aliceMsg = d
		}
	}
	must(t, f.st.DeleteMessage(f.ctx, f.alice, aliceMsg.MessageID))
	if res, err := f.in.Ingest(f.ctx, Envelope{Recipients: []string{"team@example.org"}}, []byte(msg(2))); err != nil || len(res.Deliveries) != 2 {
		t.Fatalf("after a delete: %+v, %v; want two deliveries", res, err)
	}
	// Bob has no quota of his own: the default (1 GiB) applies.
	if err := q.Check(f.ctx, f.bob, 1<<30); !errors.Is(err, store.ErrOverQuota) {
		t.Errorf("bob adding 1 GiB over the default: %v, want ErrOverQuota", err)
	}
}
