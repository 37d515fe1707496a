// Package cassandratest gives tests a migrated Cassandra store.
//
// Tests run against the cluster named by CALIOPEN_TEST_CASSANDRA
// ("host:port", several separated by commas), started for example with
// `scripts/cassandra.sh start /tmp/caliopen-cassandra 9042`. When it is unset
// the test is skipped, or fails when CI is set: CI must not silently skip.
//
// All tests share the keyspace Keyspace, migrated once per test process;
// concurrent test processes are safe (Migrate serialises on a lock). The
// keyspace outlives runs, so tests must isolate themselves with fresh IDs
// and names instead of assuming it is empty.
package cassandratest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caliopen/caliopen/store/cassandra"
)

// EnvVar names the cluster tests use.
const EnvVar = "CALIOPEN_TEST_CASSANDRA"

// Keyspace is the keyspace every test shares.
const Keyspace = "caliopen_test"

// migrated runs the migration once per process: each schema change costs
// about a second, far too slow to repeat per test. Package state is the
// point here: it is what "once per process" means.
var migrated = sync.OnceValue(func() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// `go test ./...` runs packages as parallel processes, and on a fresh
	// cluster they would all create the keyspace's first tables at once,
	// which Cassandra before 5.0 does not survive (see cassandra.Migrate).
	// A file lock makes them take turns on this machine.
	unlock, err := lockFile(filepath.Join(os.TempDir(), "caliopen-cassandratest-"+Keyspace+".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	return cassandra.Migrate(ctx, config(hosts()), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
})

// lockFile takes an exclusive flock on path, waiting for it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("migration lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("migration lock file %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

func hosts() []string {
	var out []string
	for h := range strings.SplitSeq(os.Getenv(EnvVar), ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

func config(hosts []string) cassandra.Config {
	return cassandra.Config{
		Hosts:    hosts,
		Keyspace: Keyspace,
		// One node in tests (scripts/cassandra.sh: batch commit log).
		Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}",
		Consistency: "ONE",
		// Generous: the test machine's cores are shared with other builds.
		Timeout:        20 * time.Second,
		ConnectTimeout: 10 * time.Second,
	}
}

// Config returns the configuration of the migrated test keyspace, skipping
// (or failing under CI) when no cluster is configured.
func Config(tb testing.TB) cassandra.Config {
	tb.Helper()
	hs := hosts()
	if len(hs) == 0 {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not set: CI must run the Cassandra tests (start one with scripts/cassandra.sh)", EnvVar)
		}
		tb.Skipf("%s not set: skipping Cassandra tests", EnvVar)
	}
	if err := migrated(); err != nil {
		tb.Fatalf("migrating keyspace %s on %v: %v", Keyspace, hs, err)
	}
	return config(hs)
}

// Open returns a store on the migrated test keyspace, closed when the test ends.
func Open(tb testing.TB) *cassandra.Store {
	tb.Helper()
	cfg := Config(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := cassandra.Open(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		tb.Fatalf("opening Cassandra store: %v", err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}
