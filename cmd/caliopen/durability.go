package main

import (
	"context"
	"fmt"

	"github.com/caliopen/caliopen/store/cassandra"
)

// checkDurability refuses a Cassandra set-up in which mail answered 250
// could be lost (cassandra.CheckDurability says which), and logs a loud
// warning for what a client cannot check. The embedded store fsyncs each
// commit and needs no check.
func (a *app) checkDurability(ctx context.Context) error {
	if a.cfg.Store.Engine != "cassandra" {
		return nil
	}
	if _, err := cassandra.CheckDurability(ctx, a.cassandraConfig(), a.log); err != nil {
		return fmt.Errorf("cassandra store %v: %w", a.cfg.Store.Cassandra.Hosts, err)
	}
	return nil
}
