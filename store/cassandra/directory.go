package cassandra

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

func sortDomains(ds []store.Domain) {
	sort.Slice(ds, func(i, j int) bool { return ds[i].Name < ds[j].Name })
}

func sortUsers(us []store.User) {
	sort.Slice(us, func(i, j int) bool { return us[i].Name < us[j].Name })
}

// ---- Domains ----

func (st *Store) AddDomain(ctx context.Context, d store.Domain) error {
	name, err := store.NormalizeDomain(d.Name)
	if err != nil {
		return err
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = time.Now()
	}
	ok, _, err := casScan(st.q(ctx, `INSERT INTO domains (name, created_at) VALUES (?, ?) IF NOT EXISTS`, name, tn(d.CreatedAt)))
	if err != nil {
		return wrap("add domain "+name, err)
	}
	if !ok {
		return fmt.Errorf("add domain %s: %w", name, store.ErrExists)
	}
	return nil
}

func (st *Store) GetDomain(ctx context.Context, name string) (store.Domain, error) {
	n, err := store.NormalizeDomain(name)
	if err != nil {
		return store.Domain{}, fmt.Errorf("get domain: %w", store.ErrNotFound)
	}
	var created int64
	if err := st.q(ctx, `SELECT created_at FROM domains WHERE name = ?`, n).Scan(&created); err != nil {
		return store.Domain{}, wrap("get domain "+n, err)
	}
	return store.Domain{Name: n, CreatedAt: fromNanos(created)}, nil
}

// ListDomains scans the domains table: admin-only, and it holds one row per
// hosted domain.
func (st *Store) ListDomains(ctx context.Context) ([]store.Domain, error) {
	iter := st.q(ctx, `SELECT name, created_at FROM domains`).Iter()
	var (
		out     []store.Domain
		name    string
		created int64
	)
	for iter.Scan(&name, &created) {
		out = append(out, store.Domain{Name: name, CreatedAt: fromNanos(created)})
	}
	if err := iter.Close(); err != nil {
		return nil, wrap("list domains", err)
	}
	sortDomains(out)
	return out, nil
}

func (st *Store) RemoveDomain(ctx context.Context, name string) error {
	n, err := store.NormalizeDomain(name)
	if err != nil {
		return fmt.Errorf("remove domain: %w", store.ErrNotFound)
	}
	if _, err := st.GetDomain(ctx, n); err != nil {
		return err
	}
	var a string
	for _, tbl := range []string{"addresses_by_domain", "aliases_by_domain"} {
		err := st.q(ctx, `SELECT address FROM `+tbl+` WHERE domain = ? LIMIT 1`, n).Scan(&a)
		if err == nil {
			return fmt.Errorf("remove domain %s: %w: still used by %s", n, store.ErrInvalid, a)
		}
		if err = wrap("remove domain "+n, err); !isNotFound(err) {
			return err
		}
	}
	// Added with a lightweight transaction, removed with one.
	ok, _, err := casScan(st.q(ctx, `DELETE FROM domains WHERE name = ? IF EXISTS`, n))
	if err != nil {
		return wrap("remove domain "+n, err)
	}
	if !ok {
		return fmt.Errorf("remove domain %s: %w", n, store.ErrNotFound)
	}
	return nil
}

// ---- Users ----

