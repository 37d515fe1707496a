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

// round retries what is queued, or scans the store when it must.
func (q *Queue) round(ctx context.Context) {
	q.mu.Lock()
	batch, rescan := q.queued, q.rescan
	q.queued, q.rescan = make(map[msgRef]struct{}), false
	q.mu.Unlock()
	if rescan {
		// The scan sees every pending message, the batch's included.
		q.scan(ctx)
		return
	}
	for ref := range batch {
		if ctx.Err() != nil {
			q.requeue(ref)
			continue
		}
		done, err := q.retry(ctx, ref)
		if err != nil {
			q.log.Warn("re-verification failed; will retry", "user", ref.user, "message", ref.msg, "err", err)
		}
		if !done {
			q.requeue(ref)
		}
	}
}

func (q *Queue) scan(ctx context.Context) {
	users, err := q.st.ListUsers(ctx)
	if err != nil {
		q.log.Warn("re-verification scan failed; will retry", "err", err)
		q.setRescan()
		return
	}
	for _, u := range users {
		stats, err := reverifyUser(ctx, q.st, q.v, u.ID, func(id uuid.UUID) { q.Add(u.ID, id) })
		if err != nil {
			q.log.Warn("re-verification scan failed; will retry", "user", u.ID, "err", err)
			q.setRescan()
			return
		}
		if stats.Pending > 0 {
			q.log.Info("re-verified pending messages", "user", u.ID, "pending", stats.Pending, "completed", stats.Completed)
		}
	}
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
	if !m.Inbound || m.RawHash == "" {
		return true, nil
	}
	sec, err := ingest.DecodeSecurity(m.Security)
	if err != nil || len(sec.Features.Pending()) == 0 {
		return true, nil
	}
	return reverifyOne(ctx, q.st, q.v, ref.user, m, sec)
}

func (q *Queue) requeue(ref msgRef) { q.Add(ref.user, ref.msg) }

func (q *Queue) setRescan() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rescan = true
}
