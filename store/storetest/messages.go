package storetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

func checkMessage(t *testing.T, got, want store.Message) {
	t.Helper()
	ok := got.ID == want.ID && got.UserID == want.UserID && got.ConversationID == want.ConversationID &&
		got.DedupKey == want.DedupKey && got.Protocol == want.Protocol && got.Inbound == want.Inbound &&
		got.Date.Equal(want.Date) && got.ReceivedAt.Equal(want.ReceivedAt) && got.MessageID == want.MessageID &&
		slices.Equal(got.InReplyTo, want.InReplyTo) && slices.Equal(got.References, want.References) &&
		got.Subject == want.Subject && slices.Equal(got.Participants, want.Participants) &&
		got.Excerpt == want.Excerpt && got.TextBody == want.TextBody && got.HTMLBody == want.HTMLBody &&
		slices.Equal(got.Attachments, want.Attachments) &&
		got.Flags.Read == want.Flags.Read && got.Flags.Starred == want.Flags.Starred && slices.Equal(got.Flags.Tags, want.Flags.Tags) &&
		bytes.Equal(got.Security, want.Security) &&
		got.PI.Version == want.PI.Version && got.PI.Score == want.PI.Score && got.PI.Band == want.PI.Band &&
		got.PI.Warning == want.PI.Warning && bytes.Equal(got.PI.Details, want.PI.Details) &&
		got.RawHash == want.RawHash && got.RawSize == want.RawSize
	if !ok {
		t.Errorf("message = %+v\nwant      %+v", got, want)
	}
}

func testMessages(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	t0 := base().Add(-time.Hour)
	c := newConversation(t, s, u.ID, t0)

	m := newMessage(u.ID, c.ID, t0.Add(time.Minute))
	m.InReplyTo = []string{"parent@example.net"}
	m.References = []string{"root@example.net", "parent@example.net"}
	m.HTMLBody = "<p>hi</p>"
	m.Attachments = []store.Attachment{{PartPath: "2", Filename: "a.pdf", ContentType: "application/pdf", Size: 1234}}
	m.Flags = store.Flags{Starred: true, Tags: []string{"work", "later"}}
	m.Security = []byte(`{"tls":true,"dkim":"pass"}`)
	m.PI = store.PI{Version: 1, Score: 63, Band: "fair", Details: []byte(`{"caps":[]}`)}

	stored, created, err := s.PutMessage(ctx, m)
	mustNil(t, err, "PutMessage")
	if !created {
		t.Error("PutMessage: created = false for a new message")
	}
	if stored.ID == uuid.Nil || stored.ID.Version() != 7 {
		t.Errorf("PutMessage assigned ID %s, want a UUIDv7", stored.ID)
	}
	m.ID = stored.ID
	checkMessage(t, stored, m)

	got, err := s.GetMessage(ctx, u.ID, m.ID)
	mustNil(t, err, "GetMessage")
	checkMessage(t, got, m)
	got, err = s.FindMessageByMessageID(ctx, u.ID, m.MessageID)
	mustNil(t, err, "FindMessageByMessageID")
	checkMessage(t, got, m)
	_, err = s.FindMessageByMessageID(ctx, u.ID, "unknown-"+randHex(6)+"@example.net")
	wantErr(t, err, store.ErrNotFound, "FindMessageByMessageID unknown")
	_, err = s.GetMessage(ctx, u.ID, newV7())
	wantErr(t, err, store.ErrNotFound, "GetMessage unknown")

	// Explicit ID and ReceivedAt are kept.
	m2 := newMessage(u.ID, c.ID, t0.Add(2*time.Minute))
	m2.ID = newV7()
	stored2 := putMessage(t, s, m2)
	checkMessage(t, stored2, m2)

	f := store.Flags{Read: true, Tags: []string{"done"}}
	mustNil(t, s.SetFlags(ctx, u.ID, m.ID, f), "SetFlags")
	got, err = s.GetMessage(ctx, u.ID, m.ID)
	mustNil(t, err, "GetMessage after SetFlags")
	m.Flags = f
	checkMessage(t, got, m)

	sec := []byte(`{"tls":false}`)
	pi := store.PI{Version: 2, Score: 12, Band: "weak", Warning: true, Details: []byte(`{"advice":["x"]}`)}
	mustNil(t, s.SetSecurity(ctx, u.ID, m.ID, sec, pi), "SetSecurity")
	got, err = s.GetMessage(ctx, u.ID, m.ID)
	mustNil(t, err, "GetMessage after SetSecurity")
	m.Security, m.PI = sec, pi
	checkMessage(t, got, m)

	wantErr(t, s.SetFlags(ctx, u.ID, newV7(), f), store.ErrNotFound, "SetFlags unknown")
	wantErr(t, s.SetSecurity(ctx, u.ID, newV7(), sec, pi), store.ErrNotFound, "SetSecurity unknown")
	wantErr(t, s.DeleteMessage(ctx, u.ID, newV7()), store.ErrNotFound, "DeleteMessage unknown")

	_, _, err = s.PutMessage(ctx, newMessage(u.ID, newV7(), t0))
	wantErr(t, err, store.ErrNotFound, "PutMessage into an unknown conversation")
	noKey := newMessage(u.ID, c.ID, t0)
	noKey.DedupKey = ""
	_, _, err = s.PutMessage(ctx, noKey)
	wantErr(t, err, store.ErrInvalid, "PutMessage without a DedupKey")

	mustNil(t, s.DeleteMessage(ctx, u.ID, m.ID), "DeleteMessage")
	_, err = s.GetMessage(ctx, u.ID, m.ID)
	wantErr(t, err, store.ErrNotFound, "GetMessage after delete")
	_, err = s.FindMessageByMessageID(ctx, u.ID, m.MessageID)
	wantErr(t, err, store.ErrNotFound, "FindMessageByMessageID after delete")
	list, _, err := s.ListMessages(ctx, u.ID, c.ID, store.Page{})
	mustNil(t, err, "ListMessages")
	if len(list) != 1 || list[0].ID != m2.ID {
		t.Errorf("ListMessages after delete = %d messages, want only %s", len(list), m2.ID)
	}
}

