package cassandra

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

//go:embed migrations/*.cql
var migrationFS embed.FS

// migration is one embedded NNNN_name.cql file split into statements.
type migration struct {
	Version    int
	Name       string
	Statements []string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.cql$`)

// loadMigrations parses the embedded files, in version order.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.cql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var out []migration
	seen := map[int]string{}
	for _, n := range names {
		m := migrationName.FindStringSubmatch(path.Base(n))
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name is not NNNN_name.cql", n)
		}
		v, _ := strconv.Atoi(m[1])
		if v == 0 {
			return nil, fmt.Errorf("migration file %s: versions start at 0001", n)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migration files %s and %s share version %d", prev, n, v)
		}
		seen[v] = n
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", n, err)
		}
		stmts := splitCQL(string(b))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration file %s has no statements", n)
		}
		out = append(out, migration{Version: v, Name: m[2], Statements: stmts})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// splitCQL drops "--" comment lines and splits on ";" ending a line. Our
// migration files keep to that shape (no ";" inside string literals at a line end).
func splitCQL(src string) []string {
	var (
		out []string
		cur strings.Builder
	)
	for _, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// SchemaVersion is the newest schema version this binary knows.
func SchemaVersion() int {
	ms, err := loadMigrations(migrationFS)
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

const (
	lockName = "migrate"
	// The lock expires if its holder dies; the holder refreshes it between
	// statements, each of which takes about a second.
	lockTTL = 60
)

// Migrate creates the keyspace if missing and applies the embedded migrations
// not yet recorded in schema_migrations, in order. Concurrent runs serialise
// on a lock row taken with a lightweight transaction, and every statement is
// IF NOT EXISTS, so a run interrupted half-way is simply run again.
//
// One limit remains, Cassandra's own: before 5.0, two nodes or clients
// creating the same table at the same instant can leave the keyspace with
// conflicting table IDs ("Column family ID mismatch", CASSANDRA-5202), and
// IF NOT EXISTS does not prevent it. The lock covers every table but its own,
// which is created after a random pause and a second look; still, run the
// first migration of a new keyspace from one process (`caliopen migrate`
// in the deployment), not from every server starting at once.
func Migrate(ctx context.Context, cfg Config, log *slog.Logger) error {
	return migrate(ctx, cfg, log, migrationFS)
}

func migrate(ctx context.Context, cfg Config, log *slog.Logger, fsys fs.FS) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	ms, err := loadMigrations(fsys)
	if err != nil {
		return err
	}

	// Create the keyspace from a session bound to none.
	boot, err := connect(ctx, cfg, "", log)
	if err != nil {
		return err
	}
	err = ensure(ctx, boot, log, "keyspace "+cfg.Keyspace,
		fmt.Sprintf(`CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s`, cfg.Keyspace, cfg.Replication),
		func() bool { return keyspaceExists(ctx, boot, cfg.Keyspace) })
	boot.Close()
	if err != nil {
		return wrap("migrate: create keyspace "+cfg.Keyspace, err)
	}

	sess, err := connect(ctx, cfg, cfg.Keyspace, log)
	if err != nil {
		return err
	}
	defer sess.Close()
	// The lock table is the one schema change made outside the lock: pause a
	// random moment and look again, so that processes started together do
	// not all create it at the same instant.
	if !tableExists(ctx, sess, "schema_lock") {
		select {
		case <-ctx.Done():
			return fmt.Errorf("migrate: %w", ctx.Err())
		case <-time.After(time.Duration(rand.Int64N(int64(3 * time.Second)))):
		}
	}
	if err := ensure(ctx, sess, log, "table schema_lock",
		`CREATE TABLE IF NOT EXISTS schema_lock (name text PRIMARY KEY, owner uuid, since bigint)`,
		func() bool { return tableExists(ctx, sess, "schema_lock") }); err != nil {
		return wrap("migrate: create schema_lock", err)
	}
	owner := uuid.New()
	if err := acquireLock(ctx, sess, owner, log); err != nil {
		return err
	}
	defer func() {
		// Release with a fresh context: ctx may be what ended the run.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := sess.Query(`DELETE FROM schema_lock WHERE name = ? IF owner = ?`, lockName, gocql.UUID(owner)).
			WithContext(rctx).MapScanCAS(map[string]any{}); err != nil {
			log.Warn("migrate: releasing lock failed; it expires by itself", "err", err, "ttl_s", lockTTL)
		}
	}()

	if err := ensure(ctx, sess, log, "table schema_migrations",
		`CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_at bigint)`,
		func() bool { return tableExists(ctx, sess, "schema_migrations") }); err != nil {
		return wrap("migrate: create schema_migrations", err)
	}
	applied, err := appliedVersions(ctx, sess)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		start := time.Now()
		log.Info("migrate: applying", "keyspace", cfg.Keyspace, "version", m.Version, "name", m.Name)
		for i, s := range m.Statements {
			if columnAdded(ctx, sess, s) {
				continue // a run interrupted after this statement: ADD is not idempotent
			}
			if err := sess.Query(s).WithContext(ctx).Exec(); err != nil {
				return wrap(fmt.Sprintf("migrate: %04d_%s statement %d", m.Version, m.Name, i+1), err)
			}
			if err := refreshLock(ctx, sess, owner); err != nil {
				return err
			}
		}
		if err := sess.Query(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.Version, m.Name, time.Now().UnixNano()).WithContext(ctx).Exec(); err != nil {
			return wrap("migrate: record version", err)
		}
		log.Info("migrate: applied", "version", m.Version, "name", m.Name, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// ensure makes sure a schema object exists. Checking first keeps the common
// case (already there) free of schema changes. Two processes creating the
// same object at once can make Cassandra refuse one of the statements even
// with IF NOT EXISTS ("Column family ID mismatch"): what matters is that the
// object exists once the schema has settled, so that is what is checked.
func ensure(ctx context.Context, sess *gocql.Session, log *slog.Logger, what, stmt string, exists func() bool) error {
	if exists() {
		return nil
	}
	err := sess.Query(stmt).WithContext(ctx).Exec()
	if err == nil {
		return nil
	}
	for range 20 {
		_ = sess.AwaitSchemaAgreement(ctx)
		if exists() {
			log.Info("migrate: concurrent creation settled", "object", what, "err", err)
			// Give the losing definition time to be dropped everywhere before
			// the object is used (a lightweight transaction on a table whose
			// definition is still in flux is not to be trusted).
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Second):
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
	return err
}

// alterAdd matches the one non-idempotent statement migrations use:
// Cassandra before 5.0 has no ALTER TABLE … ADD IF NOT EXISTS.
var alterAdd = regexp.MustCompile(`(?i)^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+(\w+)\s`)

// columnAdded reports whether stmt adds a column that already exists.
func columnAdded(ctx context.Context, sess *gocql.Session, stmt string) bool {
	m := alterAdd.FindStringSubmatch(stmt)
	return m != nil && sess.Query(`SELECT `+m[2]+` FROM `+m[1]+` LIMIT 1`).WithContext(ctx).Exec() == nil
}

func tableExists(ctx context.Context, sess *gocql.Session, table string) bool {
	return sess.Query(`SELECT * FROM `+table+` LIMIT 1`).WithContext(ctx).Exec() == nil
}

// keyspaceExists reads the schema tables: system_schema on Cassandra 3+ and
// ScyllaDB, system.schema_keyspaces before.
func keyspaceExists(ctx context.Context, sess *gocql.Session, keyspace string) bool {
	var name string
	for _, q := range []string{
		`SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?`,
		`SELECT keyspace_name FROM system.schema_keyspaces WHERE keyspace_name = ?`,
	} {
		if err := sess.Query(q, keyspace).WithContext(ctx).Scan(&name); err == nil {
			return true
		}
	}
	return false
}

func acquireLock(ctx context.Context, sess *gocql.Session, owner uuid.UUID, log *slog.Logger) error {
	waited := false
	for {
		cur := map[string]any{}
		ok, err := sess.Query(`INSERT INTO schema_lock (name, owner, since) VALUES (?, ?, ?) IF NOT EXISTS USING TTL `+strconv.Itoa(lockTTL),
			lockName, gocql.UUID(owner), time.Now().UnixNano()).WithContext(ctx).MapScanCAS(cur)
		if err != nil {
			return wrap("migrate: take lock", err)
		}
		if ok {
			return nil
		}
		if !waited {
			log.Info("migrate: another process is migrating; waiting", "holder", fmt.Sprint(cur["owner"]))
			waited = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migrate: waiting for the migration lock: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func refreshLock(ctx context.Context, sess *gocql.Session, owner uuid.UUID) error {
	ok, err := sess.Query(`UPDATE schema_lock USING TTL `+strconv.Itoa(lockTTL)+` SET owner = ?, since = ? WHERE name = ? IF owner = ?`,
		gocql.UUID(owner), time.Now().UnixNano(), lockName, gocql.UUID(owner)).WithContext(ctx).MapScanCAS(map[string]any{})
	if err != nil {
		return wrap("migrate: refresh lock", err)
	}
	if !ok {
		return errors.New("migrate: lost the migration lock (expired?); run migrate again")
	}
	return nil
}

func appliedVersions(ctx context.Context, sess *gocql.Session) (map[int]bool, error) {
	iter := sess.Query(`SELECT version FROM schema_migrations`).WithContext(ctx).Iter()
	out := map[int]bool{}
	var v int
	for iter.Scan(&v) {
		out[v] = true
	}
	if err := iter.Close(); err != nil {
		return nil, wrap("read schema_migrations", err)
	}
	return out, nil
}

// checkSchema fails unless every embedded migration is applied and none
// unknown to this binary is.
func checkSchema(ctx context.Context, sess *gocql.Session, keyspace string) error {
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, sess)
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			return err
		}
		return fmt.Errorf("%w: keyspace %q has no readable schema_migrations table: run `caliopen migrate`: %v",
			store.ErrInvalid, keyspace, err)
	}
	known := map[int]bool{}
	var missing []string
	for _, m := range ms {
		known[m.Version] = true
		if !applied[m.Version] {
			missing = append(missing, fmt.Sprintf("%04d_%s", m.Version, m.Name))
		}
	}
	for v := range applied {
		if !known[v] {
			return fmt.Errorf("%w: keyspace %q has schema version %04d, newer than this binary knows (%04d): upgrade caliopen",
				store.ErrInvalid, keyspace, v, SchemaVersion())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: keyspace %q schema is not current, missing migrations %s: run `caliopen migrate`",
			store.ErrInvalid, keyspace, strings.Join(missing, ", "))
	}
	return nil
}
