// Package embedded is the default store engine: one bbolt file, no server.
//
// Every query has its own bucket laid out like an index, so reads are a
// seek plus the rows they return. Global data (domains, users, addresses,
// aliases, tokens, blobs) lives in top-level buckets; everything a user owns
// lives in one nested bucket per user (see mailbox), which makes isolation
// structural and DeleteUser a single bucket deletion.
//
// bbolt serializes write transactions and fsyncs each commit, so writes go
// through a group commit (see committer): concurrent writers share one
// transaction and one fsync instead of queueing for their own.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/caliopen/caliopen/store"
)

// schemaVersion is the layout this code reads and writes. Bump it, with a
// migration in Open, when a bucket or key format changes.
//
// 2: blob reference counts (bBlobRefs) and per-user usage (bUsage).
const schemaVersion = 2

// DefaultLockTimeout is how long Open waits for another process to release
// the file lock before giving up.
const DefaultLockTimeout = 5 * time.Second

type options struct {
	lockTimeout time.Duration
	noSync      bool
	logger      *slog.Logger
}

// Option configures Open.
type Option func(*options)

// WithLockTimeout sets how long Open waits for the file lock held by another
// process (DefaultLockTimeout if unset; must be > 0, bbolt waits forever on 0).
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.lockTimeout = d
		}
	}
}

// WithNoSync skips fsync on commit. A crash may then lose or corrupt recent
// writes: for tests and one-off bulk imports only, never for mail delivery.
func WithNoSync() Option { return func(o *options) { o.noSync = true } }

// WithLogger sets the logger (slog.Default() if unset).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// Store is the embedded engine. It implements store.Store (its methods are
// documented there, with the semantics pinned down by store/storetest) and
// is safe for concurrent use within one process; the file lock keeps other
// processes out.
type Store struct {
	db     *bolt.DB
	log    *slog.Logger
	commit *committer
	dir    dirCache
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its directory if missing) the store file at path.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{lockTimeout: DefaultLockTimeout, logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("embedded: create directory for %s: %w", path, err)
	}
	db, err := openCurrent(path, 0o600, &bolt.Options{
		Timeout: o.lockTimeout,
		NoSync:  o.noSync,
		// The hashmap freelist keeps allocation fast once the file is large
		// and fragmented (many deleted messages).
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("embedded: open %s: store file is locked by another process (waited %s): %w",
			path, o.lockTimeout, store.ErrUnavailable)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	if err := initSchema(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	s := &Store{db: db, log: o.logger.With("component", "store", "engine", "embedded")}
	s.commit = newCommitter(db)
	s.log.Debug("store opened", "path", path, "nosync", o.noSync)
	return s, nil
}

// openCurrent is bolt.Open, made safe against a concurrent Compact: bbolt
// opens the file, then waits for its lock; if Compact renames its new file
// over the path meanwhile, the lock we get is on the old, unlinked file, and
// every write to it would be lost. So once locked, check that the file we
// hold is still the one at path, and start again if not.
func openCurrent(path string, mode os.FileMode, o *bolt.Options) (*bolt.DB, error) {
	const attempts = 10 // each one means a Compact finished: more is a loop gone wrong
	for range attempts {
		var f *os.File
		opts := *o
		opts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
			var err error
			f, err = os.OpenFile(name, flag, perm)
			return f, err
		}
		db, err := bolt.Open(path, mode, &opts)
		if err != nil {
			return nil, err
		}
		held, err := f.Stat()
		if err != nil {
			_ = db.Close()
			return nil, err
		}
		now, err := os.Stat(path)
		if err == nil && os.SameFile(held, now) {
			return db, nil
		}
		if err := db.Close(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("the file was replaced %d times while being opened", attempts)
}

// initSchema creates the top-level buckets and checks the schema version.
func initSchema(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range topBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bMeta)
		v := meta.Get(keySchema)
		switch {
		case v == nil:
			return meta.Put(keySchema, []byte{schemaVersion})
		case len(v) != 1:
			return fmt.Errorf("unreadable schema version %x: not a Caliopen store file?", v)
		case v[0] > schemaVersion:
			return fmt.Errorf("schema version %d is newer than this program's (%d): upgrade Caliopen", v[0], schemaVersion)
		case v[0] < 2:
			if err := countRefs(tx); err != nil {
				return fmt.Errorf("migrate to schema 2: %w", err)
			}
			return meta.Put(keySchema, []byte{schemaVersion})
		}
		return nil
	})
}

// Close closes the file and releases its lock. Calls after the first are no-ops.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("embedded: close: %w", err)
	}
	return nil
}

// Ping reports whether the store is open.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, "ping", func(*bolt.Tx) error { return nil })
}

// view runs fn in a read-only transaction.
func (s *Store) view(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := s.usable(ctx); err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return s.wrap(op, s.db.View(fn))
}

// update runs fn in a read-write transaction, possibly shared with other
// writers (group commit). fn may run more than once: it must assign, not
// accumulate, whatever it reports to its caller, and must not depend on
// anything outside the transaction that changes between runs.
func (s *Store) update(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := s.usable(ctx); err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return s.wrap(op, s.commit.do(fn))
}

func (s *Store) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	if s.closed.Load() {
		return fmt.Errorf("%w: store is closed", store.ErrUnavailable)
	}
	return nil
}

// wrap names the operation and classifies err: model errors pass through;
// anything else is a storage failure (closed file, I/O error, disk full),
// reported as ErrUnavailable so that mail is deferred (4xx), never bounced.
func (s *Store) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExists),
		errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("embedded: %s: %w", op, err)
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("embedded: %s: %w: store is closed", op, store.ErrUnavailable)
	default:
		s.log.Error("storage failure", "op", op, "err", err)
		return fmt.Errorf("embedded: %s: %w: %w", op, store.ErrUnavailable, err)
	}
}

func notFound(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), store.ErrNotFound)
}

func exists(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), store.ErrExists)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), store.ErrInvalid)
}

// now is the store's clock: UTC, without the monotonic reading.
func now() time.Time { return time.Now().UTC().Round(0) }
