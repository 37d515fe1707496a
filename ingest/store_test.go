package ingest

import (
	"path/filepath"
	"testing"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
)

// openStore returns the store the tests run on: the real embedded engine in
// a fresh file (no fsync: durability is not what these tests check).
func openStore(t testing.TB) store.Store {
	t.Helper()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "caliopen.db"), embedded.WithNoSync())
	if err != nil {
		t.Fatalf("embedded.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
