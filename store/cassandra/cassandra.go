// Package cassandra is the store.Store engine on Apache Cassandra (2.1
// through 5.x) and ScyllaDB, through the gocql driver (protocol v3+).
//
// The schema lives in versioned CQL files embedded from migrations/ and is
// applied by Migrate; Open refuses a keyspace whose schema is not current.
// The table comments in migrations/0001_init.cql give each table's query.
//
// Design choices, briefly:
//   - Partitions are one entity, one user, or one user+conversation(+month);
//     none is shared by all users. ListDomains and ListUsers (admin only)
//     page through small tables.
//   - Uniqueness and idempotency (user names, addresses, domains,
//     conversation keys, message dedup keys, contact channels) are decided by
//     lightweight transactions (INSERT … IF NOT EXISTS). A contender writes
//     its row first and claims the key second, so whoever reads the winner's
//     ID finds its row; losers drop theirs.
//   - Message and unread counts are counter columns changed only by the
//     winner of a transaction (the dedup claim, a read-flag change, a delete),
//     so they stay exact under concurrent redelivery; a retry after a winner
//     failed repairs a count it lost from the message index (counts.go).
//   - The conversation list is a per-user index clustered by (last activity,
//     ID) descending, paged by cursor in O(page). The activity summary is
//     written with USING TIMESTAMP = the message's received_at, so racing
//     writers converge on the newest message; index rows left behind by a
//     race are recognised and dropped by readers.
//   - A conversation's messages are indexed per month of received_at, so no
//     partition grows without bound; message rows are one partition each.
//   - Times are bigint Unix nanoseconds: exact round trips, like the embedded
//     engine.
//
// Errors: unreachable nodes, timeouts, overload and closed sessions wrap
// store.ErrUnavailable; absent rows wrap store.ErrNotFound.
package cassandra

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// Config says how to reach the cluster.
type Config struct {
	// Hosts are contact points, "host" or "host:port" (default port 9042).
	Hosts []string
	// Keyspace holds Caliopen's tables (default "caliopen").
	Keyspace string
	// Replication is the CQL map literal used when Migrate creates the keyspace
	// (default {'class':'SimpleStrategy','replication_factor':3}: with QUORUM,
	// every write acknowledged by two replicas; see CheckDurability).
	Replication string
	// Consistency for reads and writes, e.g. "LOCAL_QUORUM" (default QUORUM).
	// Lightweight transactions use LOCAL_SERIAL when it starts with LOCAL_, else SERIAL.
	Consistency string
	// Timeout per request (default 5 s) and per connection attempt (default 5 s).
	Timeout, ConnectTimeout time.Duration
	// Username and Password enable PasswordAuthenticator when Username is set.
	Username, Password string
}

const (
	defaultKeyspace    = "caliopen"
	defaultReplication = "{'class':'SimpleStrategy','replication_factor':3}"
	defaultTimeout     = 5 * time.Second
)

var identRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,47}$`)

// withDefaults validates cfg and fills in defaults.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Hosts) == 0 {
		return cfg, fmt.Errorf("%w: cassandra: no hosts configured", store.ErrInvalid)
	}
	if cfg.Keyspace == "" {
		cfg.Keyspace = defaultKeyspace
	}
	// The keyspace name is spliced into CQL text, so only plain identifiers pass.
	if !identRE.MatchString(cfg.Keyspace) {
		return cfg, fmt.Errorf("%w: cassandra: keyspace %q is not a plain identifier", store.ErrInvalid, cfg.Keyspace)
	}
	if cfg.Replication == "" {
		cfg.Replication = defaultReplication
	}
	if r := strings.TrimSpace(cfg.Replication); !strings.HasPrefix(r, "{") || !strings.HasSuffix(r, "}") || strings.Contains(r, ";") {
		return cfg, fmt.Errorf("%w: cassandra: replication %q is not a CQL map literal", store.ErrInvalid, cfg.Replication)
	}
	if cfg.Consistency == "" {
		cfg.Consistency = "QUORUM"
	}
	if _, err := gocql.ParseConsistencyWrapper(cfg.Consistency); err != nil {
		return cfg, fmt.Errorf("%w: cassandra: consistency %q: %v", store.ErrInvalid, cfg.Consistency, err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultTimeout
	}
	return cfg, nil
}

// cluster builds the driver configuration; keyspace "" connects without one.
func (cfg Config) cluster(keyspace string, log *slog.Logger) *gocql.ClusterConfig {
	c := gocql.NewCluster(cfg.Hosts...)
	c.Keyspace = keyspace
	c.Consistency = gocql.ParseConsistency(cfg.Consistency)
	if strings.HasPrefix(strings.ToUpper(cfg.Consistency), "LOCAL_") {
		c.SerialConsistency = gocql.LocalSerial
	} else {
		c.SerialConsistency = gocql.Serial
	}
	c.Timeout = cfg.Timeout
	c.ConnectTimeout = cfg.ConnectTimeout
	// Come back quickly after an outage: the milter answers 4xx meanwhile and
	// should stop doing so soon after the cluster returns (driver default: 60 s).
	c.ReconnectInterval = 2 * time.Second
	c.ReconnectionPolicy = &gocql.ConstantReconnectionPolicy{MaxRetries: 3, Interval: time.Second}
	c.Logger = newSlogAdapter(log.With("component", "gocql"))
	if cfg.Username != "" {
		c.Authenticator = gocql.PasswordAuthenticator{Username: cfg.Username, Password: cfg.Password}
	}
	return c
}

// Store is the Cassandra engine. It is safe for concurrent use.
type Store struct {
	s   *gocql.Session
	log *slog.Logger
	cfg Config
}

var _ store.Store = (*Store)(nil)

// Open connects to the keyspace and checks its schema is the one this binary
// expects. An unreachable cluster is store.ErrUnavailable.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	sess, err := connect(ctx, cfg, cfg.Keyspace, log)
	if err != nil {
		return nil, err
	}
	st := &Store{s: sess, log: log, cfg: cfg}
	if err := checkSchema(ctx, sess, cfg.Keyspace); err != nil {
		sess.Close()
		return nil, err
	}
	log.Info("cassandra store open", "hosts", cfg.Hosts, "keyspace", cfg.Keyspace, "consistency", cfg.Consistency)
	return st, nil
}

// connect opens a session, mapping "cannot reach anything" to ErrUnavailable.
func connect(ctx context.Context, cfg Config, keyspace string, log *slog.Logger) (*gocql.Session, error) {
	type result struct {
		s   *gocql.Session
		err error
	}
	ch := make(chan result, 1)
	// The driver's session creation takes no context; run it aside so a
	// cancelled ctx returns promptly (the session is closed when it arrives).
	go func() {
		s, err := cfg.cluster(keyspace, log).CreateSession()
		ch <- result{s, err}
	}()
	select {
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, fmt.Errorf("%w: cassandra %v: connect: %w", store.ErrUnavailable, cfg.Hosts, ctx.Err())
	case r := <-ch:
		if r.err == nil {
			return r.s, nil
		}
		if keyspace != "" && (isMissingKeyspace(r.err) || keyspaceMissing(ctx, cfg, keyspace, log)) {
			return nil, fmt.Errorf("%w: cassandra keyspace %q does not exist: run `caliopen migrate` first",
				store.ErrInvalid, keyspace)
		}
		if isAuthError(r.err) {
			return nil, fmt.Errorf("cassandra %v: connect: %w", cfg.Hosts, r.err)
		}
		// The driver flattens dial errors into text ("unable to discover
		// protocol version: dial tcp …: connection refused"), so anything but
		// a configuration problem is taken as "cannot reach the cluster".
		return nil, fmt.Errorf("%w: cannot connect to cassandra %v: %v", store.ErrUnavailable, cfg.Hosts, r.err)
	}
}

func isMissingKeyspace(err error) bool {
	if errors.Is(err, gocql.ErrKeyspaceDoesNotExist) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "keyspace") && (strings.Contains(msg, "does not exist") || strings.Contains(msg, "not found"))
}

// keyspaceMissing tells a missing keyspace apart from an unreachable
// cluster: the driver reports both as "no connections were made".
func keyspaceMissing(ctx context.Context, cfg Config, keyspace string, log *slog.Logger) bool {
	s, err := connect(ctx, cfg, "", log)
	if err != nil {
		return false
	}
	defer s.Close()
	_, err = s.KeyspaceMetadata(keyspace)
	return errors.Is(err, gocql.ErrKeyspaceDoesNotExist)
}

// isAuthError reports a refusal of our credentials: no retry cures it.
func isAuthError(err error) bool {
	var creds *gocql.RequestErrCredentials
	if errors.As(err, &creds) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "authenticat") || strings.Contains(msg, "credentials")
}

// isUnavailable reports errors a retry may cure: the cluster is down, partly
// down, overloaded or slow, or our connections to it broke.
func isUnavailable(err error) bool {
	switch {
	case errors.Is(err, gocql.ErrNoConnections), errors.Is(err, gocql.ErrSessionClosed),
		errors.Is(err, gocql.ErrTimeoutNoResponse), errors.Is(err, gocql.ErrConnectionClosed),
		errors.Is(err, gocql.ErrNoStreams), errors.Is(err, gocql.ErrTooManyTimeouts),
		errors.Is(err, gocql.ErrUnavailable), errors.Is(err, gocql.ErrNoConnectionsStarted),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		// A connection dropped mid-request (the node went away).
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	}
	var (
		unavail   *gocql.RequestErrUnavailable
		wTimeout  *gocql.RequestErrWriteTimeout
		rTimeout  *gocql.RequestErrReadTimeout
		overload  *gocql.RequestErrOverloaded
		boot      *gocql.RequestErrBootstrapping
		casUnk    *gocql.RequestErrCASWriteUnknown
		wFail     *gocql.RequestErrWriteFailure
		rFail     *gocql.RequestErrReadFailure
		netErr    net.Error
		reqErr    gocql.RequestError
		truncated *gocql.RequestErrTruncate
	)
	if errors.As(err, &unavail) || errors.As(err, &wTimeout) || errors.As(err, &rTimeout) ||
		errors.As(err, &overload) || errors.As(err, &boot) || errors.As(err, &casUnk) ||
		errors.As(err, &wFail) || errors.As(err, &rFail) || errors.As(err, &netErr) || errors.As(err, &truncated) {
		return true
	}
	if errors.As(err, &reqErr) {
		switch reqErr.Code() {
		case gocql.ErrCodeServer, gocql.ErrCodeUnavailable, gocql.ErrCodeOverloaded, gocql.ErrCodeBootstrapping,
			gocql.ErrCodeWriteTimeout, gocql.ErrCodeReadTimeout, gocql.ErrCodeWriteFailure, gocql.ErrCodeReadFailure,
			gocql.ErrCodeCASWriteUnknown, gocql.ErrCodeTruncate:
			return true
		}
	}
	return false
}

func gu(u uuid.UUID) gocql.UUID { return gocql.UUID(u) }
func ug(u gocql.UUID) uuid.UUID { return uuid.UUID(u) }

// casScan runs a lightweight transaction and reports whether it applied;
// prev receives the existing row's columns when it did not.
func casScan(q *gocql.Query) (applied bool, prev map[string]any, err error) {
	prev = map[string]any{}
	applied, err = q.MapScanCAS(prev)
	return applied, prev, err
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// wrap maps a driver error to the store's vocabulary; what is an unexpected
// failure stays wrapped as is so the cause is never lost.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExists),
		errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("%s: %w", op, err)
	case errors.Is(err, gocql.ErrNotFound):
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	case errors.Is(err, context.Canceled):
		// The caller's cancellation, or the driver's own when a connection
		// dies under a query (gocql reports both alike): either way the
		// store did not answer, and the chain still says canceled.
		return fmt.Errorf("%s: %w: %w", op, store.ErrUnavailable, err)
	case isUnavailable(err):
		return fmt.Errorf("%s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: cassandra: %w", op, err)
}

// Ping checks a node answers a trivial query.
func (st *Store) Ping(ctx context.Context) error {
	var v string
	err := st.s.Query(`SELECT release_version FROM system.local`).WithContext(ctx).Scan(&v)
	if err != nil {
		if errors.Is(err, gocql.ErrNotFound) {
			return nil // answered: the node is up
		}
		if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("ping: %w: %w", store.ErrUnavailable, err)
		}
		return wrap("ping", err)
	}
	return nil
}

// Close releases the session; the Store is unusable afterwards.
func (st *Store) Close() error {
	st.s.Close()
	return nil
}

// query builds a context-bound query.
func (st *Store) q(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return st.s.Query(stmt, args...).WithContext(ctx)
}

// Times are stored as Unix nanoseconds, NULL for the zero time; values
// outside int64 nanoseconds (years 1678–2262) are clamped.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func tn(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return sortNanos(t)
}

// sortNanos is t as a clustering value: never NULL.
func sortNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// slogAdapter routes the driver's logs to slog. The driver's Info is
// chatty (host up/down) and lands at Debug. While a cluster is down the
// driver repeats the same error every second, so a message already logged
// within logRepeatEvery is dropped (and counted in the next one let through).
type slogAdapter struct {
	log *slog.Logger
	mu  sync.Mutex
	// seen maps a message to when it was last logged and how many repeats
	// were dropped since; bounded by the driver's small set of messages.
	seen map[string]*logSeen
}

type logSeen struct {
	at      time.Time
	dropped int
}

const logRepeatEvery = 30 * time.Second

func newSlogAdapter(log *slog.Logger) *slogAdapter {
	return &slogAdapter{log: log, seen: map[string]*logSeen{}}
}

func (a *slogAdapter) emit(level slog.Level, msg string, fields []gocql.LogField) {
	if !a.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, len(fields)+1)
	if level >= slog.LevelWarn {
		a.mu.Lock()
		now := time.Now()
		s := a.seen[msg]
		if s != nil && now.Sub(s.at) < logRepeatEvery {
			s.dropped++
			a.mu.Unlock()
			return
		}
		if s == nil {
			s = &logSeen{}
			a.seen[msg] = s
		}
		if s.dropped > 0 {
			attrs = append(attrs, slog.Int("repeats_dropped", s.dropped))
		}
		s.at, s.dropped = now, 0
		a.mu.Unlock()
	}
	for _, f := range fields {
		attrs = append(attrs, slog.Any(f.Name, f.Value.Any()))
	}
	a.log.Log(context.Background(), level, msg, attrs...)
}

func (a *slogAdapter) Error(msg string, f ...gocql.LogField)   { a.emit(slog.LevelWarn, msg, f) }
func (a *slogAdapter) Warning(msg string, f ...gocql.LogField) { a.emit(slog.LevelWarn, msg, f) }
func (a *slogAdapter) Info(msg string, f ...gocql.LogField)    { a.emit(slog.LevelDebug, msg, f) }
func (a *slogAdapter) Debug(msg string, f ...gocql.LogField)   { a.emit(slog.LevelDebug, msg, f) }
