package api

import (
	"container/list"
	"math"
	"sync"
	"time"
)

// limiter is a token bucket per key (a user name, a client network): burst
// attempts at once, then one per interval. Its memory is bounded: when the
// table is full, the least recently used key is forgotten, so that a flood of
// new keys costs the oldest keys their history, never every key at once.
type limiter struct {
	burst    float64
	interval time.Duration
	max      int

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // most recently used at the front
}

type bucket struct {
	key    string
	tokens float64
	at     time.Time
}

func newLimiter(burst int, interval time.Duration, max int) *limiter {
	return &limiter{burst: float64(burst), interval: interval, max: max, buckets: make(map[string]*list.Element)}
}

// allow spends one attempt for key at now. When none is left it reports how
// long until one is.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	return l.allowN(key, 1, now)
}

// allowN spends n attempts at once (e.g. one per recipient), or none: when
// fewer are left it reports how long until n are. n above the burst never
// passes.
func (l *limiter) allowN(key string, n int, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if el, ok := l.buckets[key]; ok {
		l.lru.MoveToFront(el)
		b = el.Value.(*bucket)
	} else {
		for len(l.buckets) >= l.max {
			old := l.lru.Back()
			l.lru.Remove(old)
			delete(l.buckets, old.Value.(*bucket).key)
		}
		b = &bucket{key: key, tokens: l.burst, at: now}
		l.buckets[key] = l.lru.PushFront(b)
	}
	l.refill(b, now)
	if b.tokens >= float64(n) {
		b.tokens -= float64(n)
		return true, 0
	}
	wait := time.Duration((float64(n) - b.tokens) * float64(l.interval))
	return false, wait
}

// refund gives back an attempt: one that succeeded, or one that another
// limit refused, so that only failures drain a bucket.
func (l *limiter) refund(key string) { l.refundN(key, 1) }

// refundN gives back n attempts.
func (l *limiter) refundN(key string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.buckets[key]; ok {
		b := el.Value.(*bucket)
		b.tokens = math.Min(l.burst, b.tokens+float64(n))
	}
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.at); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(el)/float64(l.interval))
		b.at = now
	}
}

// limitKey is one key of one limiter.
type limitKey struct {
	l   *limiter
	key string
}

// reserve spends one attempt of every key, or none: when one is refused, the
// ones already spent are given back and the wait of the refusal returned.
// The caller refunds the reservation when the attempt succeeds.
func reserve(keys []limitKey, now time.Time) (ok bool, wait time.Duration) {
	for i, k := range keys {
		if ok, wait := k.l.allow(k.key, now); !ok {
			refundAll(keys[:i])
			return false, wait
		}
	}
	return true, 0
}

func refundAll(keys []limitKey) {
	for _, k := range keys {
		k.l.refund(k.key)
	}
}
