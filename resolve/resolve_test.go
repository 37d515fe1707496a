package resolve_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
)

// newStore returns an empty embedded store in a temporary directory.
func newStore(t *testing.T) *embedded.Store {
	t.Helper()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "caliopen.db"),
		embedded.WithNoSync(), embedded.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// fixture: example.org hosts alice (two addresses) and bob, other.test
// hosts carol; aliases exercise lists, nesting, loops, extensions and the
// catch-all. It returns the user IDs by login.
func fixture(t *testing.T) (*embedded.Store, map[string]uuid.UUID) {
	t.Helper()
	st := newStore(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"example.org", "other.test"} {
		must(st.AddDomain(ctx, store.Domain{Name: d, CreatedAt: time.Now()}))
	}
	ids := map[string]uuid.UUID{}
	for _, u := range []struct {
		name  string
		addrs []string
	}{
		{"alice", []string{"alice@example.org", "a.liddell@example.org"}},
		{"bob", []string{"bob@example.org"}},
		{"carol", []string{"carol@other.test"}},
	} {
		id := uuid.New()
		must(st.CreateUser(ctx, store.User{ID: id, Name: u.name, CreatedAt: time.Now()}))
		for _, a := range u.addrs {
			must(st.AddAddress(ctx, store.Address{Address: a, UserID: id}))
		}
		ids[u.name] = id
	}
	alias(t, st, "team@example.org", "alice@example.org", "bob@example.org", "friend@remote.test")
	alias(t, st, "all@example.org", "team@example.org", "carol@other.test", "a.liddell@example.org")
	alias(t, st, "ping@example.org", "pong@example.org")
	alias(t, st, "pong@example.org", "ping@example.org", "bob@example.org")
	alias(t, st, "@example.org", "postmaster@example.org")
	alias(t, st, "postmaster@example.org", "bob@example.org")
	alias(t, st, "copy@example.org", "copy@example.org", "carol@other.test")
	alias(t, st, "alias-ext@example.org", "carol+from-alias@other.test")
	return st, ids
}

func alias(t *testing.T, st store.Store, addr string, targets ...string) {
	t.Helper()
	if err := st.PutAlias(context.Background(), store.Alias{Address: addr, Targets: targets}); err != nil {
		t.Fatal(err)
	}
}

// faultyStore fails the reads the resolver makes, for every key (all) or
// one address, and counts them: an injected outage, not a double.
type faultyStore struct {
	store.Store
	all   bool
	addr  string
	calls atomic.Int64
}

func (f *faultyStore) fail(key string) error {
	f.calls.Add(1)
	if f.all || key == f.addr {
		return fmt.Errorf("injected timeout: %w", store.ErrUnavailable)
	}
	return nil
}

func (f *faultyStore) GetDomain(ctx context.Context, name string) (store.Domain, error) {
	if err := f.fail(name); err != nil {
		return store.Domain{}, err
	}
	return f.Store.GetDomain(ctx, name)
}

func (f *faultyStore) GetAddress(ctx context.Context, a string) (store.Address, error) {
	if err := f.fail(a); err != nil {
		return store.Address{}, err
	}
	return f.Store.GetAddress(ctx, a)
}

func (f *faultyStore) GetAlias(ctx context.Context, a string) (store.Alias, error) {
	if err := f.fail(a); err != nil {
		return store.Alias{}, err
	}
	return f.Store.GetAlias(ctx, a)
}

func (f *faultyStore) GetUser(ctx context.Context, id uuid.UUID) (store.User, error) {
	if err := f.fail(id.String()); err != nil {
		return store.User{}, err
	}
	return f.Store.GetUser(ctx, id)
}