func testMessagePagination(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	t0 := base().Add(-time.Hour)
	c := newConversation(t, s, u.ID, t0)
	other := newConversation(t, s, u.ID, t0)
	putMessage(t, s, newMessage(u.ID, other.ID, t0.Add(time.Minute)))

	var want []store.Message
	for i := range 11 {
		// Pairs share a ReceivedAt: ties break by ID.
		want = append(want, putMessage(t, s, newMessage(u.ID, c.ID, t0.Add(time.Duration(i/2)*time.Second))))
	}
	slices.SortFunc(want, func(a, b store.Message) int {
		if c := b.ReceivedAt.Compare(a.ReceivedAt); c != 0 {
			return c
		}
		return compareID(b.ID, a.ID)
	})
	for _, limit := range []int{3, 11, 50} {
		var got []store.Message
		cursor := ""
		for range 100 {
			page, next, err := s.ListMessages(ctx, u.ID, c.ID, store.Page{Limit: limit, Cursor: cursor})
			mustNil(t, err, "ListMessages")
			if len(page) > limit || (len(page) < limit && next != "") {
				t.Fatalf("limit %d: page of %d with next %q", limit, len(page), next)
			}
			got = append(got, page...)
			if cursor = next; cursor == "" {
				break
			}
		}
		if len(got) != len(want) {
			t.Fatalf("limit %d: listed %d messages, want %d", limit, len(got), len(want))
		}
		for i := range want {
			if got[i].ID != want[i].ID {
				t.Fatalf("limit %d: message %d is %s, want %s (ReceivedAt, ID descending)", limit, i, got[i].ID, want[i].ID)
			}
		}
		checkMessage(t, got[0], want[0])
	}
	_, _, err := s.ListMessages(ctx, u.ID, newV7(), store.Page{})
	wantErr(t, err, store.ErrNotFound, "ListMessages unknown conversation")
}

