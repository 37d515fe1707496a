package embedded

import (
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// maxBatch bounds how many writes share one transaction, so one commit
// (and the latency of everyone in it) stays bounded under load.
const maxBatch = 256

// committer is a group commit in front of bbolt's single writer. The first
// writer to arrive becomes the leader and runs every queued write in one
// transaction (one fsync); writers arriving meanwhile queue, and the first of
// them leads the next batch. Unlike bolt.DB.Batch there is no timer: a lone
// writer commits at once, concurrent writers batch by themselves.
type committer struct {
	db    *bolt.DB
	mu    sync.Mutex
	queue []*writeOp
	busy  bool // a leader is running a batch
}

type writeOp struct {
	fn  func(*bolt.Tx) error
	err error
	// wake receives false when the op is done (err is set), true when its
	// goroutine must lead the next batch.
	wake chan bool
}

func newCommitter(db *bolt.DB) *committer { return &committer{db: db} }

// do runs fn in a write transaction, maybe shared, and returns its error or
// the commit's.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	op := &writeOp{fn: fn, wake: make(chan bool, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, op)
	if c.busy {
		c.mu.Unlock()
		if lead := <-op.wake; !lead {
			return op.err
		}
		c.mu.Lock()
	}
	c.busy = true
	n := min(len(c.queue), maxBatch)
	batch := c.queue[:n:n]
	c.queue = c.queue[n:]
	c.mu.Unlock()

	c.run(batch, op)

	c.mu.Lock()
	if len(c.queue) > 0 {
		c.queue[0].wake <- true // hand over: the next leader is already waiting
	} else {
		c.busy = false
		c.queue = nil // drop the backing array once drained
	}
	c.mu.Unlock()
	return op.err
}

// run commits batch, then wakes every op in it but self. An op whose fn
// fails gets its own error and is dropped; the transaction is rolled back
// and the rest rerun, so a failed write never leaves partial changes behind
// and never fails its neighbours.
func (c *committer) run(batch []*writeOp, self *writeOp) {
	pending := batch
	for len(pending) > 0 {
		failed := -1
		err := updateSafe(c.db, func(tx *bolt.Tx) error {
			for i, op := range pending {
				if err := callSafe(op.fn, tx); err != nil {
					failed = i
					op.err = err
					return errOpFailed
				}
			}
			return nil
		})
		if failed >= 0 && errors.Is(err, errOpFailed) {
			pending = append(pending[:failed:failed], pending[failed+1:]...)
			continue
		}
		for _, op := range pending {
			op.err = err // nil, or the commit's failure, shared by all
		}
		break
	}
	for _, op := range batch {
		if op != self {
			op.wake <- false
		}
	}
}

var errOpFailed = errors.New("write op failed")

// updateSafe is db.Update with a panic (bbolt's own, on a damaged file)
// turned into an error: if the leader's goroutine unwound, a recover further
// up (an HTTP middleware) would leave every other writer waiting forever.
func updateSafe(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: panic in commit: %v", r)
		}
	}()
	return db.Update(fn)
}

// callSafe turns a panic in fn into an error: the leader runs other
// goroutines' writes and must survive to wake them.
func callSafe(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: panic in write: %v", r)
		}
	}()
	return fn(tx)
}
