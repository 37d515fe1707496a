package keytrust

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/verify"
)

// DefaultMaxQueued bounds the messages a Queue remembers between rounds.
const DefaultMaxQueued = 100000

// QueueConfig is what a Queue needs.
type QueueConfig struct {
	Store    store.Store      // required
	Verifier *verify.Verifier // required: the DNS checks to re-run
	Log      *slog.Logger     // nil: discard
	// Interval is the time between retry rounds; required.
	Interval time.Duration
	// MaxQueued bounds the messages remembered between rounds; beyond it the
	// next round scans the store instead. DefaultMaxQueued when zero.
	MaxQueued int
}

// Queue re-verifies, in the background, the messages stored with pending
// checks, until every check completes. The durable record is the message
// itself (its stored facts say which checks are pending): Run starts with a
// scan of the store, so what a stop or crash interrupted is resumed; the
// messages added since, or still pending, are retried every Interval.
type Queue struct {
	st       store.Store
	v        *verify.Verifier
	log      *slog.Logger
	interval time.Duration
	max      int

	mu     sync.Mutex
	queued map[msgRef]struct{}
	rescan bool // the store holds pending messages not in queued
}

type msgRef struct{ user, msg uuid.UUID }

// NewQueue returns a Queue for cfg.
func NewQueue(cfg QueueConfig) (*Queue, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("keytrust: queue: Store is required")
	case cfg.Verifier == nil:
		return nil, errors.New("keytrust: queue: Verifier is required")
	case cfg.Interval <= 0:
		return nil, fmt.Errorf("keytrust: queue: Interval must be positive, not %v", cfg.Interval)
	}
	q := &Queue{st: cfg.Store, v: cfg.Verifier, log: cfg.Log, interval: cfg.Interval, max: cfg.MaxQueued,
		queued: make(map[msgRef]struct{}), rescan: true}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	if q.max <= 0 {
		q.max = DefaultMaxQueued
	}
	return q, nil
}

// Add queues a stored message whose checks are pending. It never blocks.
func (q *Queue) Add(userID, messageID uuid.UUID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queued) >= q.max {
		q.rescan = true // the store still has it
		return
	}
	q.queued[msgRef{userID, messageID}] = struct{}{}
}

// Len is the number of messages queued for the next round.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queued)
}

// Run re-verifies until ctx ends, then returns nil.
func (q *Queue) Run(ctx context.Context) error {
	t := time.NewTicker(q.interval)
	defer t.Stop()
	for {
		q.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// giveUpAfter is how many messages in a row may stay pending before a
// round stops: the resolver is most likely still down, and each attempt
// costs a whole budget. The rest waits for the next round, in another
// (random) order, so that one domain whose DNS never answers cannot starve
// the others.
const giveUpAfter = 3

// round finds the pending messages in the store when it must, then retries
// what is queued.
func (q *Queue) round(ctx context.Context) {
	q.mu.Lock()
	rescan := q.rescan
	q.rescan = false
	q.mu.Unlock()
	if rescan {
		q.scan(ctx)
	}
	q.mu.Lock()
	batch := q.queued
	q.queued = make(map[msgRef]struct{})
	q.mu.Unlock()

	failed := 0
	for ref := range batch {
		if ctx.Err() != nil || failed >= giveUpAfter {
			q.Add(ref.user, ref.msg)
			continue
		}
		done, err := q.retry(ctx, ref)
		if err != nil {
			q.log.Warn("re-verification failed; will retry", "user", ref.user, "message", ref.msg, "err", err)
		}
		if done {
			failed = 0
			continue
		}
		failed++
		q.Add(ref.user, ref.msg)
	}
}

// scan queues every stored message whose checks are pending: they are
// durable there, whatever stopped the process that stored them.
func (q *Queue) scan(ctx context.Context) {
	users, err := q.st.ListUsers(ctx)
	if err != nil {
		q.log.Warn("re-verification scan failed; will retry", "err", err)
		q.setRescan()
		return
	}
	for _, u := range users {
		n := 0
		err := ingest.EachMessage(ctx, q.st, u.ID, func(m store.Message) error {
			if pending(m) {
				q.Add(u.ID, m.ID)
				n++
			}
			return nil
		})
		if err != nil {
			q.log.Warn("re-verification scan failed; will retry", "user", u.ID, "err", err)
			q.setRescan()
			return
		}
		if n > 0 {
			q.log.Info("messages with pending checks found", "user", u.ID, "pending", n)
		}
	}
}

// pending reports whether m is an inbound message whose stored checks are
// pending and that can be verified again (its raw bytes are kept).
func pending(m store.Message) bool {
	if !m.Inbound || m.RawHash == "" {
		return false
	}
	sec, err := ingest.DecodeSecurity(m.Security)
	return err == nil && len(sec.Features.Pending()) > 0
}

// retry re-verifies one message; done when nothing is left pending (or the
// message is gone).
func (q *Queue) retry(ctx context.Context, ref msgRef) (bool, error) {
	m, err := q.st.GetMessage(ctx, ref.user, ref.msg)
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if !pending(m) {
		return true, nil
	}
	sec, _ := ingest.DecodeSecurity(m.Security)
	return reverifyOne(ctx, q.st, q.v, ref.user, m, sec)
}

func (q *Queue) setRescan() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rescan = true
}