func (st *Store) CreateUser(ctx context.Context, u store.User) error {
	if u.ID == uuid.Nil || strings.TrimSpace(u.Name) == "" {
		return fmt.Errorf("create user: %w: ID and Name are required", store.ErrInvalid)
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	setup, err := json.Marshal(userSetup{setupRecord(u.Setup), u.Quota})
	if err != nil {
		return fmt.Errorf("create user: encode setup: %w", err)
	}
	ok, prev, err := casScan(st.q(ctx, `INSERT INTO users_by_name (name, id) VALUES (?, ?) IF NOT EXISTS`, u.Name, gu(u.ID)))
	if err != nil {
		return wrap("create user "+u.Name, err)
	}
	if !ok {
		// The name is ours only if an earlier attempt with this very ID
		// claimed it and failed before writing the user: finish that one.
		if prevUUID(prev, "id") != u.ID {
			return fmt.Errorf("create user %s: %w", u.Name, store.ErrExists)
		}
		if _, err := st.GetUser(ctx, u.ID); !isNotFound(err) {
			if err != nil {
				return err
			}
			return fmt.Errorf("create user %s: %w", u.Name, store.ErrExists)
		}
	}
	err = st.q(ctx, `INSERT INTO users (id, name, display_name, password_hash, created_at, setup) VALUES (?, ?, ?, ?, ?, ?)`,
		gu(u.ID), u.Name, u.DisplayName, u.PasswordHash, tn(u.CreatedAt), setup).Exec()
	return wrap("create user "+u.Name, err)
}

func prevUUID(prev map[string]any, col string) uuid.UUID {
	if v, ok := prev[col].(gocql.UUID); ok {
		return ug(v)
	}
	return uuid.Nil
}

// setupRecord is store.AccountSetup as stored: the model hides PrivateKey
// from JSON (API output), but the store must keep it.
type setupRecord struct {
	HasKeyPair       bool   `json:"has_key_pair"`
	KeyCustody       string `json:"key_custody,omitempty"`
	KeyPublished     bool   `json:"key_published"`
	SecondFactor     bool   `json:"second_factor"`
	PasswordStrength int    `json:"password_strength"`
	PrivateKey       string `json:"private_key,omitempty"`
	PublicKey        string `json:"public_key,omitempty"`
}

// userSetup is the users.setup column: the account set-up, plus the fields
// of store.User that have no column of their own (JSON needs no migration).
type userSetup struct {
	setupRecord
	Quota int64 `json:"quota,omitempty"`
}

const userCols = `id, name, display_name, password_hash, created_at, setup`

func scanUser(sc interface{ Scan(...any) error }) (store.User, error) {
	var (
		u       store.User
		id      gocql.UUID
		created int64
		setup   []byte
	)
	if err := sc.Scan(&id, &u.Name, &u.DisplayName, &u.PasswordHash, &created, &setup); err != nil {
		return u, err
	}
	u.ID, u.CreatedAt = ug(id), fromNanos(created)
	if len(setup) > 0 {
		var rec userSetup
		if err := json.Unmarshal(setup, &rec); err != nil {
			return u, fmt.Errorf("decode setup of user %s: %w", u.ID, err)
		}
		u.Setup, u.Quota = store.AccountSetup(rec.setupRecord), rec.Quota
	}
	return u, nil
}

func (st *Store) GetUser(ctx context.Context, id uuid.UUID) (store.User, error) {
	u, err := scanUser(st.q(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, gu(id)))
	return u, wrap("get user "+id.String(), err)
}

func (st *Store) GetUserByName(ctx context.Context, name string) (store.User, error) {
	var id gocql.UUID
	if err := st.q(ctx, `SELECT id FROM users_by_name WHERE name = ?`, name).Scan(&id); err != nil {
		return store.User{}, wrap("get user "+name, err)
	}
	u, err := st.GetUser(ctx, ug(id))
	if err == nil && u.Name != name {
		return store.User{}, fmt.Errorf("get user %s: %w", name, store.ErrNotFound)
	}
	return u, err
}

// ListUsers pages through the users table: admin-only, a few rows per account.
func (st *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	iter := st.q(ctx, `SELECT `+userCols+` FROM users`).Iter()
	sc := iter.Scanner()
	var out []store.User
	for sc.Next() {
		u, err := scanUser(sc)
		if err != nil {
			_ = iter.Close()
			return nil, wrap("list users", err)
		}
		out = append(out, u)
	}
	if err := sc.Err(); err != nil {
		return nil, wrap("list users", err)
	}
	sortUsers(out)
	return out, nil
}

func (st *Store) UpdateUser(ctx context.Context, u store.User) error {
	cur, err := st.GetUser(ctx, u.ID)
	if err != nil {
		return err
	}
	if u.Name != "" && u.Name != cur.Name {
		return fmt.Errorf("update user %s: %w: the name cannot change", u.ID, store.ErrInvalid)
	}
	setup, err := json.Marshal(userSetup{setupRecord(u.Setup), u.Quota})
	if err != nil {
		return fmt.Errorf("update user: encode setup: %w", err)
	}
	return wrap("update user "+u.ID.String(), st.q(ctx,
		`UPDATE users SET display_name = ?, password_hash = ?, setup = ? WHERE id = ?`,
		u.DisplayName, u.PasswordHash, setup, gu(u.ID)).Exec())
}

func (st *Store) DeleteUser(ctx context.Context, id uuid.UUID) error {
	u, err := st.GetUser(ctx, id)
	if err != nil {
		return err
	}
	op := "delete user " + id.String()
	// Owned data first, the account last: a failure half-way leaves a user
	// that still exists and can be deleted again.
	addrs, err := st.ListAddresses(ctx, id)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if err := st.RemoveAddress(ctx, a.Address); err != nil && !isNotFound(err) {
			return err
		}
	}
	if err := st.deleteUserContacts(ctx, id); err != nil {
		return err
	}
	if err := st.deleteUserConversations(ctx, id); err != nil {
		return err
	}
	iter := st.q(ctx, `SELECT hash FROM tokens_by_user WHERE user_id = ?`, gu(id)).Iter()
	var h string
	var hashes []string
	for iter.Scan(&h) {
		hashes = append(hashes, h)
	}
	if err := iter.Close(); err != nil {
		return wrap(op, err)
	}
	for _, h := range hashes {
		if err := st.q(ctx, `DELETE FROM tokens WHERE hash = ?`, h).Exec(); err != nil {
			return wrap(op, err)
		}
	}
	for _, s := range []string{
		`DELETE FROM tokens_by_user WHERE user_id = ?`,
		`DELETE FROM addresses_by_user WHERE user_id = ?`,
		`DELETE FROM contacts WHERE user_id = ?`,
		`DELETE FROM conversations_by_activity WHERE user_id = ?`,
	} {
		if err := st.q(ctx, s, gu(id)).Exec(); err != nil {
			return wrap(op, err)
		}
	}
	if err := st.q(ctx, `DELETE FROM users WHERE id = ?`, gu(id)).Exec(); err != nil {
		return wrap(op, err)
	}
	// Free the name last, and only if it is still ours.
	if _, _, err := casScan(st.q(ctx, `DELETE FROM users_by_name WHERE name = ? IF id = ?`, u.Name, gu(id))); err != nil {
		return wrap(op, err)
	}
	return nil
}

