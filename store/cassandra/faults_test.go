package cassandra_test

import (
	"context"
	"testing"

	"github.com/caliopen/caliopen/store/cassandra"
	"github.com/caliopen/caliopen/store/cassandra/cassandratest"
	"github.com/caliopen/caliopen/store/storetest"
)

// TestFaults cuts PutMessage where a node's death can cut it: after the
// dedup claim (nothing counted) and after the count (not indexed, the
// answer lost). Retries must leave the counters exact.
func TestFaults(t *testing.T) {
	at := func(point string) func(context.Context) context.Context {
		return func(ctx context.Context) context.Context { return cassandra.WithFault(ctx, point) }
	}
	storetest.RunFaults(t, cassandratest.Open(t), []storetest.Fault{
		{Name: "after claim", Ctx: at("claimed")},
		{Name: "after count", Ctx: at("counted")},
	})
}
