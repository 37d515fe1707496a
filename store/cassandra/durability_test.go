package cassandra_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/cassandra"
	"github.com/caliopen/caliopen/store/cassandra/cassandratest"
)

func TestDurabilityRules(t *testing.T) {
	simple := func(rf string) map[string]string {
		return map[string]string{"class": "org.apache.cassandra.locator.SimpleStrategy", "replication_factor": rf}
	}
	nts := map[string]string{"class": "NetworkTopologyStrategy", "dc1": "3", "dc2": "2"}
	for _, tc := range []struct {
		name             string
		d                cassandra.Durability
		problem, warning string // substrings; "" means none
	}{
		{"cluster RF3 QUORUM", cassandra.Durability{Nodes: 3, Replication: simple("3"), Consistency: "QUORUM"}, "", ""},
		{"cluster RF3 LOCAL_QUORUM", cassandra.Durability{Nodes: 6, Replication: nts, Consistency: "LOCAL_QUORUM"}, "", ""},
		{"cluster RF1 QUORUM", cassandra.Durability{Nodes: 3, Replication: simple("1"), Consistency: "QUORUM"}, "acknowledged by one replica", ""},
		{"cluster RF3 ONE", cassandra.Durability{Nodes: 3, Replication: simple("3"), Consistency: "ONE"}, "acknowledged by one replica", ""},
		{"cluster RF3 ANY", cassandra.Durability{Nodes: 3, Replication: simple("3"), Consistency: "ANY"}, "no replica holds", ""},
		{"cluster RF2 QUORUM", cassandra.Durability{Nodes: 2, Replication: simple("2"), Consistency: "QUORUM"}, "", "ingest stops"},
		{"single RF3 QUORUM", cassandra.Durability{Nodes: 1, Replication: simple("3"), Consistency: "QUORUM"}, "no mail can be stored", ""},
		{"single RF3 ONE", cassandra.Durability{Nodes: 1, Replication: simple("3"), Consistency: "ONE"}, "lightweight transaction", ""},
		{"two nodes RF3 TWO", cassandra.Durability{Nodes: 2, Replication: simple("3"), Consistency: "TWO"}, "", ""},
		{"single RF1 QUORUM, 2.1", cassandra.Durability{Nodes: 1, Replication: simple("1"), Consistency: "QUORUM", Release: "2.1.0"}, "", "commitlog_sync: batch"},
		{"single RF1 periodic", cassandra.Durability{Nodes: 1, Replication: simple("1"), Consistency: "QUORUM", CommitLogSync: "periodic"}, "commitlog_sync: periodic", ""},
		{"single RF1 batch", cassandra.Durability{Nodes: 1, Replication: simple("1"), Consistency: "QUORUM", CommitLogSync: "batch"}, "", ""},
		{"single RF1 group", cassandra.Durability{Nodes: 1, Replication: simple("1"), Consistency: "ONE", CommitLogSync: "group"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problem, warning := tc.d.Check()
			for _, c := range []struct{ what, got, want string }{{"problem", problem, tc.problem}, {"warning", warning, tc.warning}} {
				if (c.want == "") != (c.got == "") || !strings.Contains(c.got, c.want) {
					t.Errorf("%s = %q, want one containing %q", c.what, c.got, c.want)
				}
			}
		})
	}
}

// TestCheckDurability runs the check against the test node (one node, the
// replication given here since the keyspace does not exist).
func TestCheckDurability(t *testing.T) {
	cfg := cassandratest.Config(t)
	cfg.Keyspace = "caliopen_never_created"
	cfg.Consistency = "QUORUM"

	cfg.Replication = "{'class': 'SimpleStrategy', 'replication_factor': 3}"
	d, err := cassandra.CheckDurability(t.Context(), cfg, nil)
	if !errors.Is(err, cassandra.ErrNotDurable) || !errors.Is(err, store.ErrInvalid) {
		t.Errorf("RF 3 QUORUM on one node: %v, want ErrNotDurable", err)
	}
	if d.Nodes != 1 || d.Release == "" {
		t.Errorf("durability read %+v, want one node and its release", d)
	}

	cfg.Replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
	var logs bytes.Buffer
	d, err = cassandra.CheckDurability(t.Context(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("RF 1 on one node: %v", err)
	}
	if d.CommitLogSync == "" && !strings.Contains(logs.String(), "DURABILITY NOT VERIFIED") {
		t.Errorf("commit-log mode unknown (release %s) but no warning logged: %s", d.Release, logs.String())
	}

	// The existing test keyspace: its real replication is read.
	cfg = cassandratest.Config(t)
	if d, err = cassandra.CheckDurability(t.Context(), cfg, nil); err != nil {
		t.Fatalf("test keyspace: %v", err)
	}
	if d.Replication["class"] == "" || d.Replication["replication_factor"] == "" {
		t.Errorf("test keyspace replication read as %v", d.Replication)
	}
}
