package embedded

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openBolt(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestCommitterBatchesAndIsolatesFailures holds the leader's transaction
// until every other write has queued, so they must share the next one; the
// failing and panicking writes in that batch must leave no trace and must
// not fail their neighbours.
func TestCommitterBatchesAndIsolatesFailures(t *testing.T) {
	db := openBolt(t)
	c := newCommitter(db)
	release := make(chan struct{})
	leaderDone := make(chan error, 1)
	go func() {
		leaderDone <- c.do(func(tx *bolt.Tx) error {
			<-release
			return tx.Bucket([]byte("b")).Put([]byte("leader"), []byte("x"))
		})
	}()
	// Wait until the leader is inside its transaction.
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.busy })

	const n = 30
	errs := make([]error, n)
	txIDs := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = c.do(func(tx *bolt.Tx) error {
				txIDs[i] = tx.ID()
				key := fmt.Appendf(nil, "k%02d", i)
				if err := tx.Bucket([]byte("b")).Put(key, []byte("v")); err != nil {
					return err
				}
				switch i % 10 {
				case 3:
					return fmt.Errorf("op %d: %w", i, errTest) // after writing: must be undone
				case 7:
					panic("op panics")
				}
				return nil
			})
		})
	}
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == n })
	close(release)
	wg.Wait()
	if err := <-leaderDone; err != nil {
		t.Fatalf("leader: %v", err)
	}

	shared := map[int]int{}
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range n {
			stored := b.Get(fmt.Appendf(nil, "k%02d", i)) != nil
			switch i % 10 {
			case 3:
				if !errors.Is(errs[i], errTest) || stored {
					t.Errorf("failing op %d: err %v, stored %v; want its own error and nothing stored", i, errs[i], stored)
				}
			case 7:
				if errs[i] == nil || stored {
					t.Errorf("panicking op %d: err %v, stored %v; want an error and nothing stored", i, errs[i], stored)
				}
			default:
				if errs[i] != nil || !stored {
					t.Errorf("op %d: err %v, stored %v; want success", i, errs[i], stored)
				}
				shared[txIDs[i]]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(shared) != 1 {
		t.Errorf("the %d queued successful writes used %d transactions, want 1 (group commit)", n-6, len(shared))
	}
}

var errTest = errors.New("test failure")

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCommitterManyWriters(t *testing.T) {
	db := openBolt(t)
	c := newCommitter(db)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := c.do(func(tx *bolt.Tx) error {
					return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "%d-%d", w, i), nil)
				}); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	_ = db.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket([]byte("b")).Stats().KeyN; got != writers*each {
			t.Errorf("stored %d keys, want %d", got, writers*each)
		}
		return nil
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy || len(c.queue) != 0 {
		t.Errorf("committer not idle after all writes: busy %v, queue %d", c.busy, len(c.queue))
	}
}
