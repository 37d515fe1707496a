package dnsresolver

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Bounds on how long an answer is kept, whatever its TTL says: a day for
// records (a key rotated under a long TTL is seen the next day at worst),
// three hours for negative answers (RFC 2308 §5's recommended ceiling).
const (
	maxTTL         = 24 * time.Hour
	maxNegativeTTL = 3 * time.Hour
)

type cacheKey struct {
	name  string // lowercased FQDN
	qtype uint16
}

// entry is one cached answer: records, NODATA (no records, found), or
// NXDOMAIN (notFound).
type entry struct {
	key      cacheKey
	rrs      []dns.RR
	notFound bool
	expires  time.Time
}

// cache is a size-bounded LRU of answers that expire with their TTL. Only
// answers the server gave are kept: a time-out or SERVFAIL is never cached,
// so that the next message asks again (coalescing bounds the load instead).
type cache struct {
	max int

	mu    sync.Mutex
	order *list.List // of *entry, most recently used first
	byKey map[cacheKey]*list.Element
}

func newCache(max int) *cache {
	return &cache{max: max, order: list.New(), byKey: make(map[cacheKey]*list.Element)}
}

// get returns the live entry for k; an expired one is dropped.
func (c *cache) get(k cacheKey, now time.Time) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[k]
	if !ok {
		return entry{}, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.byKey, k)
		return entry{}, false
	}
	c.order.MoveToFront(el)
	return *e, true
}

// put stores e, evicting the least recently used entries beyond the bound.
func (c *cache) put(e entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[e.key]; ok {
		*el.Value.(*entry) = e
		c.order.MoveToFront(el)
		return
	}
	c.byKey[e.key] = c.order.PushFront(&e)
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.byKey, old.Value.(*entry).key)
	}
}

// positiveTTL is how long an answer may be kept: the smallest TTL of the
// records it was built from (the CNAME chain included), capped.
func positiveTTL(answer []dns.RR) time.Duration {
	ttl := maxTTL
	for _, rr := range answer {
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	return ttl
}

// negativeTTL is how long NXDOMAIN or NODATA may be kept (RFC 2308 §5): the
// smaller of the authority SOA's own TTL and its MINIMUM field, capped. A
// negative answer without an SOA is not cached (0), as §5 says.
func negativeTTL(ns []dns.RR) time.Duration {
	for _, rr := range ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			return min(ttl, maxNegativeTTL)
		}
	}
	return 0
}
