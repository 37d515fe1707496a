package embedded_test

import (
	"context"
	"testing"

	"github.com/caliopen/caliopen/store/storetest"
)

// TestFaults: a bbolt transaction commits whole or not at all, so the one
// fault a caller can cause is a PutMessage cut before its commit (a
// cancelled context); its retry must leave the counters exact.
func TestFaults(t *testing.T) {
	storetest.RunFaults(t, openTemp(t), []storetest.Fault{{
		Name: "cancelled",
		Ctx: func(ctx context.Context) context.Context {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			return ctx
		},
	}})
}
