package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/cassandra/cassandratest"
	"github.com/caliopen/caliopen/store/embedded"
)

const (
	benchConversations = 10_000
	benchPerConv       = 10 // 100,000 messages
	benchClients       = 16
)

// BenchmarkConversationList measures GET /conversations for a user with
// 10,000 conversations and 100,000 messages: the first page and a page deep
// in the cursor chain (item 9,000), each at 16 concurrent clients over HTTP,
// against an Echo handler returning a fixed body in the same run (same
// server, middleware, transport and clients, alternated in rounds). It
// reports requests/s, p50 and p99 latency of the page, and its throughput
// ratio to the fixed handler; ns/op covers both. It runs on the embedded
// store and, with CALIOPEN_TEST_CASSANDRA set, on Cassandra. -short seeds
// 1,000 conversations instead of 10,000.
func BenchmarkConversationList(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		st, err := embedded.Open(filepath.Join(b.TempDir(), "bench.db"), embedded.WithNoSync())
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchConversationList(b, st)
	})
	b.Run("cassandra", func(b *testing.B) { benchConversationList(b, cassandratest.Open(b)) })
}

func benchConversationList(b *testing.B, st store.Store) {
	conversations, perConv := benchConversations, benchPerConv
	if testing.Short() {
		conversations = 1_000
	}
	ctx := context.Background()
	uid := uuid.Must(uuid.NewV7())
	if err := st.CreateUser(ctx, store.User{ID: uid, Name: "bench-" + uid.String(), CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	base := time.Now().Add(-30 * 24 * time.Hour)
	// Seeded by 16 writers: a networked store is bound by round trips.
	next := make(chan int, conversations)
	for i := range conversations {
		next <- i
	}
	close(next)
	var seed sync.WaitGroup
	for range 16 {
		seed.Go(func() {
			for i := range next {
				seedConversation(b, st, uid, base.Add(time.Duration(i)*time.Minute), i, perConv, nil)
			}
		})
	}
	seed.Wait()
	b.Logf("seeded %d conversations, %d messages in %v", conversations, conversations*perConv, time.Since(start).Round(time.Millisecond))

	srv, err := New(Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	e := srv.Echo()
	// The baseline: same Echo, same middleware chain, a fixed body.
	fixed := []byte(`{"items":[],"next_cursor":""}`)
	e.GET(Prefix+"/bench-fixed", func(c echo.Context) error { return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, fixed) })
	ts := httptest.NewServer(e)
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchClients, MaxConnsPerHost: benchClients}}

	tok, t, err := newToken(uid, time.Now(), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.PutToken(ctx, t); err != nil {
		b.Fatal(err)
	}

	get := func(path string) ([]byte, error) {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
		return body, err
	}

	// The deep cursor: walk to item 9,000 (or 90% of a short seed).
	deepAt := conversations * 9 / 10
	cursor := ""
	for walked := 0; walked < deepAt; walked += 500 {
		q := url.Values{"limit": {fmt.Sprint(min(500, deepAt-walked))}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		body, err := get(Prefix + "/conversations?" + q.Encode())
		if err != nil {
			b.Fatal(err)
		}
		var p page[json.RawMessage]
		if err := json.Unmarshal(body, &p); err != nil || p.NextCursor == "" {
			b.Fatalf("walking to the deep page: %v (cursor %q)", err, p.NextCursor)
		}
		cursor = p.NextCursor
	}

	for _, sc := range []struct{ name, path string }{
		{"first_page", Prefix + "/conversations?limit=50"},
		{"deep_page", Prefix + "/conversations?limit=50&cursor=" + url.QueryEscape(cursor)},
	} {
		b.Run(sc.name, func(b *testing.B) {
			fixedReq := func() error { _, err := get(Prefix + "/bench-fixed"); return err }
			pageReq := func() error {
				body, err := get(sc.path)
				if err == nil && len(body) < 1000 {
					err = fmt.Errorf("short page: %s", body)
				}
				return err
			}
			// The machine is shared: alternate baseline and target in
			// rounds so that both see the same background load.
			const rounds = 5
			var base, target result
			for r := range rounds {
				n := b.N / rounds
				if r == rounds-1 {
					n = b.N - n*(rounds-1)
				}
				base.add(load(b, n, fixedReq))
				target.add(load(b, n, pageReq))
			}
			rps, p50, p99 := target.stats()
			baseRPS, _, _ := base.stats()
			b.ReportMetric(rps, "req/s")
			b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
			b.ReportMetric(baseRPS, "fixed-req/s")
			b.ReportMetric(rps/baseRPS, "ratio-vs-fixed")
		})
	}
}

// result accumulates the latencies and wall time of load runs.
type result struct {
	lat     []time.Duration
	elapsed time.Duration
}

func (r *result) add(o result) {
	r.lat = append(r.lat, o.lat...)
	r.elapsed += o.elapsed
}

// stats returns throughput and the p50 and p99 latencies.
func (r *result) stats() (rps float64, p50, p99 time.Duration) {
	slices.Sort(r.lat)
	n := len(r.lat)
	return float64(n) / r.elapsed.Seconds(), r.lat[n*50/100], r.lat[min(n-1, n*99/100)]
}

// load runs n requests from benchClients goroutines.
func load(b *testing.B, n int, do func() error) result {
	b.Helper()
	n = max(n, benchClients)
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	start := time.Now()
	for range benchClients {
		wg.Go(func() {
			for i := range next {
				t0 := time.Now()
				if err := do(); err != nil {
					once.Do(func() { firstErr = err })
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return result{lat: lat, elapsed: el}
}