func testPutMessageIdempotent(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	t0 := base().Add(-time.Hour)
	c := newConversation(t, s, u.ID, t0)
	m := newMessage(u.ID, c.ID, t0.Add(time.Minute))
	first := putMessage(t, s, m)

	// A redelivery: new ID, new time, different content, same key.
	retry := m
	retry.ID = newV7()
	retry.ReceivedAt = t0.Add(time.Hour)
	retry.Subject = "changed"
	again, created, err := s.PutMessage(ctx, retry)
	mustNil(t, err, "PutMessage again")
	if created {
		t.Error("PutMessage with a stored DedupKey: created = true")
	}
	checkMessage(t, again, first)
	cv, err := s.GetConversation(ctx, u.ID, c.ID)
	mustNil(t, err, "GetConversation")
	if cv.MessageCount != 1 || cv.UnreadCount != 1 || !cv.LastActivity.Equal(m.ReceivedAt) {
		t.Errorf("conversation after a duplicate = count %d unread %d activity %v", cv.MessageCount, cv.UnreadCount, cv.LastActivity)
	}

	// The same key for another user is another message.
	v := newUser(t, s)
	vc := newConversation(t, s, v.ID, t0)
	vm := m
	vm.UserID, vm.ConversationID = v.ID, vc.ID
	if got := putMessage(t, s, vm); got.ID == first.ID {
		t.Error("another user's message with the same DedupKey got the same ID")
	}
}

func testPutMessageConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	t0 := base().Add(-time.Hour)
	c := newConversation(t, s, u.ID, t0)
	m := newMessage(u.ID, c.ID, t0.Add(time.Minute))

	const n = 20
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		stored  [n]store.Message
		created [n]bool
		errs    [n]error
	)
	for i := range n {
		wg.Go(func() {
			mi := m
			mi.ID = newV7() // every racer proposes its own ID
			<-start
			stored[i], created[i], errs[i] = s.PutMessage(ctx, mi)
		})
	}
	close(start)
	wg.Wait()
	creators := 0
	for i := range n {
		mustNil(t, errs[i], "concurrent PutMessage")
		if created[i] {
			creators++
		}
		if stored[i].ID != stored[0].ID {
			t.Errorf("racer %d got message %s, racer 0 got %s", i, stored[i].ID, stored[0].ID)
		}
	}
	if creators != 1 {
		t.Errorf("%d racers got created = true, want exactly 1", creators)
	}
	list, _, err := s.ListMessages(ctx, u.ID, c.ID, store.Page{})
	mustNil(t, err, "ListMessages")
	if len(list) != 1 || list[0].ID != stored[0].ID {
		t.Errorf("conversation holds %d messages, want 1", len(list))
	}
	cv, err := s.GetConversation(ctx, u.ID, c.ID)
	mustNil(t, err, "GetConversation")
	if cv.MessageCount != 1 || cv.UnreadCount != 1 {
		t.Errorf("conversation counts %d/%d after concurrent duplicates, want 1/1", cv.MessageCount, cv.UnreadCount)
	}
}

func testIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := newUser(t, s)
	b := newUser(t, s)
	t0 := base().Add(-time.Hour)
	email := "x." + randHex(3) + "@example.net"
	ac := store.Contact{ID: newV7(), UserID: a.ID, Name: "A's", Channels: []store.Channel{{Protocol: "email", Address: email}}}
	mustNil(t, s.PutContact(ctx, ac), "PutContact")
	conv := newConversation(t, s, a.ID, t0)
	msg := putMessage(t, s, newMessage(a.ID, conv.ID, t0.Add(time.Minute)))
	bconv := newConversation(t, s, b.ID, t0) // B has data too: not an empty-user artefact

	_, err := s.GetContact(ctx, b.ID, ac.ID)
	wantErr(t, err, store.ErrNotFound, "B GetContact of A's")
	wantErr(t, s.DeleteContact(ctx, b.ID, ac.ID), store.ErrNotFound, "B DeleteContact of A's")
	_, err = s.FindContactByChannel(ctx, b.ID, "email", email)
	wantErr(t, err, store.ErrNotFound, "B FindContactByChannel of A's channel")
	// B writing a contact with A's contact ID must leave A's untouched
	// (an engine may refuse it or keep it as B's own).
	_ = s.PutContact(ctx, store.Contact{ID: ac.ID, UserID: b.ID, Name: "hijack"})

	_, err = s.GetConversation(ctx, b.ID, conv.ID)
	wantErr(t, err, store.ErrNotFound, "B GetConversation of A's")
	_, err = s.GetConversationByKey(ctx, b.ID, conv.Key)
	wantErr(t, err, store.ErrNotFound, "B GetConversationByKey of A's key")
	hijack := conv
	hijack.UserID, hijack.Subject = b.ID, "hijack"
	wantErr(t, s.UpdateConversation(ctx, hijack), store.ErrNotFound, "B UpdateConversation of A's")
	_, _, err = s.ListMessages(ctx, b.ID, conv.ID, store.Page{})
	wantErr(t, err, store.ErrNotFound, "B ListMessages of A's conversation")
	intruder := newMessage(b.ID, conv.ID, t0.Add(2*time.Minute))
	_, _, err = s.PutMessage(ctx, intruder)
	wantErr(t, err, store.ErrNotFound, "B PutMessage into A's conversation")

	_, err = s.GetMessage(ctx, b.ID, msg.ID)
	wantErr(t, err, store.ErrNotFound, "B GetMessage of A's")
	_, err = s.FindMessageByMessageID(ctx, b.ID, msg.MessageID)
	wantErr(t, err, store.ErrNotFound, "B FindMessageByMessageID of A's")
	wantErr(t, s.SetFlags(ctx, b.ID, msg.ID, store.Flags{Read: true, Tags: []string{"hijack"}}), store.ErrNotFound, "B SetFlags on A's")
	wantErr(t, s.SetSecurity(ctx, b.ID, msg.ID, []byte(`{}`), store.PI{Score: 1}), store.ErrNotFound, "B SetSecurity on A's")
	wantErr(t, s.DeleteMessage(ctx, b.ID, msg.ID), store.ErrNotFound, "B DeleteMessage of A's")
	wantErr(t, s.DeleteConversation(ctx, b.ID, conv.ID), store.ErrNotFound, "B DeleteConversation of A's")

	if got := ids(listAll(t, s, b.ID, 50)); !slices.Equal(got, []uuid.UUID{bconv.ID}) {
		t.Errorf("B's conversations = %v, want only [%s]", got, bconv.ID)
	}
	if list, err := s.ListContacts(ctx, b.ID); err != nil || slices.ContainsFunc(list, func(c store.Contact) bool { return c.UserID != b.ID }) {
		t.Errorf("B's contacts include someone else's: %v, %v", list, err)
	}

	// A's data is intact.
	gc, err := s.GetContact(ctx, a.ID, ac.ID)
	mustNil(t, err, "A GetContact")
	checkContact(t, gc, ac)
	if got, err := s.FindContactByChannel(ctx, a.ID, "email", email); err != nil || got.ID != ac.ID {
		t.Errorf("A FindContactByChannel = %v, %v", got.ID, err)
	}
	gconv, err := s.GetConversation(ctx, a.ID, conv.ID)
	mustNil(t, err, "A GetConversation")
	if gconv.Subject != conv.Subject || gconv.MessageCount != 1 || gconv.UnreadCount != 1 {
		t.Errorf("A's conversation changed: %+v", gconv)
	}
	gm, err := s.GetMessage(ctx, a.ID, msg.ID)
	mustNil(t, err, "A GetMessage")
	checkMessage(t, gm, msg)
}

