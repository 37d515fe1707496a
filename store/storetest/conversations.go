package storetest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

func testConversations(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	created := base().Add(-time.Hour)
	contact := newV7()
	in := store.Conversation{
		UserID:       u.ID,
		Key:          "k-" + randHex(8),
		ContactIDs:   []uuid.UUID{contact},
		Participants: []store.Participant{{Role: "from", Protocol: "email", Address: "bob@example.net", ContactID: contact}},
		Subject:      "first",
		CreatedAt:    created,
		// Summary fields are the store's: a caller cannot set them.
		MessageCount: 42,
		UnreadCount:  7,
	}
	c, err := s.GetOrCreateConversation(ctx, in)
	mustNil(t, err, "GetOrCreateConversation")
	if c.ID == uuid.Nil || c.ID.Version() != 7 {
		t.Errorf("new conversation ID = %s, want a UUIDv7", c.ID)
	}
	if c.UserID != u.ID || c.Key != in.Key || c.Subject != "first" || !c.CreatedAt.Equal(created) ||
		!c.LastActivity.Equal(created) || c.MessageCount != 0 || c.UnreadCount != 0 ||
		!slices.Equal(c.ContactIDs, in.ContactIDs) || len(c.Participants) != 1 || c.Participants[0] != in.Participants[0] {
		t.Errorf("GetOrCreateConversation = %+v\nfrom %+v", c, in)
	}

	// The same key again: the stored conversation, not the new proposal.
	again := in
	again.Subject = "second"
	again.ID = newV7()
	c2, err := s.GetOrCreateConversation(ctx, again)
	mustNil(t, err, "GetOrCreateConversation existing")
	if c2.ID != c.ID || c2.Subject != "first" {
		t.Errorf("GetOrCreateConversation existing = %s %q, want %s %q", c2.ID, c2.Subject, c.ID, "first")
	}
	got, err := s.GetConversation(ctx, u.ID, c.ID)
	mustNil(t, err, "GetConversation")
	if got.ID != c.ID || got.Key != in.Key || got.Subject != "first" {
		t.Errorf("GetConversation = %+v", got)
	}
	got, err = s.GetConversationByKey(ctx, u.ID, in.Key)
	mustNil(t, err, "GetConversationByKey")
	if got.ID != c.ID {
		t.Errorf("GetConversationByKey = %s, want %s", got.ID, c.ID)
	}

	// Explicit ID is kept.
	wantID := newV7()
	c3, err := s.GetOrCreateConversation(ctx, store.Conversation{ID: wantID, UserID: u.ID, Key: "k-" + randHex(8), CreatedAt: created})
	mustNil(t, err, "GetOrCreateConversation with ID")
	if c3.ID != wantID {
		t.Errorf("GetOrCreateConversation with ID = %s, want %s", c3.ID, wantID)
	}

	// Update: Key, ContactIDs, Participants, Subject; summary untouched.
	m := putMessage(t, s, newMessage(u.ID, c.ID, created.Add(time.Minute)))
	upd := got
	upd.Key = "k-" + randHex(8)
	upd.Subject = "renamed"
	upd.ContactIDs = []uuid.UUID{contact, newV7()}
	upd.Participants = nil
	upd.MessageCount = 99
	upd.UnreadCount = 99
	mustNil(t, s.UpdateConversation(ctx, upd), "UpdateConversation")
	got, err = s.GetConversation(ctx, u.ID, c.ID)
	mustNil(t, err, "GetConversation after update")
	if got.Key != upd.Key || got.Subject != "renamed" || !slices.Equal(got.ContactIDs, upd.ContactIDs) ||
		len(got.Participants) != 0 || got.MessageCount != 1 || got.UnreadCount != 1 || got.LastMessageID != m.ID {
		t.Errorf("GetConversation after update = %+v", got)
	}
	_, err = s.GetConversationByKey(ctx, u.ID, in.Key)
	wantErr(t, err, store.ErrNotFound, "GetConversationByKey old key")
	if got, err := s.GetConversationByKey(ctx, u.ID, upd.Key); err != nil || got.ID != c.ID {
		t.Errorf("GetConversationByKey new key = %v, %v", got.ID, err)
	}
	// The old key is free again.
	c4, err := s.GetOrCreateConversation(ctx, store.Conversation{UserID: u.ID, Key: in.Key, CreatedAt: created})
	mustNil(t, err, "GetOrCreateConversation freed key")
	if c4.ID == c.ID {
		t.Errorf("freed key still maps to %s", c.ID)
	}

	clash := upd
	clash.Key = c3.Key
	wantErr(t, s.UpdateConversation(ctx, clash), store.ErrExists, "UpdateConversation to a taken key")
	ghost := upd
	ghost.ID = newV7()
	wantErr(t, s.UpdateConversation(ctx, ghost), store.ErrNotFound, "UpdateConversation unknown")
	_, err = s.GetConversation(ctx, u.ID, newV7())
	wantErr(t, err, store.ErrNotFound, "GetConversation unknown")
	_, err = s.GetConversationByKey(ctx, u.ID, "k-"+randHex(8))
	wantErr(t, err, store.ErrNotFound, "GetConversationByKey unknown")
	_, err = s.GetOrCreateConversation(ctx, store.Conversation{UserID: u.ID})
	wantErr(t, err, store.ErrInvalid, "GetOrCreateConversation without a key")
	wantErr(t, s.DeleteConversation(ctx, u.ID, newV7()), store.ErrNotFound, "DeleteConversation unknown")
}

