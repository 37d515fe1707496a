package api

import (
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// ttlCache is a small concurrent cache: entries live at most ttl, and the
// table holds at most max of them. When full it drops expired entries, then
// an arbitrary half: cheaper than LRU bookkeeping on every hit, and a miss
// only costs a store read. A nil cache or max ≤ 0 caches nothing.
type ttlCache[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[K comparable, V any](ttl time.Duration, max int) *ttlCache[K, V] {
	return &ttlCache[K, V]{ttl: ttl, max: max, m: make(map[K]ttlEntry[V])}
}

func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	var zero V
	if c == nil || c.max <= 0 {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || now.After(e.expires) {
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[K, V]) put(k K, v V, now time.Time) {
	if c == nil || c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max/2 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[k] = ttlEntry[V]{v: v, expires: now.Add(c.ttl)}
}

func (c *ttlCache[K, V]) remove(k K) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

// ownedID names one entity of one user: caches never mix users.
type ownedID struct {
	user, id uuid.UUID
}

// piCache keeps computed conversation PIs so that a conversation list does
// not read the last messages of every conversation on every request. An
// entry is valid while the conversation's message set is unchanged (same
// last message, same count) and for at most its TTL, which bounds how stale
// a score can be after a recompute of stored message PIs (SetSecurity) or as
// the recency weights drift.
type piCache struct {
	c *ttlCache[ownedID, cachedPI]
}

type cachedPI struct {
	last  uuid.UUID
	count int
	pi    piView
}

func newPICache(ttl time.Duration, max int) *piCache {
	return &piCache{c: newTTLCache[ownedID, cachedPI](ttl, max)}
}

func (p *piCache) get(conv store.Conversation, now time.Time) (piView, bool) {
	e, ok := p.c.get(ownedID{conv.UserID, conv.ID}, now)
	if !ok || e.last != conv.LastMessageID || e.count != conv.MessageCount {
		return piView{}, false
	}
	return e.pi, true
}

func (p *piCache) put(conv store.Conversation, pi piView, now time.Time) {
	p.c.put(ownedID{conv.UserID, conv.ID}, cachedPI{last: conv.LastMessageID, count: conv.MessageCount, pi: pi}, now)
}

// contactName is what a participant list shows of a contact.
type contactName struct {
	found bool // false: no such contact (deleted, merged)
	name  string
}