func newResolver(t *testing.T, cfg resolve.Config) *resolve.Resolver {
	t.Helper()
	r, err := resolve.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewNeedsAStore(t *testing.T) {
	if _, err := resolve.New(resolve.Config{}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Fatalf("New without a store: err = %v, want one naming Store", err)
	}
}

func TestMailbox(t *testing.T) {
	m, ids := fixture(t)
	r := newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	ctx := context.Background()
	for _, tc := range []struct {
		in, want string
	}{
		{"alice@example.org", "alice@example.org"},
		{"  Alice@Example.ORG ", "alice@example.org"},
		{"alice+news@example.org", "alice@example.org"},
		{"ALICE+News+more@example.org", "alice@example.org"},
		{"a.liddell@example.org", "a.liddell@example.org"},
	} {
		got, err := r.Mailbox(ctx, tc.in)
		if err != nil {
			t.Errorf("Mailbox(%q): %v", tc.in, err)
			continue
		}
		if got.Address != tc.want || got.UserID != ids["alice"] {
			t.Errorf("Mailbox(%q) = %+v, want %q of alice", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{
		"nobody@example.org",
		"+alice@example.org",   // no base local part: must not become "@example.org"
		"team@example.org",     // an alias, not a mailbox
		"alice@example.org.uk", // other domain
		"alice",                // no domain
		"@example.org",         // catch-all key is no mailbox
		"",
		"alice@",
		"al ice@example.org",
	} {
		_, err := r.Mailbox(ctx, in)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Mailbox(%q) err = %v, want ErrNotFound", in, err)
		}
	}
}

func TestMailboxDelimiters(t *testing.T) {
	m, _ := fixture(t)
	ctx := context.Background()

	off := newResolver(t, resolve.Config{Store: m}) // empty Delimiter: no extensions
	if _, err := off.Mailbox(ctx, "alice+news@example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delimiter disabled: err = %v, want ErrNotFound", err)
	}
	multi := newResolver(t, resolve.Config{Store: m, Delimiter: "+-"})
	for _, in := range []string{"alice-news@example.org", "alice+news@example.org", "alice-a+b@example.org"} {
		got, err := multi.Mailbox(ctx, in)
		if err != nil || got.Address != "alice@example.org" {
			t.Errorf("delimiter \"+-\": Mailbox(%q) = %+v, %v", in, got, err)
		}
	}
}

func TestDomain(t *testing.T) {
	m, _ := fixture(t)
	r := newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	ctx := context.Background()
	d, err := r.Domain(ctx, "Example.Org.")
	if err != nil || d.Name != "example.org" {
		t.Errorf("Domain(Example.Org.) = %+v, %v", d, err)
	}
	for _, in := range []string{"example.com", "org", "", "exa mple.org"} {
		if _, err := r.Domain(ctx, in); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Domain(%q) err = %v, want ErrNotFound", in, err)
		}
	}
}

func TestAlias(t *testing.T) {
	m, _ := fixture(t)
	r := newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	ctx := context.Background()
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"team@example.org", []string{"alice@example.org", "bob@example.org", "friend@remote.test"}},
		{"TEAM@example.org", []string{"alice@example.org", "bob@example.org", "friend@remote.test"}},
		{"team+x@example.org", []string{"alice@example.org", "bob@example.org", "friend@remote.test"}},
		// a hosted mailbox with an extension rewrites to the base mailbox
		{"alice+news@example.org", []string{"alice@example.org"}},
		// unknown local part: catch-all
		{"whoever@example.org", []string{"postmaster@example.org"}},
		{"whoever+x@example.org", []string{"postmaster@example.org"}},
		{"+x@example.org", []string{"postmaster@example.org"}},
		// the catch-all key itself
		{"@example.org", []string{"postmaster@example.org"}},
	} {
		got, err := r.Alias(ctx, tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Alias(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"alice@example.org", // a mailbox is not caught by the catch-all
		"bob@example.org",
		"nobody@other.test", // no catch-all there
		"@other.test",
		"x@unknown.test",
		"garbage",
	} {
		if got, err := r.Alias(ctx, in); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Alias(%q) = %q, %v; want ErrNotFound", in, got, err)
		}
	}
}

