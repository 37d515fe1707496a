package embedded

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/caliopen/caliopen/store"
)

// dirCache keeps the directory reads (domain, address and alias by name)
// that lookupd and ingest make for every recipient, found or not. Only this
// process writes the file (bbolt locks it), so the cache stays exact with
// one rule: every write that changes the directory calls invalidate after
// its commit. A read notes the generation before its transaction begins and
// caches its result under it; an entry counts only while the generation is
// unchanged, so a read that raced a write never outlives it.
type dirCache struct {
	gen atomic.Uint64
	mu  sync.RWMutex
	m   map[dirKey]dirEntry
}

type dirKey struct {
	kind byte // 'd'omain, 'a'ddress, a'l'ias
	name string
}

type dirEntry struct {
	gen uint64
	val any   // store.Domain, store.Address or store.Alias
	err error // nil or a not-found error
}

// maxDirEntries bounds the cache (a flood of lookups for random unknown
// addresses must not grow it without end): past it, it starts over.
const maxDirEntries = 100_000

func (c *dirCache) get(k dirKey) (dirEntry, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	return e, ok && e.gen == c.gen.Load()
}

// put caches the result of a read that began at generation gen. Failures
// other than not-found are never cached.
func (c *dirCache) put(k dirKey, gen uint64, val any, err error) {
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen.Load() {
		return
	}
	if c.m == nil || len(c.m) >= maxDirEntries {
		c.m = map[dirKey]dirEntry{}
	}
	c.m[k] = dirEntry{gen: gen, val: val, err: err}
}

func (c *dirCache) invalidate() {
	c.mu.Lock()
	c.gen.Add(1)
	c.m = nil
	c.mu.Unlock()
}

// updateDirectory is update for writes that change domains, addresses or
// aliases: it invalidates the directory cache once the commit is done
// (also after a failure: whatever happened, nothing stale is kept).
func (s *Store) updateDirectory(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	defer s.dir.invalidate()
	return s.update(ctx, op, fn)
}

// cachedRead serves kind/name from the directory cache, else runs read and
// caches what it returns.
func cachedRead[T any](s *Store, ctx context.Context, kind byte, name string, read func() (T, error)) (T, error) {
	if err := s.usable(ctx); err != nil {
		var zero T
		return zero, err
	}
	k := dirKey{kind, name}
	if e, ok := s.dir.get(k); ok {
		v, _ := e.val.(T)
		return v, e.err
	}
	gen := s.dir.gen.Load()
	v, err := read()
	s.dir.put(k, gen, v, err)
	return v, err
}
