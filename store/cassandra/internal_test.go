package cassandra

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
)

func TestSplitCQL(t *testing.T) {
	src := `-- a comment; with a semicolon;
CREATE TABLE IF NOT EXISTS a (
    x int PRIMARY KEY -- trailing words
);

  -- indented comment
CREATE TABLE IF NOT EXISTS b (y int PRIMARY KEY) WITH comment = 'b';
INSERT INTO b (y) VALUES (1)`
	got := splitCQL(src)
	if len(got) != 3 {
		t.Fatalf("splitCQL gave %d statements, want 3: %q", len(got), got)
	}
	if !strings.HasPrefix(got[0], "CREATE TABLE IF NOT EXISTS a (") || strings.HasSuffix(got[0], ";") {
		t.Errorf("statement 1 = %q", got[0])
	}
	if got[1] != "CREATE TABLE IF NOT EXISTS b (y int PRIMARY KEY) WITH comment = 'b'" {
		t.Errorf("statement 2 = %q", got[1])
	}
	if got[2] != "INSERT INTO b (y) VALUES (1)" {
		t.Errorf("statement 3 = %q", got[2])
	}
}

func TestEmbeddedMigrations(t *testing.T) {
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 {
		t.Fatalf("migrations = %+v, want to start at version 1", ms)
	}
	for i, m := range ms {
		if i > 0 && m.Version <= ms[i-1].Version {
			t.Errorf("migration %d out of order", m.Version)
		}
		for _, s := range m.Statements {
			u := strings.ToUpper(s)
			// Concurrent runs and re-runs rely on every creation being conditional.
			if strings.HasPrefix(u, "CREATE") && !strings.Contains(u, "IF NOT EXISTS") {
				t.Errorf("%04d_%s: CREATE without IF NOT EXISTS: %.60s", m.Version, m.Name, s)
			}
			// Portability to Cassandra 2.1 … 5 and ScyllaDB.
			for _, bad := range []string{"MATERIALIZED VIEW", "SASI", " JSON", "GROUP BY", " DATE,", " TIME,", " SMALLINT", " TINYINT", "FUNCTION"} {
				if strings.Contains(u, bad) {
					t.Errorf("%04d_%s: non-portable %q in %.60s", m.Version, m.Name, bad, s)
				}
			}
		}
	}
	if SchemaVersion() != ms[len(ms)-1].Version {
		t.Errorf("SchemaVersion = %d, want %d", SchemaVersion(), ms[len(ms)-1].Version)
	}
}

func TestLoadMigrationsRejectsBadFiles(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"bad name":  {"migrations/1_x.cql": {Data: []byte("SELECT 1;")}},
		"duplicate": {"migrations/0001_a.cql": {Data: []byte("SELECT 1;")}, "migrations/0001_b.cql": {Data: []byte("SELECT 1;")}},
		"empty":     {"migrations/0001_a.cql": {Data: []byte("-- nothing\n")}},
		"zero":      {"migrations/0000_a.cql": {Data: []byte("SELECT 1;")}},
	} {
		if _, err := loadMigrations(fsys); err == nil {
			t.Errorf("%s: loadMigrations accepted it", name)
		}
	}
	ms, err := loadMigrations(fstest.MapFS{
		"migrations/0002_b.cql": {Data: []byte("B;")},
		"migrations/0001_a.cql": {Data: []byte("A1;\nA2;")},
	})
	if err != nil || len(ms) != 2 || ms[0].Version != 1 || len(ms[0].Statements) != 2 || ms[1].Name != "b" {
		t.Errorf("loadMigrations = %+v, %v", ms, err)
	}
}

func TestTimes(t *testing.T) {
	now := time.Now()
	if got := fromNanos(sortNanos(now)); !got.Equal(now) {
		t.Errorf("round trip %v -> %v", now, got)
	}
	if tn(time.Time{}) != nil || !fromNanos(0).IsZero() {
		t.Error("the zero time must be stored as NULL and read back as zero")
	}
	if sortNanos(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)) != math.MaxInt64 ||
		sortNanos(time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC)) != math.MinInt64 {
		t.Error("out-of-range times must clamp, not overflow")
	}
	if got := bucketOf(time.Date(2026, 11, 30, 23, 30, 0, 0, time.FixedZone("x", -3600))); got != 202612 {
		t.Errorf("bucketOf = %d, want 202612 (UTC month)", got)
	}
}