func TestUsers(t *testing.T) {
	m, ids := fixture(t)
	r := newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	ctx := context.Background()
	type want struct{ addr, user string }
	for _, tc := range []struct {
		in   string
		want []want
	}{
		{"alice@example.org", []want{{"alice@example.org", "alice"}}},
		{"Alice+tag@Example.org", []want{{"alice@example.org", "alice"}}},
		{"team@example.org", []want{{"alice@example.org", "alice"}, {"bob@example.org", "bob"}}},
		// nested; alice reached twice (two addresses) is one user
		{"all@example.org", []want{{"alice@example.org", "alice"}, {"bob@example.org", "bob"}, {"carol@other.test", "carol"}}},
		// loop ping → pong → ping: terminates, ping is no mailbox
		{"ping@example.org", []want{{"bob@example.org", "bob"}}},
		// catch-all, then nested alias
		{"someone@example.org", []want{{"bob@example.org", "bob"}}},
		// a target with an extension reaches the base mailbox
		{"alias-ext@example.org", []want{{"carol@other.test", "carol"}}},
	} {
		got, err := r.Users(ctx, tc.in)
		if err != nil {
			t.Errorf("Users(%q): %v", tc.in, err)
			continue
		}
		var gw []want
		for _, a := range got {
			for name, id := range ids {
				if id == a.UserID {
					gw = append(gw, want{a.Address, name})
				}
			}
		}
		if !slices.Equal(gw, tc.want) {
			t.Errorf("Users(%q) = %v, want %v", tc.in, gw, tc.want)
		}
	}
	for _, in := range []string{"nobody@other.test", "@example.org", "x@unknown.test", "no-at"} {
		if got, err := r.Users(ctx, in); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Users(%q) = %v, %v; want ErrNotFound", in, got, err)
		}
	}
}

// Reach tells which expansions leave something that is not hosted here:
// the milter must then leave the message to Postfix.
func TestReach(t *testing.T) {
	m, _ := fixture(t)
	r := newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	ctx := context.Background()
	for _, tc := range []struct {
		in        string
		users     int
		elsewhere bool
	}{
		{"alice@example.org", 1, false},
		{"Alice+tag@Example.org", 1, false},
		{"all@example.org", 3, true},         // via team@, which forwards to friend@remote.test
		{"team@example.org", 2, true},        // friend@remote.test
		{"someone@example.org", 1, false},    // catch-all → postmaster → bob
		{"ping@example.org", 1, true},        // the loop leaves ping@, no mailbox
		{"copy@example.org", 1, true},        // copy@ kept as itself, not a mailbox here
		{"alias-ext@example.org", 1, false},  // carol+from-alias@ is carol's mailbox
		{"postmaster@example.org", 1, false}, // an alias to a mailbox
		{"a.liddell@example.org", 1, false},  // a second address of alice
	} {
		users, elsewhere, err := r.Reach(ctx, tc.in)
		if err != nil || len(users) != tc.users || elsewhere != tc.elsewhere {
			t.Errorf("Reach(%q) = %d users, elsewhere %v, %v; want %d, %v", tc.in, len(users), elsewhere, err, tc.users, tc.elsewhere)
		}
	}
	for _, in := range []string{"nobody@other.test", "x@unknown.test", "no-at"} {
		if _, elsewhere, err := r.Reach(ctx, in); !errors.Is(err, store.ErrNotFound) || !elsewhere {
			t.Errorf("Reach(%q): elsewhere %v, %v; want ErrNotFound and elsewhere", in, elsewhere, err)
		}
	}
}

// An alias that lists itself keeps a copy for its own mailbox (Postfix
// semantics), and the depth limit ends a long chain without error.
func TestUsersSelfAndDepth(t *testing.T) {
	m, ids := fixture(t)
	ctx := context.Background()
	if err := m.AddAddress(ctx, store.Address{Address: "copy@example.org", UserID: ids["bob"]}); err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	got, err := r.Users(ctx, "copy@example.org")
	if err != nil || len(got) != 2 || got[0].UserID != ids["bob"] || got[1].UserID != ids["carol"] {
		t.Errorf("Users(copy) = %+v, %v; want bob then carol", got, err)
	}

	for i := range 20 {
		alias(t, m, fmt.Sprintf("chain%d@example.org", i), fmt.Sprintf("chain%d@example.org", i+1))
	}
	if err := m.AddAddress(ctx, store.Address{Address: "chain5@example.org", UserID: ids["alice"]}); err != nil {
		t.Fatal(err)
	}
	// chain5 is both reached by a chain and an alias itself: with depth 5
	// expansion stops there and delivers to it as a mailbox.
	r = newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter, MaxDepth: 5})
	got, err = r.Users(ctx, "chain0@example.org")
	if err != nil || len(got) != 1 || got[0].Address != "chain5@example.org" {
		t.Errorf("Users(chain0) depth 5 = %+v, %v; want chain5", got, err)
	}
	// Default depth: chain5's alias wins over its mailbox; the chain ends at
	// chain20, unknown, so the catch-all (postmaster → bob) gets it.
	r = newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	got, err = r.Users(ctx, "chain0@example.org")
	if err != nil || len(got) != 1 || got[0].Address != "bob@example.org" {
		t.Errorf("Users(chain0) default depth = %+v, %v; want bob via the catch-all", got, err)
	}
}

