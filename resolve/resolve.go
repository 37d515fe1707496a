// Package resolve decides who a recipient address is: the hosted mailbox it
// names, the alias targets it rewrites to, and finally the users it reaches.
//
// lookupd answers Postfix's table queries with it and ingest uses it to find
// the users a message is delivered to, so both agree on every address. The
// rules follow Postfix's virtual(5) semantics, done here because Postfix sends
// socketmap and tcp_table lookups the full, lowercased address only — no
// +extension stripping and no @domain fallback:
//
//   - addresses are compared lowercased;
//   - an alias for the exact address wins, then a mailbox with that address;
//   - then the same with the address extension stripped ("alice+news@d" →
//     "alice@d"), when a delimiter is configured;
//   - then the catch-all alias "@domain", which never catches an address that
//     is itself a hosted mailbox or alias (with or without extension).
//
// Store failures are always returned (wrapped) and never folded into "not
// found": a not-found answer makes Postfix bounce mail for good, a failure
// only delays it.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// DefaultDelimiter is the usual recipient_delimiter: "alice+tag@example.org".
const DefaultDelimiter = "+"

// DefaultMaxDepth bounds alias nesting, like Postfix's
// virtual_alias_recursion_limit.
const DefaultMaxDepth = 100

// MaxExpansion bounds the number of addresses one expansion visits, like
// Postfix's virtual_alias_expansion_limit: a misconfigured alias graph must
// not turn one RCPT into an unbounded amount of store traffic.
const MaxExpansion = 1000

// Directory is the part of the store a Resolver reads.
type Directory interface {
	GetDomain(ctx context.Context, name string) (store.Domain, error)
	GetAddress(ctx context.Context, address string) (store.Address, error)
	GetAlias(ctx context.Context, address string) (store.Alias, error)
	GetUser(ctx context.Context, id uuid.UUID) (store.User, error)
}

// Config is what a Resolver is built from.
type Config struct {
	// Store is the directory it reads. Required.
	Store Directory
	// Delimiter is the set of characters that start an address extension,
	// as Postfix's recipient_delimiter: the local part is cut at the first of
	// them. Empty disables extension handling, as in Postfix; the usual
	// value is DefaultDelimiter.
	Delimiter string
	// MaxDepth bounds alias nesting in Users; <= 0 means DefaultMaxDepth.
	MaxDepth int
}

// Resolver resolves recipient addresses against a store. It is safe for
// concurrent use.
type Resolver struct {
	st        Directory
	delimiter string
	maxDepth  int
}

