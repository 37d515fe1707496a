package api

import (
	"math"
	"sync"
	"time"
)

// limiter is a token bucket per key (a user name, a client address): burst
// attempts at once, then one per interval. Its memory is bounded: when the
// table is full, buckets that have refilled completely (no information left)
// are forgotten first, and if none has, the whole table is reset rather than
// growing without limit under a flood of distinct keys.
type limiter struct {
	burst    float64
	interval time.Duration
	max      int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(burst int, interval time.Duration, max int) *limiter {
	return &limiter{burst: float64(burst), interval: interval, max: max, buckets: make(map[string]*bucket)}
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
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens >= float64(n) {
		b.tokens -= float64(n)
		return true, 0
	}
	wait := time.Duration((float64(n) - b.tokens) * float64(l.interval))
	return false, wait
}

// refund gives back an attempt spent by a request that another limit refused,
// so that one limit's refusals do not drain the other.
func (l *limiter) refund(key string) { l.refundN(key, 1) }

// refundN gives back n attempts.
func (l *limiter) refundN(key string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[key]; ok {
		b.tokens = math.Min(l.burst, b.tokens+float64(n))
	}
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.at); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(el)/float64(l.interval))
		b.at = now
	}
}

func (l *limiter) evict(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.max {
		clear(l.buckets)
	}
}
