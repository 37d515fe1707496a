package cassandra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/caliopen/caliopen/store"
)

// The milter answers 250 once PutMessage returns, so the cluster's write
// acknowledgement must mean "on disk where a crash cannot take it". That
// holds when either a write is acknowledged by at least two replicas (a
// replication factor of 3 with QUORUM: one node killed before its periodic
// commit-log sync still leaves a copy), or a single node fsyncs its commit
// log before acknowledging (commitlog_sync: batch or group). A single node
// with the default periodic commit log (10 s) acknowledges writes it loses
// when killed: measured, 283 of 2,000 messages told 250.

// ErrNotDurable marks a set-up in which an acknowledged write can be lost
// (or no write can succeed); it wraps store.ErrInvalid.
var ErrNotDurable = fmt.Errorf("%w: cassandra set-up cannot keep acknowledged mail", store.ErrInvalid)

// Durability is what a client can learn about whether the cluster keeps
// what it acknowledges.
type Durability struct {
	// Nodes in the cluster: system.local plus system.peers.
	Nodes int
	// Release is the contacted node's release_version.
	Release string
	// Replication is the keyspace's replication (its options by name).
	Replication map[string]string
	// Consistency of writes.
	Consistency string
	// CommitLogSync is the node's commitlog_sync when the server tells
	// (Cassandra 4.0+ system_views.settings, ScyllaDB system.config); empty
	// when it cannot be known from a client (Cassandra 2.1 to 3.x).
	CommitLogSync string
}

// Replicas is the keyspace's replication factor: the sum over data centres
// for NetworkTopologyStrategy. The second result is the smallest factor of
// one data centre (what LOCAL_ consistencies count on).
func (d Durability) Replicas() (total, perDC int) {
	class := d.Replication["class"]
	for k, v := range d.Replication {
		if k == "class" {
			continue
		}
		if strings.HasSuffix(class, "SimpleStrategy") && k != "replication_factor" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			continue
		}
		total += n
		if perDC == 0 || n < perDC {
			perDC = n
		}
	}
	return total, perDC
}

// WriteAcks is how many replicas acknowledge a write at the consistency
// level (0 for ANY: a stored hint is no replica).
func (d Durability) WriteAcks() int {
	total, perDC := d.Replicas()
	c, err := gocql.ParseConsistencyWrapper(d.Consistency)
	if err != nil {
		return 0
	}
	switch c {
	case gocql.One, gocql.LocalOne:
		return 1
	case gocql.Two:
		return 2
	case gocql.Three:
		return 3
	case gocql.Quorum:
		return total/2 + 1
	case gocql.LocalQuorum, gocql.EachQuorum:
		return perDC/2 + 1
	case gocql.All:
		return total
	}
	return 0
}

// SerialAcks is how many replicas a lightweight transaction needs (a Paxos
// quorum: of one data centre for LOCAL_ consistencies, as Config.cluster sets
// LOCAL_SERIAL, else of all replicas). The store claims every message's
// dedup key with one, so without them no mail is stored.
func (d Durability) SerialAcks() int {
	total, perDC := d.Replicas()
	if strings.HasPrefix(strings.ToUpper(d.Consistency), "LOCAL_") {
		return perDC/2 + 1
	}
	return total/2 + 1
}

// Check says whether the set-up keeps the promise. problem is set when it
// certainly does not (the caller refuses to run); warning when it may not
// and a client cannot tell (the caller says so loudly).
func (d Durability) Check() (problem, warning string) {
	total, _ := d.Replicas()
	acks := d.WriteAcks()
	fix := "use replication_factor 3 with consistency QUORUM on a cluster, or replication_factor 1 on a single node whose commit log is commitlog_sync: batch (docs/configuration.md)"
	switch {
	case total == 0:
		return fmt.Sprintf("keyspace replication %v names no replica", d.Replication), ""
	case acks == 0:
		return fmt.Sprintf("consistency %s acknowledges a write that no replica holds yet: %s", d.Consistency, fix), ""
	case acks > min(total, d.Nodes):
		return fmt.Sprintf("consistency %s needs %d replicas per write but the keyspace has %d on a cluster of %d node(s), so no mail can be stored: %s",
			d.Consistency, acks, total, d.Nodes, fix), ""
	case d.SerialAcks() > d.Nodes:
		return fmt.Sprintf("replication %v needs %d replicas for each lightweight transaction (the store claims every message with one) but the cluster has %d node(s), so no mail can be stored: %s",
			d.Replication, d.SerialAcks(), d.Nodes, fix), ""
	case d.Nodes == 1:
		switch strings.ToLower(d.CommitLogSync) {
		case "batch", "group":
			return "", ""
		case "":
			return "", fmt.Sprintf("single Cassandra node (%s): a write is on disk when acknowledged only if its cassandra.yaml sets commitlog_sync: batch (or group); "+
				"a client cannot check that before Cassandra 4.0, so check it yourself: with the default periodic commit log, killing the node loses mail already answered 250", d.Release)
		}
		return fmt.Sprintf("single Cassandra node with commitlog_sync: %s acknowledges writes before they reach the disk: set commitlog_sync: batch (or group), or %s",
			d.CommitLogSync, fix), ""
	case acks < 2:
		return fmt.Sprintf("consistency %s with replication %v: a write is acknowledged by one replica, lost if that node dies before its commit-log sync: %s",
			d.Consistency, d.Replication, fix), ""
	case total < 3:
		return "", fmt.Sprintf("replication factor %d: acknowledged mail survives one node's crash, but ingest stops while a replica is down; 3 is recommended", total)
	}
	return "", ""
}

