package ingest

import (
	"testing"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

func TestRecompute(t *testing.T) {
	f := newFixture(t)
	a := f.one(simple("carol@remote.example", "alice@example.org", "one", "first"))
	b := f.one(simple("dave@remote.example", "alice@example.org", "two", "second"))
	want := a.PI
	if want.Version != privacyindex.Version || want.Band == "" {
		t.Fatalf("ingest stored PI %+v", want)
	}

	// Nothing to do when every score is current.
	stats, err := Recompute(f.ctx, f.st, f.alice)
	must(t, err)
	if stats.Messages != 2 || stats.Changed != 0 {
		t.Fatalf("first run: %+v, want 2 examined, 0 changed", stats)
	}

	// A score from an older model is replaced by the current one.
	must(t, f.st.SetSecurity(f.ctx, f.alice, a.ID, a.Security, store.PI{Version: 0, Score: 99, Band: "A"}))
	stats, err = Recompute(f.ctx, f.st, f.alice)
	must(t, err)
	if stats.Changed != 1 {
		t.Fatalf("after an old score: %+v, want 1 changed", stats)
	}
	got, err := f.st.GetMessage(f.ctx, f.alice, a.ID)
	must(t, err)
	if got.PI.Version != want.Version || got.PI.Score != want.Score || got.PI.Band != want.Band || string(got.PI.Details) != string(want.Details) {
		t.Fatalf("recomputed PI %+v, want %+v", got.PI, want)
	}
	if other, _ := f.st.GetMessage(f.ctx, f.alice, b.ID); other.PI.Score != b.PI.Score {
		t.Fatalf("untouched message changed: %+v", other.PI)
	}
	// Bob's mailbox is not Alice's business.
	stats, err = Recompute(f.ctx, f.st, f.bob)
	must(t, err)
	if stats.Messages != 0 {
		t.Fatalf("bob: %+v", stats)
	}
}