func testBlobs(t *testing.T, s store.Store) {
	ctx := t.Context()
	big := make([]byte, 20<<20)
	_, _ = rand.Read(big)
	for _, data := range [][]byte{
		big,
		[]byte("small " + randHex(8)),
		randBytes(store.BlobChunkSize),
		randBytes(store.BlobChunkSize + 1),
	} {
		hash, err := s.PutBlob(ctx, data)
		mustNil(t, err, "PutBlob")
		if want := store.BlobHash(data); hash != want {
			t.Errorf("PutBlob hash %s, want %s", hash, want)
		}
		hash2, err := s.PutBlob(ctx, data)
		mustNil(t, err, "PutBlob again")
		if hash2 != hash {
			t.Errorf("PutBlob of the same bytes: %s then %s", hash, hash2)
		}
		got, err := s.GetBlob(ctx, hash)
		mustNil(t, err, "GetBlob")
		if !bytes.Equal(got, data) {
			t.Errorf("GetBlob(%d bytes) returned %d bytes that differ", len(data), len(got))
		}
	}
	_, err := s.GetBlob(ctx, store.BlobHash([]byte("never stored "+randHex(8))))
	wantErr(t, err, store.ErrNotFound, "GetBlob unknown")
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func testTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	now := base()
	tok := store.Token{Hash: randHex(32), UserID: u.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	mustNil(t, s.PutToken(ctx, tok), "PutToken")
	got, err := s.GetToken(ctx, tok.Hash)
	mustNil(t, err, "GetToken")
	if got.Hash != tok.Hash || got.UserID != u.ID || !got.CreatedAt.Equal(now) || !got.ExpiresAt.Equal(tok.ExpiresAt) {
		t.Errorf("GetToken = %+v, want %+v", got, tok)
	}
	mustNil(t, s.DeleteToken(ctx, tok.Hash), "DeleteToken")
	_, err = s.GetToken(ctx, tok.Hash)
	wantErr(t, err, store.ErrNotFound, "GetToken after delete")
	_, err = s.GetToken(ctx, randHex(32))
	wantErr(t, err, store.ErrNotFound, "GetToken unknown")

	past := store.Token{Hash: randHex(32), UserID: u.ID, CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}
	if err := s.PutToken(ctx, past); err == nil {
		_, err = s.GetToken(ctx, past.Hash)
		wantErr(t, err, store.ErrNotFound, "GetToken already expired")
	} else {
		wantErr(t, err, store.ErrInvalid, "PutToken already expired")
	}

	// Expiry while stored (Cassandra TTLs count in seconds).
	soon := store.Token{Hash: randHex(32), UserID: u.ID, CreatedAt: now, ExpiresAt: ms(time.Now().Add(2 * time.Second))}
	mustNil(t, s.PutToken(ctx, soon), "PutToken short-lived")
	if _, err := s.GetToken(ctx, soon.Hash); err != nil {
		t.Errorf("GetToken before expiry: %v", err)
	}
	time.Sleep(time.Until(soon.ExpiresAt) + 1100*time.Millisecond)
	_, err = s.GetToken(ctx, soon.Hash)
	wantErr(t, err, store.ErrNotFound, "GetToken after expiry")
}

// testDeleteUserTokens: a password change ends the user's other sessions,
// and only theirs.
func testDeleteUserTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	other := newUser(t, s)
	now := base()
	tok := func(uid uuid.UUID) store.Token {
		tk := store.Token{Hash: randHex(32), UserID: uid, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		mustNil(t, s.PutToken(ctx, tk), "PutToken")
		return tk
	}
	keep, gone1, gone2 := tok(u.ID), tok(u.ID), tok(u.ID)
	bystander := tok(other.ID)

	mustNil(t, s.DeleteUserTokens(ctx, u.ID, keep.Hash), "DeleteUserTokens except")
	for _, tk := range []store.Token{gone1, gone2} {
		_, err := s.GetToken(ctx, tk.Hash)
		wantErr(t, err, store.ErrNotFound, "GetToken of a deleted session")
	}
	if _, err := s.GetToken(ctx, keep.Hash); err != nil {
		t.Errorf("GetToken of the kept session: %v", err)
	}
	if _, err := s.GetToken(ctx, bystander.Hash); err != nil {
		t.Errorf("GetToken of another user's session: %v", err)
	}
	// The kept token still deletes cleanly (its index entry is intact).
	mustNil(t, s.DeleteToken(ctx, keep.Hash), "DeleteToken of the kept session")

	again := tok(u.ID)
	mustNil(t, s.DeleteUserTokens(ctx, u.ID, ""), "DeleteUserTokens all")
	_, err := s.GetToken(ctx, again.Hash)
	wantErr(t, err, store.ErrNotFound, "GetToken after DeleteUserTokens all")
	if _, err := s.GetToken(ctx, bystander.Hash); err != nil {
		t.Errorf("GetToken of another user's session after delete all: %v", err)
	}
	// Nothing left, or no such user: not an error.
	mustNil(t, s.DeleteUserTokens(ctx, u.ID, ""), "DeleteUserTokens with none left")
	mustNil(t, s.DeleteUserTokens(ctx, newV7(), ""), "DeleteUserTokens unknown user")
}

func testDeleteUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	dom := newDomain(t, s)
	addr := "gone@" + dom
	mustNil(t, s.AddAddress(ctx, store.Address{Address: addr, UserID: u.ID}), "AddAddress")
	email := "c." + randHex(3) + "@example.net"
	contact := store.Contact{ID: newV7(), UserID: u.ID, Name: "C", Channels: []store.Channel{{Protocol: "email", Address: email}}}
	mustNil(t, s.PutContact(ctx, contact), "PutContact")
	t0 := base().Add(-time.Hour)
	conv := newConversation(t, s, u.ID, t0)
	msg := putMessage(t, s, newMessage(u.ID, conv.ID, t0.Add(time.Minute)))
	tok := store.Token{Hash: randHex(32), UserID: u.ID, CreatedAt: base(), ExpiresAt: base().Add(time.Hour)}
	mustNil(t, s.PutToken(ctx, tok), "PutToken")
	keep := newUser(t, s) // a bystander

	mustNil(t, s.DeleteUser(ctx, u.ID), "DeleteUser")
	_, err := s.GetUser(ctx, u.ID)
	wantErr(t, err, store.ErrNotFound, "GetUser after delete")
	_, err = s.GetUserByName(ctx, u.Name)
	wantErr(t, err, store.ErrNotFound, "GetUserByName after delete")
	_, err = s.GetAddress(ctx, addr)
	wantErr(t, err, store.ErrNotFound, "GetAddress after DeleteUser")
	_, err = s.GetContact(ctx, u.ID, contact.ID)
	wantErr(t, err, store.ErrNotFound, "GetContact after DeleteUser")
	_, err = s.FindContactByChannel(ctx, u.ID, "email", email)
	wantErr(t, err, store.ErrNotFound, "FindContactByChannel after DeleteUser")
	_, err = s.GetConversation(ctx, u.ID, conv.ID)
	wantErr(t, err, store.ErrNotFound, "GetConversation after DeleteUser")
	_, err = s.GetMessage(ctx, u.ID, msg.ID)
	wantErr(t, err, store.ErrNotFound, "GetMessage after DeleteUser")
	_, err = s.FindMessageByMessageID(ctx, u.ID, msg.MessageID)
	wantErr(t, err, store.ErrNotFound, "FindMessageByMessageID after DeleteUser")
	_, err = s.GetToken(ctx, tok.Hash)
	wantErr(t, err, store.ErrNotFound, "GetToken after DeleteUser")
	if list, err := s.ListAddresses(ctx, u.ID); err != nil && !isNotFound(err) || len(list) != 0 {
		t.Errorf("ListAddresses after DeleteUser = %v, %v", list, err)
	}
	if list, _, err := s.ListConversations(ctx, u.ID, store.Page{}); err != nil && !isNotFound(err) || len(list) != 0 {
		t.Errorf("ListConversations after DeleteUser = %d, %v", len(list), err)
	}
	all, err := s.ListUsers(ctx)
	mustNil(t, err, "ListUsers")
	if slices.ContainsFunc(all, func(x store.User) bool { return x.ID == u.ID }) {
		t.Error("ListUsers still lists the deleted user")
	}
	if _, err := s.GetUser(ctx, keep.ID); err != nil {
		t.Errorf("GetUser of a bystander: %v", err)
	}
	wantErr(t, s.DeleteUser(ctx, u.ID), store.ErrNotFound, "DeleteUser twice")

	// The name, the address and the domain are free again.
	reborn := store.User{ID: newV7(), Name: u.Name, CreatedAt: base()}
	mustNil(t, s.CreateUser(ctx, reborn), "CreateUser with a deleted user's name")
	if list, _, err := s.ListConversations(ctx, reborn.ID, store.Page{}); err != nil || len(list) != 0 {
		t.Errorf("new user has %d conversations, %v", len(list), err)
	}
	mustNil(t, s.AddAddress(ctx, store.Address{Address: addr, UserID: reborn.ID}), "AddAddress of a deleted user's address")
	mustNil(t, s.RemoveAddress(ctx, addr), "RemoveAddress")
	mustNil(t, s.RemoveDomain(ctx, dom), "RemoveDomain after DeleteUser")
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
