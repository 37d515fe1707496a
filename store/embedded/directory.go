package embedded

import (
	"bytes"
	"context"
	"slices"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

// maxNameLen bounds strings used as raw keys (user names, token hashes):
// bbolt keys are limited and nothing legitimate comes close.
const maxNameLen = 1024

// ---- domains ----

func (s *Store) AddDomain(ctx context.Context, d store.Domain) error {
	name, err := store.NormalizeDomain(d.Name)
	if err != nil {
		return s.wrap("add domain", err)
	}
	d.Name = name
	if d.CreatedAt.IsZero() {
		d.CreatedAt = now()
	}
	return s.updateDirectory(ctx, "add domain", func(tx *bolt.Tx) error {
		b := tx.Bucket(bDomains)
		if b.Get([]byte(name)) != nil {
			return exists("domain %s", name)
		}
		return put(b, []byte(name), d)
	})
}

func (s *Store) GetDomain(ctx context.Context, name string) (store.Domain, error) {
	return cachedRead(s, ctx, 'd', name, func() (store.Domain, error) { return s.getDomain(ctx, name) })
}

func (s *Store) getDomain(ctx context.Context, name string) (store.Domain, error) {
	var d store.Domain
	err := s.view(ctx, "get domain", func(tx *bolt.Tx) error {
		n, err := store.NormalizeDomain(name)
		if err != nil {
			return notFound("domain %q", name) // nothing invalid is ever stored
		}
		ok, err := get(tx.Bucket(bDomains), []byte(n), &d)
		if err == nil && !ok {
			err = notFound("domain %s", n)
		}
		return err
	})
	return d, err
}

func (s *Store) ListDomains(ctx context.Context) ([]store.Domain, error) {
	var out []store.Domain
	err := s.view(ctx, "list domains", func(tx *bolt.Tx) error {
		return tx.Bucket(bDomains).ForEach(func(_, v []byte) error {
			var d store.Domain
			if err := decode(v, &d); err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

func (s *Store) RemoveDomain(ctx context.Context, name string) error {
	n, err := store.NormalizeDomain(name)
	if err != nil {
		return s.wrap("remove domain", notFound("domain %q", name))
	}
	return s.updateDirectory(ctx, "remove domain", func(tx *bolt.Tx) error {
		b := tx.Bucket(bDomains)
		if b.Get([]byte(n)) == nil {
			return notFound("domain %s", n)
		}
		prefix := domainPrefix(n)
		if k, _ := tx.Bucket(bDomainAddrs).Cursor().Seek(prefix); bytes.HasPrefix(k, prefix) {
			return invalid("domain %s is in use by address %s", n, k[len(prefix):])
		}
		if k, _ := tx.Bucket(bAliases).Cursor().Seek(prefix); bytes.HasPrefix(k, prefix) {
			return invalid("domain %s is in use by alias %s", n, k[len(prefix):])
		}
		return b.Delete([]byte(n))
	})
}

// ---- users ----

func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if u.ID == uuid.Nil || u.Name == "" || len(u.Name) > maxNameLen {
		return s.wrap("create user", invalid("user needs an ID and a name of at most %d bytes", maxNameLen))
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now()
	}
	return s.update(ctx, "create user", func(tx *bolt.Tx) error {
		names := tx.Bucket(bUserNames)
		if names.Get([]byte(u.Name)) != nil {
			return exists("user name %q", u.Name)
		}
		users := tx.Bucket(bUsers)
		if users.Get(idKey(u.ID)) != nil {
			return exists("user %s", u.ID)
		}
		if err := put(users, idKey(u.ID), userToRecord(u)); err != nil {
			return err
		}
		if err := names.Put([]byte(u.Name), idKey(u.ID)); err != nil {
			return err
		}
		return createMailbox(tx, u.ID)
	})
}

func getUser(tx *bolt.Tx, id uuid.UUID) (store.User, error) {
	var r userRecord
	ok, err := get(tx.Bucket(bUsers), idKey(id), &r)
	if err != nil {
		return store.User{}, err
	}
	if !ok {
		return store.User{}, notFound("user %s", id)
	}
	return r.user(), nil
}

func (s *Store) GetUser(ctx context.Context, id uuid.UUID) (store.User, error) {
	var u store.User
	err := s.view(ctx, "get user", func(tx *bolt.Tx) (err error) {
		u, err = getUser(tx, id)
		return err
	})
	return u, err
}

func (s *Store) GetUserByName(ctx context.Context, name string) (store.User, error) {
	var u store.User
	err := s.view(ctx, "get user by name", func(tx *bolt.Tx) error {
		v := tx.Bucket(bUserNames).Get([]byte(name))
		if v == nil {
			return notFound("user name %q", name)
		}
		id, err := idFrom(v)
		if err != nil {
			return err
		}
		u, err = getUser(tx, id)
		return err
	})
	return u, err
}

func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	var out []store.User
	err := s.view(ctx, "list users", func(tx *bolt.Tx) error {
		return tx.Bucket(bUsers).ForEach(func(_, v []byte) error {
			var r userRecord
			if err := decode(v, &r); err != nil {
				return err
			}
			out = append(out, r.user())
			return nil
		})
	})
	return out, err
}

func (s *Store) UpdateUser(ctx context.Context, u store.User) error {
	return s.update(ctx, "update user", func(tx *bolt.Tx) error {
		old, err := getUser(tx, u.ID)
		if err != nil {
			return err
		}
		if u.Name != "" && u.Name != old.Name {
			return invalid("user %s: the name cannot change (%q to %q)", u.ID, old.Name, u.Name)
		}
		next := u
		next.Name, next.CreatedAt = old.Name, old.CreatedAt
		return put(tx.Bucket(bUsers), idKey(u.ID), userToRecord(next))
	})
}

func (s *Store) DeleteUser(ctx context.Context, id uuid.UUID) error {
	return s.updateDirectory(ctx, "delete user", func(tx *bolt.Tx) error {
		u, err := getUser(tx, id)
		if err != nil {
			return err
		}
		mb, ok, err := openMailbox(tx, id)
		if err != nil {
			return err
		}
		if ok {
			// Global entries that point into the mailbox go with it.
			for _, addr := range keysOf(mb.addresses) {
				if err := deleteAddress(tx, string(addr)); err != nil {
					return err
				}
			}
			for _, hash := range keysOf(mb.tokens) {
				if err := deleteToken(tx, string(hash)); err != nil {
					return err
				}
			}
			if err := mb.messages.ForEach(func(k, _ []byte) error {
				if len(k) != len(id) {
					return nil // a segment of a long value (segments.go)
				}
				m, found, err := getMessageRecord(mb.messages, k)
				if err != nil || !found {
					return err
				}
				return messageGone(tx, m)
			}); err != nil {
				return err
			}
			if err := tx.Bucket(bMailboxes).DeleteBucket(idKey(id)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bUserNames).Delete([]byte(u.Name)); err != nil {
			return err
		}
		return tx.Bucket(bUsers).Delete(idKey(id))
	})
}

// keysOf copies a bucket's keys: deleting while iterating a bbolt cursor
// skips entries.
func keysOf(b *bolt.Bucket) [][]byte {
	var keys [][]byte
	_ = b.ForEach(func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	})
	return keys
}

// ---- addresses ----

func (s *Store) AddAddress(ctx context.Context, a store.Address) error {
	addr, err := store.NormalizeAddress(a.Address, false)
	if err != nil {
		return s.wrap("add address", err)
	}
	return s.updateDirectory(ctx, "add address", func(tx *bolt.Tx) error {
		if tx.Bucket(bDomains).Get([]byte(store.AddressDomain(addr))) == nil {
			return invalid("address %s: domain %s is not hosted here", addr, store.AddressDomain(addr))
		}
		mb, ok, err := openMailbox(tx, a.UserID)
		if err != nil {
			return err
		}
		if !ok {
			return invalid("address %s: no user %s", addr, a.UserID)
		}
		b := tx.Bucket(bAddresses)
		if b.Get([]byte(addr)) != nil {
			return exists("address %s", addr)
		}
		if err := b.Put([]byte(addr), idKey(a.UserID)); err != nil {
			return err
		}
		if err := tx.Bucket(bDomainAddrs).Put(domainKey(addr), nil); err != nil {
			return err
		}
		return mb.addresses.Put([]byte(addr), nil)
	})
}

func (s *Store) GetAddress(ctx context.Context, address string) (store.Address, error) {
	return cachedRead(s, ctx, 'a', address, func() (store.Address, error) { return s.getAddress(ctx, address) })
}

func (s *Store) getAddress(ctx context.Context, address string) (store.Address, error) {
	var a store.Address
	err := s.view(ctx, "get address", func(tx *bolt.Tx) error {
		addr, err := store.NormalizeAddress(address, false)
		if err != nil {
			return notFound("address %q", address)
		}
		v := tx.Bucket(bAddresses).Get([]byte(addr))
		if v == nil {
			return notFound("address %s", addr)
		}
		owner, err := idFrom(v)
		a = store.Address{Address: addr, UserID: owner}
		return err
	})
	return a, err
}

func (s *Store) ListAddresses(ctx context.Context, userID uuid.UUID) ([]store.Address, error) {
	var out []store.Address
	err := s.view(ctx, "list addresses", func(tx *bolt.Tx) error {
		mb, ok, err := openMailbox(tx, userID)
		if !ok || err != nil {
			return err
		}
		return mb.addresses.ForEach(func(k, _ []byte) error {
			out = append(out, store.Address{Address: string(k), UserID: userID})
			return nil
		})
	})
	return out, err
}

func (s *Store) RemoveAddress(ctx context.Context, address string) error {
	addr, err := store.NormalizeAddress(address, false)
	if err != nil {
		return s.wrap("remove address", notFound("address %q", address))
	}
	return s.updateDirectory(ctx, "remove address", func(tx *bolt.Tx) error {
		return deleteAddress(tx, addr)
	})
}

// deleteAddress removes addr and its index entries.
func deleteAddress(tx *bolt.Tx, addr string) error {
	b := tx.Bucket(bAddresses)
	v := b.Get([]byte(addr))
	if v == nil {
		return notFound("address %s", addr)
	}
	owner, err := idFrom(v)
	if err != nil {
		return err
	}
	if err := b.Delete([]byte(addr)); err != nil {
		return err
	}
	if err := tx.Bucket(bDomainAddrs).Delete(domainKey(addr)); err != nil {
		return err
	}
	mb, ok, err := openMailbox(tx, owner)
	if !ok || err != nil {
		return err
	}
	return mb.addresses.Delete([]byte(addr))
}

// ---- aliases ----

func (s *Store) PutAlias(ctx context.Context, a store.Alias) error {
	addr, err := store.NormalizeAddress(a.Address, true)
	if err != nil {
		return s.wrap("put alias", err)
	}
	targets := make([]string, 0, len(a.Targets))
	for _, t := range a.Targets {
		n, err := store.NormalizeAddress(t, false)
		if err != nil {
			return s.wrap("put alias", invalid("alias %s: target: %v", addr, err))
		}
		if !slices.Contains(targets, n) {
			targets = append(targets, n)
		}
	}
	if len(targets) == 0 {
		return s.wrap("put alias", invalid("alias %s has no target", addr))
	}
	rec := store.Alias{Address: addr, Targets: targets}
	return s.updateDirectory(ctx, "put alias", func(tx *bolt.Tx) error {
		if tx.Bucket(bDomains).Get([]byte(store.AddressDomain(addr))) == nil {
			return invalid("alias %s: domain %s is not hosted here", addr, store.AddressDomain(addr))
		}
		return put(tx.Bucket(bAliases), domainKey(addr), rec)
	})
}

// GetAlias returns a copy of the alias: its targets are the caller's.
func (s *Store) GetAlias(ctx context.Context, address string) (store.Alias, error) {
	a, err := cachedRead(s, ctx, 'l', address, func() (store.Alias, error) { return s.getAlias(ctx, address) })
	a.Targets = slices.Clone(a.Targets)
	return a, err
}

func (s *Store) getAlias(ctx context.Context, address string) (store.Alias, error) {
	var a store.Alias
	err := s.view(ctx, "get alias", func(tx *bolt.Tx) error {
		addr, err := store.NormalizeAddress(address, true)
		if err != nil {
			return notFound("alias %q", address)
		}
		ok, err := get(tx.Bucket(bAliases), domainKey(addr), &a)
		if err == nil && !ok {
			err = notFound("alias %s", addr)
		}
		return err
	})
	return a, err
}

func (s *Store) ListAliases(ctx context.Context, domain string) ([]store.Alias, error) {
	d, err := store.NormalizeDomain(domain)
	if err != nil {
		return nil, s.wrap("list aliases", err)
	}
	var out []store.Alias
	err = s.view(ctx, "list aliases", func(tx *bolt.Tx) error {
		prefix := domainPrefix(d)
		c := tx.Bucket(bAliases).Cursor()
		for k, v := c.Seek(prefix); bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var a store.Alias
			if err := decode(v, &a); err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

func (s *Store) RemoveAlias(ctx context.Context, address string) error {
	addr, err := store.NormalizeAddress(address, true)
	if err != nil {
		return s.wrap("remove alias", notFound("alias %q", address))
	}
	return s.updateDirectory(ctx, "remove alias", func(tx *bolt.Tx) error {
		b := tx.Bucket(bAliases)
		if b.Get(domainKey(addr)) == nil {
			return notFound("alias %s", addr)
		}
		return b.Delete(domainKey(addr))
	})
}
