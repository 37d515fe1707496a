package ingest

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
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

// mixMessage is message i of a realistic mix like the milter benchmark's:
// a text body of 2–200 KB (log-uniform, deterministic) from one of senders
// correspondents (a new one each message when senders is 0).
func mixMessage(i, senders int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 2))
	size := int(2048 * math.Pow(100, rng.Float64()))
	from := fmt.Sprintf("sender%d@example.net", i)
	if senders > 0 {
		from = fmt.Sprintf("sender%d@example.net", i%senders)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: alice@example.org\r\nSubject: bench %d\r\nMessage-ID: <bench%d@example.net>\r\nDate: Thu, 26 Nov 2026 06:00:00 +0000\r\n\r\n", from, i, i)
	line := strings.Repeat("abcdefghij", 7) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

// BenchmarkIngestMix: 2–200 KB messages delivered by 10 concurrent callers
// (as 10 SMTP connections would) on the embedded store with fsync, from a
// new correspondent each time (the milter benchmark) or from 10 regular
// ones (their history is read on every delivery).
func BenchmarkIngestMix(b *testing.B) {
	for _, senders := range []int{0, 10} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			st, err := embedded.Open(filepath.Join(b.TempDir(), "bench.db"), benchOpts...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			f := newFixtureOn(b, st)
			env := Envelope{Recipients: []string{"alice@example.org"}, TLSVersion: "TLSv1.3"}
			var next atomic.Int64
			b.SetParallelism(5) // 10 callers on 2 cores
			w0 := writtenBytes(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := f.in.Ingest(f.ctx, env, mixMessage(int(next.Add(1)), senders)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			// What the store wrote per message (the messages average 43.8 KB):
			// the file's write amplification, which bounds its throughput.
			b.ReportMetric(float64(writtenBytes(b)-w0)/float64(b.N)/1024, "written-KB/msg")
		})
	}
}

// writtenBytes is what this process has written so far (wchar in
// /proc/self/io: bytes passed to write and pwrite).
func writtenBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no wchar in /proc/self/io")
	return 0
}