// New returns a Resolver built from cfg.
func New(cfg Config) (*Resolver, error) {
	if cfg.Store == nil {
		return nil, errors.New("resolve: Config.Store is required")
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	return &Resolver{st: cfg.Store, delimiter: cfg.Delimiter, maxDepth: cfg.MaxDepth}, nil
}

// normalize lowercases addr and checks its shape. A malformed address can
// never be hosted, so the error wraps both store.ErrNotFound (callers that
// only distinguish found / not found / failure get that right) and
// store.ErrInvalid.
func normalize(addr string, catchAll bool) (string, error) {
	a, err := store.NormalizeAddress(addr, catchAll)
	if err != nil {
		return "", fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return a, nil
}

// stripExtension returns addr without its extension and whether it had one.
// A local part that starts with the delimiter has no base to fall back to
// ("+x@d" must not become the catch-all "@d").
func (r *Resolver) stripExtension(addr string) (string, bool) {
	if r.delimiter == "" {
		return "", false
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return "", false
	}
	i := strings.IndexAny(addr[:at], r.delimiter)
	if i <= 0 {
		return "", false
	}
	return addr[:i] + addr[at:], true
}

// Domain returns the hosted domain name (lowercased, no trailing dot).
func (r *Resolver) Domain(ctx context.Context, name string) (store.Domain, error) {
	n, err := store.NormalizeDomain(name)
	if err != nil {
		return store.Domain{}, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	d, err := r.st.GetDomain(ctx, n)
	if err != nil {
		return store.Domain{}, fmt.Errorf("resolve: domain %q: %w", n, err)
	}
	return d, nil
}

// Mailbox returns the hosted mailbox addr delivers to: the exact
// (lowercased) address, else the address with its extension stripped. It
// does not follow aliases.
func (r *Resolver) Mailbox(ctx context.Context, addr string) (store.Address, error) {
	a, err := normalize(addr, false)
	if err != nil {
		return store.Address{}, err
	}
	m, err := r.mailbox(ctx, a)
	if err != nil {
		return store.Address{}, fmt.Errorf("resolve: mailbox %q: %w", a, err)
	}
	return m, nil
}

// mailbox is Mailbox for a normalised address. Internal lookups return the
// store's errors as they are: lookupd answers many "not found"s per second
// and the public methods add context once.
func (r *Resolver) mailbox(ctx context.Context, a string) (store.Address, error) {
	m, err := r.st.GetAddress(ctx, a)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return m, err
	}
	if base, ok := r.stripExtension(a); ok {
		return r.st.GetAddress(ctx, base)
	}
	return store.Address{}, err
}

// isMailbox reports whether a is exactly a hosted mailbox.
func (r *Resolver) isMailbox(ctx context.Context, a string) (bool, error) {
	_, err := r.st.GetAddress(ctx, a)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, err
}

func (r *Resolver) getAlias(ctx context.Context, a string) ([]string, error) {
	al, err := r.st.GetAlias(ctx, a)
	return al.Targets, err
}

// Alias returns what addr is rewritten to, as Postfix's virtual_alias_maps
// should answer, or an error wrapping store.ErrNotFound when addr is
// delivered as itself (or not at all). In order:
//
//  1. the alias for the exact address;
//  2. nothing if the exact address is a hosted mailbox;
//  3. the alias for the address without extension;
//  4. the base mailbox itself if the address without extension is hosted:
//     "alice+tag@d" → ["alice@d"], so Postfix delivers to a known mailbox;
//  5. the catch-all alias "@domain".
//
// The key "@domain" itself returns the catch-all's targets. The returned
// slice belongs to the caller.
func (r *Resolver) Alias(ctx context.Context, addr string) ([]string, error) {
	a, err := normalize(addr, true)
	if err != nil {
		return nil, err
	}
	targets, err := r.alias(ctx, a, true)
	if err != nil {
		return nil, fmt.Errorf("resolve: alias %q: %w", a, err)
	}
	return targets, nil
}

// alias is Alias for a normalised address; see mailbox about errors.
func (r *Resolver) alias(ctx context.Context, a string, catchAll bool) ([]string, error) {
	targets, err := r.getAlias(ctx, a)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return targets, err
	}
	if a[0] == '@' {
		return nil, err // catch-all key without a catch-all: nothing to fall back to
	}
	if ok, err := r.isMailbox(ctx, a); err != nil || ok {
		if err == nil {
			err = errIsMailbox
		}
		return nil, err
	}
	if base, ok := r.stripExtension(a); ok {
		targets, err := r.getAlias(ctx, base)
		if err == nil || !errors.Is(err, store.ErrNotFound) {
			return targets, err
		}
		ok, err := r.isMailbox(ctx, base)
		if err != nil {
			return nil, err
		}
		if ok {
			return []string{base}, nil
		}
	}
	if !catchAll {
		return nil, err
	}
	return r.getAlias(ctx, "@"+store.AddressDomain(a))
}

// errIsMailbox explains why a hosted mailbox has no alias: it is delivered
// as itself, and the catch-all does not apply to it.
var errIsMailbox = fmt.Errorf("a hosted mailbox, delivered as itself: %w", store.ErrNotFound)

// Users expands addr through aliases down to the hosted mailboxes it
// reaches, one per user (the first address reached for that user, in
// expansion order). This is the set of users a message to addr is delivered
// to. Semantics follow Postfix's virtual alias expansion:
//
//   - an address reached a second time (a loop, or an alias listing itself
//     to keep a copy) is not expanded again but delivered as itself;
//   - expansion stops at MaxDepth levels and MaxExpansion addresses; what
//     is left is delivered as itself;
//   - targets that are neither hosted mailboxes nor aliases (remote
//     addresses, stale targets) reach no user here and are skipped.
//
// It returns an error wrapping store.ErrNotFound when no hosted user is
// reached, and any store failure wrapped as is.
func (r *Resolver) Users(ctx context.Context, addr string) ([]store.Address, error) {
	return r.users(ctx, addr, true)
}

// Reach is Users that also reports whether the expansion left addresses
// that are not hosted here (forwards to remote addresses, stale or
// malformed targets): mail for those is still Postfix's to deliver. A
// malformed addr, or one that reaches no hosted user, returns an error as
// Users does.
func (r *Resolver) Reach(ctx context.Context, addr string) (users []store.Address, elsewhere bool, err error) {
	return r.reach(ctx, addr, true)
}

func (r *Resolver) users(ctx context.Context, addr string, catchAll bool) ([]store.Address, error) {
	users, _, err := r.reach(ctx, addr, catchAll)
	return users, err
}

func (r *Resolver) reach(ctx context.Context, addr string, catchAll bool) ([]store.Address, bool, error) {
	a, err := normalize(addr, false)
	if err != nil {
		return nil, true, err
	}
	x := expansion{r: r, catchAll: catchAll, seen: map[string]bool{}, users: map[uuid.UUID]bool{}}
	x.maxDepth = r.maxDepth
	if err := x.expand(ctx, a, 0); err != nil {
		return nil, true, err
	}
	if len(x.out) == 0 {
		return nil, true, fmt.Errorf("resolve: %q reaches no hosted mailbox: %w", a, store.ErrNotFound)
	}
	return x.out, x.elsewhere, nil
}

type expansion struct {
	r        *Resolver
	catchAll bool
	maxDepth int
	seen     map[string]bool
	users    map[uuid.UUID]bool
	out      []store.Address
	// elsewhere: some address of the expansion is not hosted here.
	elsewhere bool
}

func (x *expansion) expand(ctx context.Context, a string, depth int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("resolve: %w", err)
	}
	if x.seen[a] || depth >= x.maxDepth || len(x.seen) >= MaxExpansion {
		return x.deliver(ctx, a)
	}
	x.seen[a] = true
	targets, err := x.r.alias(ctx, a, x.catchAll)
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("resolve: alias %q: %w", a, err)
	case err != nil:
		return x.deliver(ctx, a)
	}
	for _, t := range targets {
		n, err := store.NormalizeAddress(t, false)
		if err != nil {
			x.elsewhere = true // Postfix, not us, decides what becomes of it
			continue           // a target we cannot parse reaches no hosted user
		}
		if err := x.expand(ctx, n, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// deliver records a's mailbox, if a is hosted (exactly, or without its
// extension).
func (x *expansion) deliver(ctx context.Context, a string) error {
	m, err := x.r.mailbox(ctx, a)
	switch {
	case errors.Is(err, store.ErrNotFound):
		x.elsewhere = true
		return nil
	case err != nil:
		return fmt.Errorf("resolve: mailbox %q: %w", a, err)
	}
	if !x.users[m.UserID] {
		x.users[m.UserID] = true
		x.out = append(x.out, m)
	}
	return nil
}

// Logins returns the login names of the users allowed to send as addr, as
// Postfix's smtpd_sender_login_maps should answer: the owners of the
// mailbox, and the users an alias expands to. The catch-all is deliberately
// not followed: receiving mail for unknown addresses of a domain must not
// let a user forge any sender in it. Names are in expansion order, without
// duplicates.
func (r *Resolver) Logins(ctx context.Context, addr string) ([]string, error) {
	us, err := r.users(ctx, addr, false)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(us))
	for _, u := range us {
		user, err := r.st.GetUser(ctx, u.UserID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue // the user was deleted under us: it may no longer send
		case err != nil:
			return nil, fmt.Errorf("resolve: user of %q: %w", u.Address, err)
		}
		names = append(names, user.Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("resolve: %q has no owner: %w", addr, store.ErrNotFound)
	}
	return names, nil
}