// ---- Addresses ----

func (st *Store) AddAddress(ctx context.Context, a store.Address) error {
	addr, err := store.NormalizeAddress(a.Address, false)
	if err != nil {
		return err
	}
	domain := store.AddressDomain(addr)
	if _, err := st.GetDomain(ctx, domain); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("add address %s: %w: domain %s is not hosted here", addr, store.ErrInvalid, domain)
		}
		return err
	}
	if _, err := st.GetUser(ctx, a.UserID); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("add address %s: %w: no user %s", addr, store.ErrInvalid, a.UserID)
		}
		return err
	}
	ok, _, err := casScan(st.q(ctx, `INSERT INTO addresses (address, user_id) VALUES (?, ?) IF NOT EXISTS`, addr, gu(a.UserID)))
	if err != nil {
		return wrap("add address "+addr, err)
	}
	if !ok {
		return fmt.Errorf("add address %s: %w", addr, store.ErrExists)
	}
	b := st.s.Batch(gocql.LoggedBatch).WithContext(ctx)
	b.Query(`INSERT INTO addresses_by_user (user_id, address) VALUES (?, ?)`, gu(a.UserID), addr)
	b.Query(`INSERT INTO addresses_by_domain (domain, address, user_id) VALUES (?, ?, ?)`, domain, addr, gu(a.UserID))
	return wrap("add address "+addr, b.Exec())
}

func (st *Store) GetAddress(ctx context.Context, address string) (store.Address, error) {
	addr, err := store.NormalizeAddress(address, false)
	if err != nil {
		return store.Address{}, fmt.Errorf("get address: %w", store.ErrNotFound)
	}
	var uid gocql.UUID
	if err := st.q(ctx, `SELECT user_id FROM addresses WHERE address = ?`, addr).Scan(&uid); err != nil {
		return store.Address{}, wrap("get address "+addr, err)
	}
	return store.Address{Address: addr, UserID: ug(uid)}, nil
}

