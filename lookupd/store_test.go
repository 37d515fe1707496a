package lookupd_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
)

// newTestStore returns an empty embedded store (the default engine) in a
// temporary directory.
func newTestStore(t testing.TB) store.Store {
	t.Helper()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "caliopen.db"),
		embedded.WithNoSync(), embedded.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing store: %v", err)
		}
	})
	return st
}

// flakyStore injects an outage into the reads lookupd depends on: it is
// the store failing, not a double of the code under test.
type flakyStore struct {
	store.Store
	down atomic.Bool
}

func (f *flakyStore) err() error {
	if f.down.Load() {
		return fmt.Errorf("injected outage: %w", store.ErrUnavailable)
	}
	return nil
}

func (f *flakyStore) GetDomain(ctx context.Context, name string) (store.Domain, error) {
	if err := f.err(); err != nil {
		return store.Domain{}, err
	}
	return f.Store.GetDomain(ctx, name)
}

func (f *flakyStore) GetAddress(ctx context.Context, a string) (store.Address, error) {
	if err := f.err(); err != nil {
		return store.Address{}, err
	}
	return f.Store.GetAddress(ctx, a)
}

func (f *flakyStore) GetAlias(ctx context.Context, a string) (store.Alias, error) {
	if err := f.err(); err != nil {
		return store.Alias{}, err
	}
	return f.Store.GetAlias(ctx, a)
}

func (f *flakyStore) GetUser(ctx context.Context, id uuid.UUID) (store.User, error) {
	if err := f.err(); err != nil {
		return store.User{}, err
	}
	return f.Store.GetUser(ctx, id)
}