func TestCursors(t *testing.T) {
	id := uuid.Must(uuid.NewV7())
	ac := activityCursor{at: -5, id: id}
	if got, err := parseActivityCursor(ac.String()); err != nil || got != ac {
		t.Errorf("activity cursor round trip: %+v, %v", got, err)
	}
	mc := messageCursor{bucket: 202611, at: 1234, id: id}
	if got, err := parseMessageCursor(mc.String()); err != nil || got != mc {
		t.Errorf("message cursor round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{"x", "1_notauuid", "a_" + id.String()} {
		if _, err := parseActivityCursor(bad); err == nil {
			t.Errorf("parseActivityCursor(%q) accepted", bad)
		}
		if _, err := parseMessageCursor(bad); err == nil {
			t.Errorf("parseMessageCursor(%q) accepted", bad)
		}
	}
}

// TestMigrateConcurrent bootstraps a fresh keyspace, then runs a pending
// migration from several goroutines at once (as several processes starting
// together would). The pending migration holds a statement that fails when
// run twice (ALTER TABLE … ADD), so only the lock keeps them all from failing.
func TestMigrateConcurrent(t *testing.T) {
	hosts := os.Getenv("CALIOPEN_TEST_CASSANDRA")
	switch {
	case hosts == "" && os.Getenv("CI") != "":
		t.Fatal("CALIOPEN_TEST_CASSANDRA is not set")
	case hosts == "":
		t.Skip("CALIOPEN_TEST_CASSANDRA not set")
	}
	cfg := Config{
		Hosts:    strings.Split(hosts, ","),
		Keyspace: fmt.Sprintf("caliopen_mig_%d", time.Now().UnixNano()%1e9),
		Timeout:  20 * time.Second, ConnectTimeout: 10 * time.Second,
		Consistency: "ONE", Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}", // one node
	}
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		s, err := connect(context.Background(), cfg, "", log)
		if err != nil {
			t.Logf("dropping %s: %v", cfg.Keyspace, err)
			return
		}
		defer s.Close()
		if err := s.Query(`DROP KEYSPACE IF EXISTS ` + cfg.Keyspace).Exec(); err != nil {
			t.Logf("dropping %s: %v", cfg.Keyspace, err)
		}
	})

	v1 := fstest.MapFS{"migrations/0001_a.cql": {Data: []byte("CREATE TABLE IF NOT EXISTS t1 (k int PRIMARY KEY);\n")}}
	if err := migrate(ctx, cfg, log, v1); err != nil {
		t.Fatalf("bootstrap migrate: %v", err)
	}
	// The second version is one this binary does not know.
	next := SchemaVersion() + 1
	v2 := fstest.MapFS{
		"migrations/0001_a.cql":                    v1["migrations/0001_a.cql"],
		fmt.Sprintf("migrations/%04d_b.cql", next): {Data: []byte("ALTER TABLE t1 ADD v text;\nCREATE TABLE IF NOT EXISTS t2 (k int PRIMARY KEY);\n")},
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = migrate(ctx, cfg, log, v2) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent migrate #%d: %v", i, err)
		}
	}

	sess, err := connect(ctx, cfg, cfg.Keyspace, log)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.Query(`INSERT INTO t1 (k, v) VALUES (1, 'x')`).Exec(); err != nil {
		t.Errorf("migration %04d not applied: %v", next, err)
	}
	applied, err := appliedVersions(ctx, sess)
	if err != nil || len(applied) != 2 || !applied[1] || !applied[next] {
		t.Errorf("applied versions = %v, %v; want 1 and %d", applied, err, next)
	}
	if err := migrate(ctx, cfg, log, v2); err != nil {
		t.Errorf("migrate again (nothing to do): %v", err)
	}
	// A run that stops after an ALTER TABLE … ADD (Cassandra 2.1 has no
	// ADD IF NOT EXISTS) is run again: the column is there, the ALTER is
	// skipped, the rest is applied.
	v3 := fstest.MapFS{
		"migrations/0001_a.cql":                      v2["migrations/0001_a.cql"],
		fmt.Sprintf("migrations/%04d_b.cql", next):   v2[fmt.Sprintf("migrations/%04d_b.cql", next)],
		fmt.Sprintf("migrations/%04d_c.cql", next+1): {Data: []byte("ALTER TABLE t1 ADD w text;\nINSERT INTO no_such_table (k) VALUES (1);\n")},
	}
	if err := migrate(ctx, cfg, log, v3); err == nil {
		t.Fatal("a migration with a failing statement succeeded")
	}
	v3[fmt.Sprintf("migrations/%04d_c.cql", next+1)] = &fstest.MapFile{Data: []byte("ALTER TABLE t1 ADD w text;\nCREATE TABLE IF NOT EXISTS t3 (k int PRIMARY KEY);\n")}
	if err := migrate(ctx, cfg, log, v3); err != nil {
		t.Errorf("migrate after a run interrupted after its ALTER: %v", err)
	}
	// This binary's own schema knows no version next: Open must refuse.
	if _, err := Open(ctx, cfg, log); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open on a schema newer than the binary: %v, want a refusal", err)
	}
}

func TestSlogAdapterDropsRepeats(t *testing.T) {
	var buf strings.Builder
	a := newSlogAdapter(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for range 5 {
		a.Error("Unable to reconnect control connection.")
	}
	a.Warning("Node is DOWN.")
	a.Info("Node is UP.")
	out := buf.String()
	if n := strings.Count(out, "Unable to reconnect"); n != 1 {
		t.Errorf("repeated error logged %d times within %v, want once:\n%s", n, logRepeatEvery, out)
	}
	if !strings.Contains(out, "Node is DOWN.") || !strings.Contains(out, "level=DEBUG msg=\"Node is UP.\"") {
		t.Errorf("distinct messages missing or at the wrong level:\n%s", out)
	}
	if strings.Contains(out, "level=ERROR") {
		t.Errorf("driver errors must log at WARN (ours report failures to callers):\n%s", out)
	}
}