func (st *Store) ListAddresses(ctx context.Context, userID uuid.UUID) ([]store.Address, error) {
	iter := st.q(ctx, `SELECT address FROM addresses_by_user WHERE user_id = ?`, gu(userID)).Iter()
	var (
		out []store.Address
		a   string
	)
	for iter.Scan(&a) {
		out = append(out, store.Address{Address: a, UserID: userID})
	}
	return out, wrap("list addresses", iter.Close())
}

func (st *Store) RemoveAddress(ctx context.Context, address string) error {
	a, err := st.GetAddress(ctx, address)
	if err != nil {
		return err
	}
	b := st.s.Batch(gocql.LoggedBatch).WithContext(ctx)
	b.Query(`DELETE FROM addresses_by_user WHERE user_id = ? AND address = ?`, gu(a.UserID), a.Address)
	b.Query(`DELETE FROM addresses_by_domain WHERE domain = ? AND address = ?`, store.AddressDomain(a.Address), a.Address)
	if err := b.Exec(); err != nil {
		return wrap("remove address "+a.Address, err)
	}
	// The address row was claimed with a lightweight transaction; release it with one.
	_, _, err = casScan(st.q(ctx, `DELETE FROM addresses WHERE address = ? IF EXISTS`, a.Address))
	return wrap("remove address "+a.Address, err)
}

// ---- Aliases ----

func (st *Store) PutAlias(ctx context.Context, a store.Alias) error {
	addr, err := store.NormalizeAddress(a.Address, true)
	if err != nil {
		return err
	}
	if len(a.Targets) == 0 {
		return fmt.Errorf("put alias %s: %w: no targets", addr, store.ErrInvalid)
	}
	targets := make([]string, 0, len(a.Targets))
	for _, t := range a.Targets {
		n, err := store.NormalizeAddress(t, false)
		if err != nil {
			return fmt.Errorf("put alias %s: target: %w", addr, err)
		}
		targets = append(targets, n)
	}
	domain := store.AddressDomain(addr)
	if _, err := st.GetDomain(ctx, domain); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("put alias %s: %w: domain %s is not hosted here", addr, store.ErrInvalid, domain)
		}
		return err
	}
	b := st.s.Batch(gocql.LoggedBatch).WithContext(ctx)
	b.Query(`INSERT INTO aliases (address, domain, targets) VALUES (?, ?, ?)`, addr, domain, targets)
	b.Query(`INSERT INTO aliases_by_domain (domain, address, targets) VALUES (?, ?, ?)`, domain, addr, targets)
	return wrap("put alias "+addr, b.Exec())
}

func (st *Store) GetAlias(ctx context.Context, address string) (store.Alias, error) {
	addr, err := store.NormalizeAddress(address, true)
	if err != nil {
		return store.Alias{}, fmt.Errorf("get alias: %w", store.ErrNotFound)
	}
	var targets []string
	if err := st.q(ctx, `SELECT targets FROM aliases WHERE address = ?`, addr).Scan(&targets); err != nil {
		return store.Alias{}, wrap("get alias "+addr, err)
	}
	return store.Alias{Address: addr, Targets: targets}, nil
}

func (st *Store) ListAliases(ctx context.Context, domain string) ([]store.Alias, error) {
	d, err := store.NormalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	iter := st.q(ctx, `SELECT address, targets FROM aliases_by_domain WHERE domain = ?`, d).Iter()
	var (
		out     []store.Alias
		addr    string
		targets []string
	)
	for iter.Scan(&addr, &targets) {
		out = append(out, store.Alias{Address: addr, Targets: targets})
		targets = nil
	}
	return out, wrap("list aliases "+d, iter.Close())
}

func (st *Store) RemoveAlias(ctx context.Context, address string) error {
	a, err := st.GetAlias(ctx, address)
	if err != nil {
		return err
	}
	b := st.s.Batch(gocql.LoggedBatch).WithContext(ctx)
	b.Query(`DELETE FROM aliases WHERE address = ?`, a.Address)
	b.Query(`DELETE FROM aliases_by_domain WHERE domain = ? AND address = ?`, store.AddressDomain(a.Address), a.Address)
	return wrap("remove alias "+a.Address, b.Exec())
}