// CheckDurability reads the cluster's size, the keyspace's replication (or,
// when the keyspace does not exist yet, the replication Migrate would give
// it) and, when the server tells, the commit-log mode, and checks them. It
// returns ErrNotDurable for a set-up that cannot keep acknowledged mail, and
// logs a warning for what cannot be checked from a client.
func CheckDurability(ctx context.Context, cfg Config, log *slog.Logger) (Durability, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Durability{}, err
	}
	sess, err := connect(ctx, cfg, "", log)
	if err != nil {
		return Durability{}, err
	}
	defer sess.Close()
	d := Durability{Consistency: strings.ToUpper(cfg.Consistency), Nodes: 1}
	if err := sess.Query(`SELECT release_version FROM system.local`).WithContext(ctx).Scan(&d.Release); err != nil {
		return d, wrap("durability check: system.local", err)
	}
	iter := sess.Query(`SELECT peer FROM system.peers`).WithContext(ctx).Iter()
	var peer string
	for iter.Scan(&peer) {
		d.Nodes++
	}
	if err := iter.Close(); err != nil {
		return d, wrap("durability check: system.peers", err)
	}
	if d.Replication, err = keyspaceReplication(ctx, sess, cfg.Keyspace); err != nil {
		return d, err
	}
	if d.Replication == nil { // not created yet: what Migrate will create
		if d.Replication, err = parseReplication(cfg.Replication); err != nil {
			return d, err
		}
	}
	d.CommitLogSync = commitLogSync(ctx, sess)
	problem, warning := d.Check()
	attrs := []any{"keyspace", cfg.Keyspace, "nodes", d.Nodes, "replication", fmt.Sprint(d.Replication),
		"consistency", d.Consistency, "commitlog_sync", d.CommitLogSync, "release", d.Release}
	if problem != "" {
		return d, fmt.Errorf("%w: %s", ErrNotDurable, problem)
	}
	if warning != "" {
		log.Warn("DURABILITY NOT VERIFIED: "+warning, attrs...)
	} else {
		log.Info("cassandra durability checked", attrs...)
	}
	return d, nil
}

// keyspaceReplication is the keyspace's replication options, nil when the
// keyspace does not exist.
func keyspaceReplication(ctx context.Context, sess *gocql.Session, keyspace string) (map[string]string, error) {
	if !keyspaceExists(ctx, sess, keyspace) {
		return nil, nil
	}
	md, err := sess.KeyspaceMetadata(keyspace)
	if err != nil {
		if errors.Is(err, gocql.ErrKeyspaceDoesNotExist) {
			return nil, nil
		}
		return nil, wrap("durability check: keyspace "+keyspace, err)
	}
	out := map[string]string{"class": md.StrategyClass}
	for k, v := range md.StrategyOptions {
		out[k] = fmt.Sprint(v)
	}
	return out, nil
}

// commitLogSync asks the server for its commit-log mode; "" when it does not
// say (Cassandra before 4.0 has no settings table).
func commitLogSync(ctx context.Context, sess *gocql.Session) string {
	var v string
	for _, q := range []string{
		`SELECT value FROM system_views.settings WHERE name = 'commitlog_sync'`, // Cassandra 4.0+
		`SELECT value FROM system.config WHERE name = 'commitlog_sync'`,         // ScyllaDB
	} {
		if err := sess.Query(q).WithContext(ctx).Scan(&v); err == nil {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return ""
}

// parseReplication reads a CQL replication map literal such as
// {'class': 'SimpleStrategy', 'replication_factor': 3}.
func parseReplication(lit string) (map[string]string, error) {
	s := strings.TrimSpace(lit)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, fmt.Errorf("%w: cassandra: replication %q is not a CQL map literal", store.ErrInvalid, lit)
	}
	out := map[string]string{}
	for pair := range strings.SplitSeq(s[1:len(s)-1], ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, ":")
		if !ok {
			return nil, fmt.Errorf("%w: cassandra: replication %q: %q is not key: value", store.ErrInvalid, lit, pair)
		}
		unq := func(x string) string { return strings.Trim(strings.TrimSpace(x), `'"`) }
		out[unq(k)] = unq(v)
	}
	if out["class"] == "" {
		return nil, fmt.Errorf("%w: cassandra: replication %q has no class", store.ErrInvalid, lit)
	}
	return out, nil
}