// listAll pages through all the user's conversations with limit.
func listAll(t *testing.T, s store.Store, userID uuid.UUID, limit int) []store.Conversation {
	t.Helper()
	return listFrom(t, s, userID, limit, "")
}

// listFrom pages from cursor to the end, checking the page invariants.
func listFrom(t *testing.T, s store.Store, userID uuid.UUID, limit int, cursor string) []store.Conversation {
	t.Helper()
	var all []store.Conversation
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatal("ListConversations: the cursor never ends")
		}
		page, next, err := s.ListConversations(t.Context(), userID, store.Page{Limit: limit, Cursor: cursor})
		mustNil(t, err, "ListConversations")
		if len(page) > limit {
			t.Fatalf("ListConversations returned %d > limit %d", len(page), limit)
		}
		if len(page) < limit && next != "" {
			t.Fatalf("ListConversations: short page (%d < %d) with a next cursor", len(page), limit)
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		cursor = next
	}
}

// byActivity is the order ListConversations must follow.
func byActivity(a, b store.Conversation) int {
	if c := b.LastActivity.Compare(a.LastActivity); c != 0 {
		return c
	}
	return compareID(b.ID, a.ID)
}

func ids(cs []store.Conversation) []uuid.UUID {
	out := make([]uuid.UUID, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func testConversationOrder(t *testing.T, s store.Store) {
	u := newUser(t, s)
	t0 := base().Add(-time.Hour)
	c1 := newConversation(t, s, u.ID, t0)
	c2 := newConversation(t, s, u.ID, t0.Add(time.Second))
	c3 := newConversation(t, s, u.ID, t0.Add(2*time.Second))
	if got, want := ids(listAll(t, s, u.ID, 10)), []uuid.UUID{c3.ID, c2.ID, c1.ID}; !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	// New mail in the oldest conversation moves it to the top.
	putMessage(t, s, newMessage(u.ID, c1.ID, t0.Add(time.Minute)))
	list := listAll(t, s, u.ID, 10)
	if got, want := ids(list), []uuid.UUID{c1.ID, c3.ID, c2.ID}; !slices.Equal(got, want) {
		t.Fatalf("order after PutMessage = %v, want %v", got, want)
	}
	if !list[0].LastActivity.Equal(t0.Add(time.Minute)) || list[0].MessageCount != 1 {
		t.Errorf("listed conversation summary = %+v", list[0])
	}
	// Then c2; two pages of one.
	putMessage(t, s, newMessage(u.ID, c2.ID, t0.Add(2*time.Minute)))
	if got, want := ids(listAll(t, s, u.ID, 1)), []uuid.UUID{c2.ID, c1.ID, c3.ID}; !slices.Equal(got, want) {
		t.Fatalf("order after second PutMessage = %v, want %v", got, want)
	}
	// An older message (an import) does not move it back.
	putMessage(t, s, newMessage(u.ID, c2.ID, t0.Add(-time.Hour)))
	if got, want := ids(listAll(t, s, u.ID, 2)), []uuid.UUID{c2.ID, c1.ID, c3.ID}; !slices.Equal(got, want) {
		t.Fatalf("order after an older PutMessage = %v, want %v", got, want)
	}
}

// convCount is the size of the big mailbox in the pagination test.
const convCount = 3000

// seedConversations creates n conversations for userID, concurrently. Every
// three share a CreatedAt so ties (broken by ID) are exercised.
func seedConversations(ctx context.Context, s store.Store, userID uuid.UUID, n int, t0 time.Time) ([]store.Conversation, error) {
	out := make([]store.Conversation, n)
	err := forEach(ctx, n, 16, func(ctx context.Context, i int) error {
		c, err := s.GetOrCreateConversation(ctx, store.Conversation{
			UserID:    userID,
			Key:       "seed-" + randHex(8),
			Subject:   "seeded",
			CreatedAt: t0.Add(time.Duration(i/3) * time.Millisecond),
		})
		out[i] = c
		return err
	})
	return out, err
}

func testConversationPagination(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	t0 := base().Add(-48 * time.Hour)
	want, err := seedConversations(ctx, s, u.ID, convCount, t0)
	mustNil(t, err, "seeding conversations")
	slices.SortFunc(want, byActivity)

	for _, limit := range []int{100, 77, store.MaxLimit} {
		got := listAll(t, s, u.ID, limit)
		seen := make(map[uuid.UUID]bool, len(got))
		for _, c := range got {
			if seen[c.ID] {
				t.Fatalf("limit %d: conversation %s listed twice", limit, c.ID)
			}
			seen[c.ID] = true
		}
		if !slices.Equal(ids(got), ids(want)) {
			t.Fatalf("limit %d: listed %d conversations, want %d in (LastActivity, ID) descending order", limit, len(got), len(want))
		}
	}

	page, next, err := s.ListConversations(ctx, u.ID, store.Page{})
	mustNil(t, err, "ListConversations default limit")
	if len(page) != store.DefaultLimit || next == "" {
		t.Errorf("default page = %d conversations, next %q; want %d and a cursor", len(page), next, store.DefaultLimit)
	}
	page, _, err = s.ListConversations(ctx, u.ID, store.Page{Limit: store.MaxLimit * 3})
	mustNil(t, err, "ListConversations over MaxLimit")
	if len(page) != store.MaxLimit {
		t.Errorf("page over MaxLimit = %d conversations, want %d", len(page), store.MaxLimit)
	}
	// Activity while paging: the moved conversation leaves the tail and
	// appears at the head; the rest is listed once, without gaps.
	first, next, err := s.ListConversations(ctx, u.ID, store.Page{Limit: 100})
	mustNil(t, err, "ListConversations first page")
	moved := want[len(want)-1]
	putMessage(t, s, newMessage(u.ID, moved.ID, base()))
	rest := listFrom(t, s, u.ID, 100, next)
	got := append(ids(first), ids(rest)...)
	wantIDs := ids(want[:len(want)-1])
	if !slices.Equal(got, wantIDs) {
		t.Errorf("paging while a conversation moved: got %d, want %d in order without %s", len(got), len(wantIDs), moved.ID)
	}
	head, _, err := s.ListConversations(ctx, u.ID, store.Page{Limit: 1})
	mustNil(t, err, "ListConversations head")
	if len(head) != 1 || head[0].ID != moved.ID {
		t.Errorf("moved conversation %s is not at the head", moved.ID)
	}
}

func testConversationSummary(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	t0 := base().Add(-time.Hour)
	c := newConversation(t, s, u.ID, t0)

	m1 := putMessage(t, s, newMessage(u.ID, c.ID, t0.Add(1*time.Minute)))
	m2 := putMessage(t, s, newMessage(u.ID, c.ID, t0.Add(2*time.Minute)))
	m3 := putMessage(t, s, newMessage(u.ID, c.ID, t0.Add(3*time.Minute)))
	check := func(what string, count, unread int, last store.Message) {
		t.Helper()
		got, err := s.GetConversation(ctx, u.ID, c.ID)
		mustNil(t, err, "GetConversation")
		if got.MessageCount != count || got.UnreadCount != unread {
			t.Errorf("%s: MessageCount %d UnreadCount %d, want %d %d", what, got.MessageCount, got.UnreadCount, count, unread)
		}
		if got.LastMessageID != last.ID || got.Excerpt != last.Excerpt {
			t.Errorf("%s: LastMessageID %s Excerpt %q, want %s %q", what, got.LastMessageID, got.Excerpt, last.ID, last.Excerpt)
		}
		if !got.LastActivity.Equal(t0.Add(3 * time.Minute)) {
			t.Errorf("%s: LastActivity %v, want %v", what, got.LastActivity, t0.Add(3*time.Minute))
		}
		if !slices.Contains(got.Protocols, "email") {
			t.Errorf("%s: Protocols %v lack email", what, got.Protocols)
		}
	}
	check("three unread", 3, 3, m3)

	mustNil(t, s.SetFlags(ctx, u.ID, m1.ID, store.Flags{Read: true}), "SetFlags read")
	check("one read", 3, 2, m3)
	mustNil(t, s.SetFlags(ctx, u.ID, m1.ID, store.Flags{Read: true, Starred: true}), "SetFlags read again")
	check("read twice", 3, 2, m3)
	mustNil(t, s.SetFlags(ctx, u.ID, m1.ID, store.Flags{Read: false}), "SetFlags unread")
	check("unread again", 3, 3, m3)
	mustNil(t, s.SetFlags(ctx, u.ID, m2.ID, store.Flags{Read: true}), "SetFlags read m2")
	check("m2 read", 3, 2, m3)

	mustNil(t, s.DeleteMessage(ctx, u.ID, m2.ID), "DeleteMessage read")
	check("read one deleted", 2, 2, m3)
	mustNil(t, s.DeleteMessage(ctx, u.ID, m1.ID), "DeleteMessage unread")
	check("unread one deleted", 1, 1, m3)

	// Already read on arrival: not unread. Older: not the last message.
	old := newMessage(u.ID, c.ID, t0.Add(30*time.Second))
	old.Flags.Read = true
	putMessage(t, s, old)
	check("read older message", 2, 1, m3)
	wantErr(t, s.DeleteMessage(ctx, u.ID, m1.ID), store.ErrNotFound, "DeleteMessage twice")
	check("after failed delete", 2, 1, m3)
}

func testGetOrCreateConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	key := "k-" + randHex(8)
	const n = 20
	got := make([]store.Conversation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = s.GetOrCreateConversation(ctx, store.Conversation{
				ID: newV7(), UserID: u.ID, Key: key, Subject: "racer", CreatedAt: base(),
			})
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		mustNil(t, errs[i], "GetOrCreateConversation")
		if got[i].ID != got[0].ID {
			t.Fatalf("caller %d got conversation %s, caller 0 got %s", i, got[i].ID, got[0].ID)
		}
	}
	list := listAll(t, s, u.ID, 50)
	if len(list) != 1 || list[0].ID != got[0].ID {
		t.Errorf("user has %d conversations after concurrent GetOrCreate, want 1 (%s)", len(list), got[0].ID)
	}
	if c, err := s.GetConversationByKey(ctx, u.ID, key); err != nil || c.ID != got[0].ID {
		t.Errorf("GetConversationByKey = %s, %v; want %s", c.ID, err, got[0].ID)
	}
}

func testDeleteConversation(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	t0 := base().Add(-time.Hour)
	c := newConversation(t, s, u.ID, t0)
	keep := newConversation(t, s, u.ID, t0)
	m1 := putMessage(t, s, newMessage(u.ID, c.ID, t0.Add(time.Minute)))
	m2 := putMessage(t, s, newMessage(u.ID, c.ID, t0.Add(2*time.Minute)))
	mk := putMessage(t, s, newMessage(u.ID, keep.ID, t0.Add(3*time.Minute)))

	mustNil(t, s.DeleteConversation(ctx, u.ID, c.ID), "DeleteConversation")
	_, err := s.GetConversation(ctx, u.ID, c.ID)
	wantErr(t, err, store.ErrNotFound, "GetConversation after delete")
	_, err = s.GetConversationByKey(ctx, u.ID, c.Key)
	wantErr(t, err, store.ErrNotFound, "GetConversationByKey after delete")
	for _, m := range []store.Message{m1, m2} {
		_, err = s.GetMessage(ctx, u.ID, m.ID)
		wantErr(t, err, store.ErrNotFound, "GetMessage of a deleted conversation")
		_, err = s.FindMessageByMessageID(ctx, u.ID, m.MessageID)
		wantErr(t, err, store.ErrNotFound, "FindMessageByMessageID of a deleted conversation")
	}
	_, _, err = s.ListMessages(ctx, u.ID, c.ID, store.Page{})
	wantErr(t, err, store.ErrNotFound, "ListMessages of a deleted conversation")
	if got := ids(listAll(t, s, u.ID, 10)); !slices.Equal(got, []uuid.UUID{keep.ID}) {
		t.Errorf("conversations after delete = %v, want [%s]", got, keep.ID)
	}
	if _, err := s.GetMessage(ctx, u.ID, mk.ID); err != nil {
		t.Errorf("GetMessage in the other conversation: %v", err)
	}
	wantErr(t, s.DeleteConversation(ctx, u.ID, c.ID), store.ErrNotFound, "DeleteConversation twice")
	_, _, err = s.PutMessage(ctx, newMessage(u.ID, c.ID, t0))
	wantErr(t, err, store.ErrNotFound, "PutMessage into a deleted conversation")
}
