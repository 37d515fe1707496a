package ingest

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/caliopen/caliopen/store/embedded"
)

// BenchmarkIngest: small distinct messages from a few correspondents into
// one mailbox, on the embedded store with fsync (as in production).
func BenchmarkIngest(b *testing.B) {
	st, err := embedded.Open(filepath.Join(b.TempDir(), "bench.db"), benchOpts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	f := newFixtureOn(b, st)
	env := Envelope{Recipients: []string{"alice@example.org"}, TLSVersion: "TLSv1.3"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		raw := simple(fmt.Sprintf("c%d@remote.example", i%10), "alice@example.org", fmt.Sprint("bench ", i), "a short body")
		if _, err := f.in.Ingest(f.ctx, env, []byte(raw)); err != nil {
			b.Fatal(err)
		}
	}
}

var benchOpts []embedded.Option
