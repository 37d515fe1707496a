package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caliopen/caliopen/store"
)

func testPing(t *testing.T, s store.Store) {
	mustNil(t, s.Ping(t.Context()), "Ping")
}

func testDomains(t *testing.T, s store.Store) {
	ctx := t.Context()
	name := "d" + randHex(6) + ".test"
	created := base()
	// Mixed case and a trailing dot: stored normalised.
	mustNil(t, s.AddDomain(ctx, store.Domain{Name: strings.ToUpper(name) + ".", CreatedAt: created}), "AddDomain")

	d, err := s.GetDomain(ctx, name)
	mustNil(t, err, "GetDomain")
	if d.Name != name || !d.CreatedAt.Equal(created) {
		t.Errorf("GetDomain = %+v, want name %q created %v", d, name, created)
	}
	if d2, err := s.GetDomain(ctx, strings.ToUpper(name)); err != nil || d2.Name != name {
		t.Errorf("GetDomain(upper case) = %+v, %v", d2, err)
	}
	wantErr(t, s.AddDomain(ctx, store.Domain{Name: name}), store.ErrExists, "AddDomain duplicate")
	wantErr(t, s.AddDomain(ctx, store.Domain{Name: "Not A Domain"}), store.ErrInvalid, "AddDomain invalid")

	all, err := s.ListDomains(ctx)
	mustNil(t, err, "ListDomains")
	if !slices.ContainsFunc(all, func(d store.Domain) bool { return d.Name == name }) {
		t.Errorf("ListDomains lacks %q", name)
	}

	mustNil(t, s.RemoveDomain(ctx, name), "RemoveDomain")
	_, err = s.GetDomain(ctx, name)
	wantErr(t, err, store.ErrNotFound, "GetDomain after remove")
	wantErr(t, s.RemoveDomain(ctx, name), store.ErrNotFound, "RemoveDomain twice")
	all, err = s.ListDomains(ctx)
	mustNil(t, err, "ListDomains")
	if slices.ContainsFunc(all, func(d store.Domain) bool { return d.Name == name }) {
		t.Errorf("ListDomains still has %q after RemoveDomain", name)
	}
	// A removed domain can be added again.
	mustNil(t, s.AddDomain(ctx, store.Domain{Name: name}), "AddDomain after remove")
}

func testRemoveDomainInUse(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	dom := newDomain(t, s)

	addr := "box@" + dom
	mustNil(t, s.AddAddress(ctx, store.Address{Address: addr, UserID: u.ID}), "AddAddress")
	wantErr(t, s.RemoveDomain(ctx, dom), store.ErrInvalid, "RemoveDomain with an address")
	mustNil(t, s.RemoveAddress(ctx, addr), "RemoveAddress")

	alias := "list@" + dom
	mustNil(t, s.PutAlias(ctx, store.Alias{Address: alias, Targets: []string{"x@example.net"}}), "PutAlias")
	wantErr(t, s.RemoveDomain(ctx, dom), store.ErrInvalid, "RemoveDomain with an alias")
	mustNil(t, s.RemoveAlias(ctx, alias), "RemoveAlias")

	mustNil(t, s.PutAlias(ctx, store.Alias{Address: "@" + dom, Targets: []string{"x@example.net"}}), "PutAlias catch-all")
	wantErr(t, s.RemoveDomain(ctx, dom), store.ErrInvalid, "RemoveDomain with a catch-all")
	mustNil(t, s.RemoveAlias(ctx, "@"+dom), "RemoveAlias catch-all")

	mustNil(t, s.RemoveDomain(ctx, dom), "RemoveDomain once unused")
}

func testUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)

	got, err := s.GetUser(ctx, u.ID)
	mustNil(t, err, "GetUser")
	checkUser(t, got, u)
	got, err = s.GetUserByName(ctx, u.Name)
	mustNil(t, err, "GetUserByName")
	checkUser(t, got, u)

	dup := u
	dup.ID = newV7()
	wantErr(t, s.CreateUser(ctx, dup), store.ErrExists, "CreateUser with a taken name")
	wantErr(t, s.CreateUser(ctx, u), store.ErrExists, "CreateUser twice")
	_, err = s.GetUser(ctx, dup.ID)
	wantErr(t, err, store.ErrNotFound, "GetUser of the refused duplicate")
	wantErr(t, s.CreateUser(ctx, store.User{ID: newV7()}), store.ErrInvalid, "CreateUser without a name")
	wantErr(t, s.CreateUser(ctx, store.User{Name: "u" + randHex(8)}), store.ErrInvalid, "CreateUser without an ID")

	all, err := s.ListUsers(ctx)
	mustNil(t, err, "ListUsers")
	if !slices.ContainsFunc(all, func(x store.User) bool { return x.ID == u.ID && x.Name == u.Name }) {
		t.Errorf("ListUsers lacks %s", u.Name)
	}

	upd := u
	upd.DisplayName = "Renamed"
	upd.PasswordHash = "$argon2id$new"
	upd.Setup = store.AccountSetup{HasKeyPair: true, KeyCustody: "device", KeyPublished: true, SecondFactor: true, PasswordStrength: 4, PublicKey: "pub2"}
	noCreated := upd
	noCreated.CreatedAt = time.Time{} // creation time is not the caller's to change
	mustNil(t, s.UpdateUser(ctx, noCreated), "UpdateUser")
	got, err = s.GetUser(ctx, u.ID)
	mustNil(t, err, "GetUser after update")
	checkUser(t, got, upd)
	got, err = s.GetUserByName(ctx, u.Name)
	mustNil(t, err, "GetUserByName after update")
	checkUser(t, got, upd)

	renamed := upd
	renamed.Name = "u" + randHex(8)
	wantErr(t, s.UpdateUser(ctx, renamed), store.ErrInvalid, "UpdateUser changing Name")
	ghost := upd
	ghost.ID = newV7()
	wantErr(t, s.UpdateUser(ctx, ghost), store.ErrNotFound, "UpdateUser unknown")

	_, err = s.GetUser(ctx, newV7())
	wantErr(t, err, store.ErrNotFound, "GetUser unknown")
	_, err = s.GetUserByName(ctx, "u"+randHex(8))
	wantErr(t, err, store.ErrNotFound, "GetUserByName unknown")
	wantErr(t, s.DeleteUser(ctx, newV7()), store.ErrNotFound, "DeleteUser unknown")
}

func checkUser(t *testing.T, got, want store.User) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.DisplayName != want.DisplayName ||
		got.PasswordHash != want.PasswordHash || got.Setup != want.Setup || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("user = %+v\nwant   %+v", got, want)
	}
}

