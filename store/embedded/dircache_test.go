package embedded

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// The directory cache never serves a read older than a write that has
// returned: not-found answers are cached too, so each write must be seen
// by the very next read.
func TestDirectoryCacheFollowsWrites(t *testing.T) {
	ctx := context.Background()
	st, err := Open(filepath.Join(t.TempDir(), "c.db"), WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.GetDomain(ctx, "example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetDomain before AddDomain: %v", err)
	}
	if err := st.AddDomain(ctx, store.Domain{Name: "example.org"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetDomain(ctx, "example.org"); err != nil {
		t.Fatalf("GetDomain after AddDomain: %v", err)
	}
	u := store.User{ID: uuid.Must(uuid.NewV7()), Name: "alice"}
	if err := st.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	// Readers hammer the same names while the writer flips them; after each
	// write returns, the writer's own read must agree with it.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = st.GetAddress(ctx, "alice@example.org")
				_, _ = st.GetAlias(ctx, "team@example.org")
			}
		})
	}
	for i := range 200 {
		if err := st.AddAddress(ctx, store.Address{Address: "alice@example.org", UserID: u.ID}); err != nil {
			t.Fatal(err)
		}
		if a, err := st.GetAddress(ctx, "alice@example.org"); err != nil || a.UserID != u.ID {
			t.Fatalf("round %d: GetAddress after AddAddress: %+v, %v", i, a, err)
		}
		target := fmt.Sprintf("t%d@example.org", i)
		if err := st.PutAlias(ctx, store.Alias{Address: "team@example.org", Targets: []string{target}}); err != nil {
			t.Fatal(err)
		}
		if a, err := st.GetAlias(ctx, "team@example.org"); err != nil || len(a.Targets) != 1 || a.Targets[0] != target {
			t.Fatalf("round %d: GetAlias after PutAlias: %+v, %v", i, a, err)
		}
		if err := st.RemoveAddress(ctx, "alice@example.org"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.GetAddress(ctx, "alice@example.org"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("round %d: GetAddress after RemoveAddress: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()

	// Targets are the caller's: changing them changes nothing stored.
	a, err := st.GetAlias(ctx, "team@example.org")
	if err != nil {
		t.Fatal(err)
	}
	a.Targets[0] = "changed@example.org"
	if b, _ := st.GetAlias(ctx, "team@example.org"); b.Targets[0] == "changed@example.org" {
		t.Error("a caller's change to Targets reached the cache")
	}
	// Deleting the user removes its addresses, and the cache follows.
	if err := st.AddAddress(ctx, store.Address{Address: "alice@example.org", UserID: u.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetAddress(ctx, "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetAddress(ctx, "alice@example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetAddress after DeleteUser: %v", err)
	}
	// A closed store answers unavailable, not what it cached.
	st.Close()
	if _, err := st.GetDomain(ctx, "example.org"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("GetDomain on a closed store: %v", err)
	}
}