// A wide alias graph is bounded by MaxExpansion, not by store round trips
// per path.
func TestUsersExpansionBound(t *testing.T) {
	m, _ := fixture(t)
	var fan []string
	for i := range 50 {
		fan = append(fan, fmt.Sprintf("f%d@example.org", i))
		var inner []string
		for j := range 50 {
			inner = append(inner, fmt.Sprintf("g%d.%d@example.org", i, j))
		}
		alias(t, m, fan[i], inner...)
	}
	alias(t, m, "fan@example.org", fan...)
	f := &faultyStore{Store: m}
	r := newResolver(t, resolve.Config{Store: f, Delimiter: resolve.DefaultDelimiter})
	if _, err := r.Users(context.Background(), "fan@example.org"); err != nil {
		// every leaf hits the catch-all → postmaster → bob
		t.Fatalf("Users(fan): %v", err)
	}
	// ~4 lookups per visited address at most, bounded by MaxExpansion.
	if n := f.calls.Load(); n > 8*resolve.MaxExpansion {
		t.Errorf("Users(fan) made %d store calls, want <= %d", n, 8*resolve.MaxExpansion)
	}
}

func TestLogins(t *testing.T) {
	m, _ := fixture(t)
	r := newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	ctx := context.Background()
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"alice@example.org", []string{"alice"}},
		{"a.liddell+x@EXAMPLE.org", []string{"alice"}},
		{"team@example.org", []string{"alice", "bob"}},
	} {
		got, err := r.Logins(ctx, tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Logins(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	// The catch-all receives for unknown addresses but gives no right to send as them.
	if got, err := r.Logins(ctx, "anything@example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Logins(anything) = %q, %v; want ErrNotFound", got, err)
	}
}

// A store failure is returned wrapped, never as not found.
func TestStoreFailure(t *testing.T) {
	m, _ := fixture(t)
	r := newResolver(t, resolve.Config{Store: &faultyStore{Store: m, all: true}, Delimiter: resolve.DefaultDelimiter})
	ctx := context.Background()
	calls := map[string]func() error{
		"Domain":  func() error { _, err := r.Domain(ctx, "example.org"); return err },
		"Mailbox": func() error { _, err := r.Mailbox(ctx, "alice@example.org"); return err },
		"Alias":   func() error { _, err := r.Alias(ctx, "alice+x@example.org"); return err },
		"Users":   func() error { _, err := r.Users(ctx, "team@example.org"); return err },
		"Logins":  func() error { _, err := r.Logins(ctx, "team@example.org"); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s with failing store: err = %v, want ErrUnavailable and not ErrNotFound", name, err)
		}
	}

	// A failure deep in an expansion is not swallowed either.
	r = newResolver(t, resolve.Config{Store: &faultyStore{Store: m, addr: "bob@example.org"}, Delimiter: resolve.DefaultDelimiter})
	if _, err := r.Users(ctx, "team@example.org"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Users(team) with bob failing: err = %v, want ErrUnavailable", err)
	}
	if _, err := r.Alias(ctx, "bob+x@example.org"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Alias(bob+x) with bob failing: err = %v, want ErrUnavailable", err)
	}
}

func TestCanceledContext(t *testing.T) {
	m, _ := fixture(t)
	r := newResolver(t, resolve.Config{Store: m, Delimiter: resolve.DefaultDelimiter})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Users(ctx, "team@example.org"); !errors.Is(err, context.Canceled) {
		t.Errorf("Users with canceled ctx: err = %v, want context.Canceled", err)
	}
}