func testAddresses(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	other := newUser(t, s)
	dom := newDomain(t, s)

	a1 := "alice." + randHex(3) + "@" + dom
	a2 := "a2@" + dom
	mustNil(t, s.AddAddress(ctx, store.Address{Address: strings.ToUpper(a1), UserID: u.ID}), "AddAddress upper case")
	mustNil(t, s.AddAddress(ctx, store.Address{Address: a2, UserID: u.ID}), "AddAddress")

	got, err := s.GetAddress(ctx, a1)
	mustNil(t, err, "GetAddress")
	if got.Address != a1 || got.UserID != u.ID {
		t.Errorf("GetAddress = %+v, want %s owned by %s", got, a1, u.ID)
	}
	if got, err := s.GetAddress(ctx, strings.ToUpper(a2)); err != nil || got.Address != a2 {
		t.Errorf("GetAddress(upper case) = %+v, %v", got, err)
	}

	wantErr(t, s.AddAddress(ctx, store.Address{Address: a1, UserID: u.ID}), store.ErrExists, "AddAddress twice")
	wantErr(t, s.AddAddress(ctx, store.Address{Address: a1, UserID: other.ID}), store.ErrExists, "AddAddress owned by another user")
	wantErr(t, s.AddAddress(ctx, store.Address{Address: "x@nowhere-" + randHex(4) + ".test", UserID: u.ID}), store.ErrInvalid, "AddAddress on an unknown domain")
	wantErr(t, s.AddAddress(ctx, store.Address{Address: "no-at-sign", UserID: u.ID}), store.ErrInvalid, "AddAddress malformed")

	list, err := s.ListAddresses(ctx, u.ID)
	mustNil(t, err, "ListAddresses")
	addrs := make([]string, 0, len(list))
	for _, a := range list {
		if a.UserID != u.ID {
			t.Errorf("ListAddresses(%s) returned %+v", u.ID, a)
		}
		addrs = append(addrs, a.Address)
	}
	slices.Sort(addrs)
	if want := []string{a1, a2}; !slices.Equal(addrs, sortedCopy(want)) {
		t.Errorf("ListAddresses = %v, want %v", addrs, sortedCopy(want))
	}
	if list, err := s.ListAddresses(ctx, other.ID); err != nil || len(list) != 0 {
		t.Errorf("ListAddresses(other user) = %v, %v; want none", list, err)
	}

	mustNil(t, s.RemoveAddress(ctx, strings.ToUpper(a1)), "RemoveAddress")
	_, err = s.GetAddress(ctx, a1)
	wantErr(t, err, store.ErrNotFound, "GetAddress after remove")
	wantErr(t, s.RemoveAddress(ctx, a1), store.ErrNotFound, "RemoveAddress twice")
	list, err = s.ListAddresses(ctx, u.ID)
	mustNil(t, err, "ListAddresses after remove")
	if len(list) != 1 || list[0].Address != a2 {
		t.Errorf("ListAddresses after remove = %v, want only %s", list, a2)
	}
	// Freed: another user may take it now.
	mustNil(t, s.AddAddress(ctx, store.Address{Address: a1, UserID: other.ID}), "AddAddress of a freed address")
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func testAliases(t *testing.T, s store.Store) {
	ctx := t.Context()
	dom := newDomain(t, s)
	sales := "sales@" + dom
	targets := []string{"zed@example.net", "amy@example.org", "bob@" + dom}

	mustNil(t, s.PutAlias(ctx, store.Alias{Address: "Sales@" + strings.ToUpper(dom), Targets: targets}), "PutAlias")
	got, err := s.GetAlias(ctx, sales)
	mustNil(t, err, "GetAlias")
	if got.Address != sales || !slices.Equal(got.Targets, targets) {
		t.Errorf("GetAlias = %+v, want %s -> %v (order kept)", got, sales, targets)
	}

	// PutAlias replaces the target list.
	targets2 := []string{"carol@example.com", "dave@example.com"}
	mustNil(t, s.PutAlias(ctx, store.Alias{Address: sales, Targets: targets2}), "PutAlias replace")
	got, err = s.GetAlias(ctx, sales)
	mustNil(t, err, "GetAlias after replace")
	if !slices.Equal(got.Targets, targets2) {
		t.Errorf("GetAlias after replace = %v, want %v", got.Targets, targets2)
	}

	catchAll := "@" + dom
	mustNil(t, s.PutAlias(ctx, store.Alias{Address: catchAll, Targets: []string{"postmaster@example.net"}}), "PutAlias catch-all")
	got, err = s.GetAlias(ctx, "@"+strings.ToUpper(dom))
	mustNil(t, err, "GetAlias catch-all")
	if got.Address != catchAll || !slices.Equal(got.Targets, []string{"postmaster@example.net"}) {
		t.Errorf("GetAlias catch-all = %+v", got)
	}

	wantErr(t, s.PutAlias(ctx, store.Alias{Address: "x@" + dom}), store.ErrInvalid, "PutAlias without targets")
	wantErr(t, s.PutAlias(ctx, store.Alias{Address: "x@nowhere-" + randHex(4) + ".test", Targets: targets}), store.ErrInvalid, "PutAlias on an unknown domain")

	list, err := s.ListAliases(ctx, dom)
	mustNil(t, err, "ListAliases")
	var names []string
	for _, a := range list {
		names = append(names, a.Address)
	}
	slices.Sort(names)
	if want := sortedCopy([]string{sales, catchAll}); !slices.Equal(names, want) {
		t.Errorf("ListAliases(%s) = %v, want %v", dom, names, want)
	}

	mustNil(t, s.RemoveAlias(ctx, sales), "RemoveAlias")
	_, err = s.GetAlias(ctx, sales)
	wantErr(t, err, store.ErrNotFound, "GetAlias after remove")
	wantErr(t, s.RemoveAlias(ctx, sales), store.ErrNotFound, "RemoveAlias twice")
	_, err = s.GetAlias(ctx, "nobody@"+dom)
	wantErr(t, err, store.ErrNotFound, "GetAlias unknown")
	list, err = s.ListAliases(ctx, dom)
	mustNil(t, err, "ListAliases after remove")
	if len(list) != 1 || list[0].Address != catchAll {
		t.Errorf("ListAliases after remove = %v, want only %s", list, catchAll)
	}
}

func testContacts(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	when := base().Add(-day)
	c := store.Contact{
		ID:     newV7(),
		UserID: u.ID,
		Name:   "Bob",
		Channels: []store.Channel{
			{Protocol: "email", Address: "bob." + randHex(3) + "@example.net", LastUsed: when},
			{Protocol: "xmpp", Address: "bob@jabber.example"},
		},
		Keys: []store.PublicKey{{
			Fingerprint: strings.ToUpper(randHex(20)), Algorithm: "ed25519", Bits: 256, Armored: "-----BEGIN PGP PUBLIC KEY BLOCK-----",
			Source: "autocrypt", Verified: true, FirstSeen: when, LastSeen: when.Add(day), SeenCount: 3,
		}},
		CreatedAt: when,
		UpdatedAt: when,
		History:   json.RawMessage(`{"v":1,"m":[{"k":"0123456789abcdef","a":1,"t":"TLSv1.3"}]}`),
	}
	mustNil(t, s.PutContact(ctx, c), "PutContact")
	got, err := s.GetContact(ctx, u.ID, c.ID)
	mustNil(t, err, "GetContact")
	checkContact(t, got, c)

	list, err := s.ListContacts(ctx, u.ID)
	mustNil(t, err, "ListContacts")
	if len(list) != 1 {
		t.Fatalf("ListContacts = %d contacts, want 1", len(list))
	}
	checkContact(t, list[0], c)

	c2 := store.Contact{ID: newV7(), UserID: u.ID, Name: "Carol",
		Channels: []store.Channel{{Protocol: "email", Address: "carol@example.org"}}}
	mustNil(t, s.PutContact(ctx, c2), "PutContact second")
	list, err = s.ListContacts(ctx, u.ID)
	mustNil(t, err, "ListContacts")
	if len(list) != 2 {
		t.Errorf("ListContacts = %d contacts, want 2", len(list))
	}
	// No history given: none read back (ingest then reads the messages once).
	if got, err := s.GetContact(ctx, u.ID, c2.ID); err != nil || got.History != nil {
		t.Errorf("contact without history: history %q, %v; want nil", got.History, err)
	}

	// Replace: new name and keys, fewer channels.
	c.Name = "Robert"
	c.Keys = nil
	mustNil(t, s.PutContact(ctx, c), "PutContact replace")
	got, err = s.GetContact(ctx, u.ID, c.ID)
	mustNil(t, err, "GetContact after replace")
	if got.Name != "Robert" || len(got.Keys) != 0 || len(got.Channels) != 2 {
		t.Errorf("GetContact after replace = %+v", got)
	}

	wantErr(t, s.PutContact(ctx, store.Contact{UserID: u.ID, Name: "no id"}), store.ErrInvalid, "PutContact without an ID")

	mustNil(t, s.DeleteContact(ctx, u.ID, c.ID), "DeleteContact")
	_, err = s.GetContact(ctx, u.ID, c.ID)
	wantErr(t, err, store.ErrNotFound, "GetContact after delete")
	wantErr(t, s.DeleteContact(ctx, u.ID, c.ID), store.ErrNotFound, "DeleteContact twice")
	_, err = s.GetContact(ctx, u.ID, newV7())
	wantErr(t, err, store.ErrNotFound, "GetContact unknown")
	list, err = s.ListContacts(ctx, u.ID)
	mustNil(t, err, "ListContacts after delete")
	if len(list) != 1 || list[0].ID != c2.ID {
		t.Errorf("ListContacts after delete = %v, want only %s", list, c2.ID)
	}
}

// testSetContactHistory: a delivery records the sender's history while
// the user verifies a key on the same contact, or deletes it; the history
// write must neither undo the other write nor bring the contact back.
func testSetContactHistory(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	when := base().Add(-day)
	addr := "dave." + randHex(3) + "@example.net"
	c := store.Contact{ID: newV7(), UserID: u.ID, Name: "Dave",
		Channels:  []store.Channel{{Protocol: "email", Address: addr}},
		CreatedAt: when, UpdatedAt: when,
		History: json.RawMessage(`{"v":1,"m":[]}`)}
	mustNil(t, s.PutContact(ctx, c), "PutContact")

	// What the user wrote after the delivery read the contact.
	c.Name = "Dave V."
	c.Keys = []store.PublicKey{{Fingerprint: strings.ToUpper(randHex(20)), Algorithm: "ed25519", Bits: 256,
		Source: "autocrypt", Verified: true, FirstSeen: when, LastSeen: when, SeenCount: 1}}
	c.UpdatedAt = when.Add(time.Hour)
	mustNil(t, s.PutContact(ctx, c), "PutContact verify key")

	h := json.RawMessage(`{"v":1,"m":[{"k":"0123456789abcdef","a":1}]}`)
	mustNil(t, s.SetContactHistory(ctx, u.ID, c.ID, h), "SetContactHistory")
	want := c
	want.History = h
	got, err := s.GetContact(ctx, u.ID, c.ID)
	mustNil(t, err, "GetContact")
	checkContact(t, got, want)
	if !got.CreatedAt.Equal(c.CreatedAt) || !got.UpdatedAt.Equal(c.UpdatedAt) {
		t.Errorf("times after SetContactHistory = %v, %v; want %v, %v", got.CreatedAt, got.UpdatedAt, c.CreatedAt, c.UpdatedAt)
	}
	got, err = s.FindContactByChannel(ctx, u.ID, "email", addr)
	mustNil(t, err, "FindContactByChannel")
	checkContact(t, got, want)

	// Deleted meanwhile: not found, and nothing comes back.
	mustNil(t, s.DeleteContact(ctx, u.ID, c.ID), "DeleteContact")
	wantErr(t, s.SetContactHistory(ctx, u.ID, c.ID, h), store.ErrNotFound, "SetContactHistory on a deleted contact")
	_, err = s.GetContact(ctx, u.ID, c.ID)
	wantErr(t, err, store.ErrNotFound, "GetContact after SetContactHistory on a deleted contact")
	_, err = s.FindContactByChannel(ctx, u.ID, "email", addr)
	wantErr(t, err, store.ErrNotFound, "FindContactByChannel after SetContactHistory on a deleted contact")
	list, err := s.ListContacts(ctx, u.ID)
	mustNil(t, err, "ListContacts")
	if len(list) != 0 {
		t.Errorf("ListContacts after SetContactHistory on a deleted contact = %+v, want none", list)
	}
	wantErr(t, s.SetContactHistory(ctx, u.ID, newV7(), h), store.ErrNotFound, "SetContactHistory on an unknown contact")
	wantErr(t, s.SetContactHistory(ctx, newV7(), c.ID, h), store.ErrNotFound, "SetContactHistory for an unknown user")

	// Concurrent with PutContact: every key the PutContacts wrote stays.
	c = store.Contact{ID: newV7(), UserID: u.ID, Name: "Erin", CreatedAt: when, UpdatedAt: when}
	mustNil(t, s.PutContact(ctx, c), "PutContact Erin")
	const rounds = 20
	id := c.ID
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range rounds {
			c.Keys = append(c.Keys, store.PublicKey{Fingerprint: fmt.Sprintf("%040X", i), Algorithm: "ed25519", Source: "autocrypt"})
			if err := s.PutContact(ctx, c); err != nil {
				t.Errorf("PutContact %d: %v", i, err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range rounds {
			if err := s.SetContactHistory(ctx, u.ID, id, h); err != nil {
				t.Errorf("SetContactHistory %d: %v", i, err)
				return
			}
		}
	}()
	wg.Wait()
	got, err = s.GetContact(ctx, u.ID, id)
	mustNil(t, err, "GetContact Erin")
	if len(got.Keys) != rounds || got.Name != "Erin" {
		t.Errorf("after concurrent writes: name %q, %d keys; want Erin, %d", got.Name, len(got.Keys), rounds)
	}
}

const day = 24 * time.Hour

func checkContact(t *testing.T, got, want store.Contact) {
	t.Helper()
	if string(got.History) != string(want.History) {
		t.Errorf("contact history = %s, want %s", got.History, want.History)
	}
	if got.ID != want.ID || got.UserID != want.UserID || got.Name != want.Name {
		t.Errorf("contact = %+v\nwant      %+v", got, want)
		return
	}
	if len(got.Channels) != len(want.Channels) {
		t.Errorf("contact channels = %+v, want %+v", got.Channels, want.Channels)
	} else {
		for i := range want.Channels {
			g, w := got.Channels[i], want.Channels[i]
			if g.Protocol != w.Protocol || g.Address != w.Address || !g.LastUsed.Equal(w.LastUsed) {
				t.Errorf("contact channel %d = %+v, want %+v", i, g, w)
			}
		}
	}
	if len(got.Keys) != len(want.Keys) {
		t.Errorf("contact keys = %+v, want %+v", got.Keys, want.Keys)
	} else {
		for i := range want.Keys {
			g, w := got.Keys[i], want.Keys[i]
			if g.Fingerprint != w.Fingerprint || g.Algorithm != w.Algorithm || g.Bits != w.Bits || g.Armored != w.Armored ||
				g.Source != w.Source || g.Verified != w.Verified || !g.FirstSeen.Equal(w.FirstSeen) ||
				!g.LastSeen.Equal(w.LastSeen) || g.SeenCount != w.SeenCount {
				t.Errorf("contact key %d = %+v, want %+v", i, g, w)
			}
		}
	}
}

func testContactChannelIndex(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser(t, s)
	other := newUser(t, s)
	emailA := "a." + randHex(3) + "@example.net"
	emailB := "b." + randHex(3) + "@example.net"
	emailC := "c." + randHex(3) + "@example.net"

	c := store.Contact{ID: newV7(), UserID: u.ID, Name: "A", Channels: []store.Channel{
		{Protocol: "email", Address: emailA}, {Protocol: "email", Address: emailB}}}
	mustNil(t, s.PutContact(ctx, c), "PutContact")
	for _, addr := range []string{emailA, emailB} {
		got, err := s.FindContactByChannel(ctx, u.ID, "email", addr)
		if err != nil || got.ID != c.ID {
			t.Errorf("FindContactByChannel(%s) = %v, %v; want %s", addr, got.ID, err, c.ID)
		}
	}
	_, err := s.FindContactByChannel(ctx, u.ID, "xmpp", emailA)
	wantErr(t, err, store.ErrNotFound, "FindContactByChannel other protocol")
	_, err = s.FindContactByChannel(ctx, other.ID, "email", emailA)
	wantErr(t, err, store.ErrNotFound, "FindContactByChannel for another user")

	// Another user may know the same address as a contact of their own.
	oc := store.Contact{ID: newV7(), UserID: other.ID, Name: "A", Channels: []store.Channel{{Protocol: "email", Address: emailA}}}
	mustNil(t, s.PutContact(ctx, oc), "PutContact same channel, other user")

	// A channel belongs to one contact of the user.
	d := store.Contact{ID: newV7(), UserID: u.ID, Name: "D", Channels: []store.Channel{{Protocol: "email", Address: emailB}}}
	wantErr(t, s.PutContact(ctx, d), store.ErrExists, "PutContact with another contact's channel")
	_, err = s.GetContact(ctx, u.ID, d.ID)
	wantErr(t, err, store.ErrNotFound, "GetContact of the refused contact")

	// Update: drop emailA, add emailC. The index follows.
	c.Channels = []store.Channel{{Protocol: "email", Address: emailB}, {Protocol: "email", Address: emailC}}
	mustNil(t, s.PutContact(ctx, c), "PutContact update channels")
	_, err = s.FindContactByChannel(ctx, u.ID, "email", emailA)
	wantErr(t, err, store.ErrNotFound, "FindContactByChannel of a dropped channel")
	for _, addr := range []string{emailB, emailC} {
		got, err := s.FindContactByChannel(ctx, u.ID, "email", addr)
		if err != nil || got.ID != c.ID {
			t.Errorf("FindContactByChannel(%s) after update = %v, %v; want %s", addr, got.ID, err, c.ID)
		}
	}
	if got, err := s.FindContactByChannel(ctx, other.ID, "email", emailA); err != nil || got.ID != oc.ID {
		t.Errorf("other user's FindContactByChannel(%s) = %v, %v; want %s", emailA, got.ID, err, oc.ID)
	}

	// The dropped channel is free for another contact.
	d.Channels = []store.Channel{{Protocol: "email", Address: emailA}}
	mustNil(t, s.PutContact(ctx, d), "PutContact with a freed channel")
	if got, err := s.FindContactByChannel(ctx, u.ID, "email", emailA); err != nil || got.ID != d.ID {
		t.Errorf("FindContactByChannel(%s) = %v, %v; want %s", emailA, got.ID, err, d.ID)
	}

	mustNil(t, s.DeleteContact(ctx, u.ID, c.ID), "DeleteContact")
	for _, addr := range []string{emailB, emailC} {
		_, err := s.FindContactByChannel(ctx, u.ID, "email", addr)
		wantErr(t, err, store.ErrNotFound, "FindContactByChannel after delete "+addr)
	}
	if got, err := s.FindContactByChannel(ctx, u.ID, "email", emailA); err != nil || got.ID != d.ID {
		t.Errorf("FindContactByChannel(%s) after deleting another contact = %v, %v", emailA, got.ID, err)
	}
}
