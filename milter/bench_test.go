package milter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/internal/cpustat"
	"github.com/caliopen/caliopen/internal/postfixtest"
	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/cassandra/cassandratest"
	"github.com/caliopen/caliopen/store/embedded"
)

// copyIngester stands in for ingest+store until both exist: it does the
// work a store must do with the bytes at least once (copy them, hash them
// for content addressing) and nothing else.
type copyIngester struct {
	mu    sync.Mutex
	n     int
	bytes int64
	last  [sha256.Size]byte
}

func (c *copyIngester) Ingest(_ context.Context, _ ingest.Envelope, raw []byte) (ingest.Result, error) {
	stored := append([]byte(nil), raw...)
	sum := sha256.Sum256(stored)
	c.mu.Lock()
	c.n++
	c.bytes += int64(len(stored))
	c.last = sum
	c.mu.Unlock()
	return ingest.Result{}, nil
}

// benchMessages makes n messages of sizes spread log-uniformly over
// 2 KB–200 KB (most mail is small, some is large), deterministically but
// for a per-run Message-ID, so a store kept across runs (Cassandra) stores
// every message of a new run.
func benchMessages(n int) [][]byte {
	run := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(1, 2))
	msgs := make([][]byte, n)
	line := strings.Repeat("abcdefghij", 7) + "\r\n"
	for i := range msgs {
		size := int(2048 * math.Pow(100, rng.Float64()))
		var b bytes.Buffer
		fmt.Fprintf(&b, "From: sender%d@example.net\r\nTo: user%d@example.org\r\nSubject: bench %d\r\nMessage-ID: <bench%d.%d@example.net>\r\nDate: Thu, 26 Nov 2026 06:00:00 +0000\r\n\r\n", i, i%50, i, i, run)
		for b.Len() < size {
			b.WriteString(line)
		}
		msgs[i] = b.Bytes()
	}
	return msgs
}

// sendAll sends msgs over conns SMTP connections at once and waits for
// Postfix to have delivered every one (its queue empty).
func sendAll(ctx context.Context, pf *postfixtest.Instance, msgs [][]byte, conns int) error {
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := postfixtest.Dial(ctx, pf.SMTPAddr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if _, err := c.Hello("bench.example.net"); err != nil {
				errs <- err
				return
			}
			for i := w; i < len(msgs); i += conns {
				tr, err := c.Send("sender@example.net", []string{fmt.Sprintf("user%d@example.org", i%50)}, msgs[i])
				if err != nil {
					errs <- err
					return
				}
				if !tr.Accepted() {
					errs <- fmt.Errorf("message %d: %+v", i, tr)
					return
				}
			}
			errs <- c.Quit()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return pf.WaitQueueEmpty(ctx)
}

// embeddedIngester is the real thing: package ingest writing to the
// embedded store (bbolt, fsync on) in a temporary file, with example.org
// and its 50 users user0..user49 hosted.
func embeddedIngester(b *testing.B) *countingIngester {
	st, err := embedded.Open(filepath.Join(b.TempDir(), "caliopen.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return storeIngester(b, st)
}

// storeIngester hosts user0..user49@example.org in st (kept when a
// previous run made them) behind a real ingester.
func storeIngester(b *testing.B, st store.Store) *countingIngester {
	ctx := context.Background()
	if err := st.AddDomain(ctx, store.Domain{Name: "example.org"}); err != nil && !errors.Is(err, store.ErrExists) {
		b.Fatal(err)
	}
	for i := range 50 {
		addr := fmt.Sprintf("user%d@example.org", i)
		if _, err := st.GetAddress(ctx, addr); err == nil {
			continue
		}
		u := store.User{ID: uuid.Must(uuid.NewV7()), Name: fmt.Sprintf("bench-%s", uuid.Must(uuid.NewV7()))}
		if err := st.CreateUser(ctx, u); err != nil {
			b.Fatal(err)
		}
		if err := st.AddAddress(ctx, store.Address{Address: addr, UserID: u.ID}); err != nil {
			b.Fatal(err)
		}
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := resolve.New(resolve.Config{Store: st, Delimiter: resolve.DefaultDelimiter})
	if err != nil {
		b.Fatal(err)
	}
	ing, err := ingest.New(ingest.Config{Store: st, Resolver: r, Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	return &countingIngester{next: ing}
}

// countingIngester counts stored deliveries, so the benchmark can check
// the real ingester stored every message.
type countingIngester struct {
	next       Ingester
	mu         sync.Mutex
	n, created int
}

func (c *countingIngester) Ingest(ctx context.Context, env ingest.Envelope, raw []byte) (ingest.Result, error) {
	res, err := c.next.Ingest(ctx, env, raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.n++
		for _, d := range res.Deliveries {
			if d.Created {
				c.created++
			}
		}
	}
	return res, err
}

// BenchmarkThroughput compares Postfix with the milter against the same
// Postfix without it (same config, smtpd_milters empty, delivering to
// discard:), in the same run: 2,000 messages of 2–200 KB over 10
// connections. "embedded" and "cassandra" store through package ingest
// (Cassandra: the test cluster of CALIOPEN_TEST_CASSANDRA) as shipped: the
// milter on the Unix socket of contrib/postfix, answering DISCARD for
// messages stored for every recipient (milter.discard_stored). "tcp" is the
// milter on loopback TCP (as when it runs on another host), "continue"
// without DISCARD (Postfix queues its copy to discard:); "copy" only copies
// and hashes the bytes, isolating the milter protocol.
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./milter
func BenchmarkThroughput(b *testing.B) {
	b.Run("ingest=embedded", func(b *testing.B) {
		ing := embeddedIngester(b)
		benchThroughput(b, ing, true, true)
		if ing.created < 2000 {
			b.Errorf("store created %d deliveries, want at least 2000", ing.created)
		}
	})
	b.Run("ingest=embedded/tcp", func(b *testing.B) { benchThroughput(b, embeddedIngester(b), false, true) })
	b.Run("ingest=embedded/continue", func(b *testing.B) { benchThroughput(b, embeddedIngester(b), true, false) })
	b.Run("ingest=cassandra", func(b *testing.B) {
		ing := storeIngester(b, cassandratest.Open(b))
		benchThroughput(b, ing, true, true)
		if ing.created < 2000 {
			b.Errorf("store created %d deliveries, want at least 2000", ing.created)
		}
	})
	b.Run("ingest=copy", func(b *testing.B) { benchThroughput(b, &copyIngester{}, true, false) })
}

// benchThroughput runs the milter with ing on a Unix socket (else loopback
// TCP), answering DISCARD when ing stored a message for every recipient
// when discard is set.
func benchThroughput(b *testing.B, ing Ingester, unix, discard bool) {
	const nMsgs, nConns = 2000, 10
	msgs := benchMessages(nMsgs)
	var total int64
	for _, m := range msgs {
		total += int64(len(m))
	}
	srv := Config{Ingester: ing, DiscardStored: discard}
	var withMilter *postfixtest.Instance
	if unix {
		withMilter = postfixtest.Start(b, postfixtest.Options{Include: &postfixtest.Include{LookupdAddr: startSocketmap(b)}})
		startMilterOn(b, srv, listenUnix(b, withMilter.MilterSocket()))
	} else {
		withMilter = startPostfix(b, startMilter(b, srv))
	}
	plain := startPostfix(b, postfixtest.FreeAddr(b), "smtpd_milters =", "non_smtpd_milters =")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	// Warm both: first connections start smtpd, cleanup and so on.
	for _, pf := range []*postfixtest.Instance{plain, withMilter} {
		if err := sendAll(ctx, pf, msgs[:40], nConns); err != nil {
			b.Fatal(err)
		}
	}

	// This process runs the SMTP clients in both phases and the milter in
	// one: the difference in its CPU time is the milter's cost. The whole
	// machine's busy time per message (Postfix included) shows what the
	// milter costs Postfix too.
	var plainDur, milterDur, plainCPU, milterCPU time.Duration
	var plainBusy, milterBusy time.Duration
	b.ResetTimer()
	for range b.N {
		// Alternate quarters so a burst of load from elsewhere hits both sides.
		for q := range 4 {
			part := msgs[q*nMsgs/4 : (q+1)*nMsgs/4]
			start, cpu, busy := time.Now(), cpuTime(), machineBusy(b)
			if err := sendAll(ctx, plain, part, nConns); err != nil {
				b.Fatal(err)
			}
			plainDur += time.Since(start)
			plainCPU += cpuTime() - cpu
			plainBusy += machineBusy(b) - busy
			start, cpu, busy = time.Now(), cpuTime(), machineBusy(b)
			if err := sendAll(ctx, withMilter, part, nConns); err != nil {
				b.Fatal(err)
			}
			milterDur += time.Since(start)
			milterCPU += cpuTime() - cpu
			milterBusy += machineBusy(b) - busy
		}
	}
	b.StopTimer()
	n := float64(b.N * nMsgs)
	plainRate, milterRate := n/plainDur.Seconds(), n/milterDur.Seconds()
	b.ReportMetric(plainRate, "plain-msg/s")
	b.ReportMetric(milterRate, "milter-msg/s")
	b.ReportMetric(milterRate/plainRate, "milter/plain")
	b.ReportMetric(float64((milterCPU-plainCPU).Microseconds())/n, "milter-CPU-µs/msg")
	b.ReportMetric(float64(plainBusy.Microseconds())/n, "plain-machine-CPU-µs/msg")
	b.ReportMetric(float64(milterBusy.Microseconds())/n, "milter-machine-CPU-µs/msg")
	b.ReportMetric(float64(total)/float64(nMsgs)/1024, "avg-KB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMemory10x10MB measures the milter's resident memory while 10
// messages of 10 MB arrive at once. The milter runs in a child process (this
// test binary, see TestMain) so the SMTP clients' buffers do not
// count; VmHWM is the child's peak resident set.
//
//	go test -run '^$' -bench Memory -benchtime 1x ./milter
func BenchmarkMemory10x10MB(b *testing.B) {
	postfixtest.Require(b)
	addr, child := startMilterChild(b, 0)
	pf := startPostfix(b, addr)

	const n, size = 10, 10 << 20
	msg := benchMessages(1)[0]
	msg = append(msg, bytes.Repeat([]byte(strings.Repeat("z", 78)+"\r\n"), (size-len(msg))/80)...)
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = msg
	}
	before, err := procStatus(child.pid, "VmRSS")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ResetTimer()
	for range b.N {
		if err := sendAll(ctx, pf, msgs, n); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	peak, err := procStatus(child.pid, "VmHWM")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(before)/1024, "start-RSS-MB")
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MB")
	b.ReportMetric(float64(peak-before)/1024, "delta-MB")
	b.ReportMetric(0, "ns/op")
	if peak/1024 >= 300 {
		b.Errorf("milter peak RSS %d MB, goal < 300 MB", peak/1024)
	}
}

// procStatus reads a "kB" field of /proc/PID/status.
func procStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

// TestMain runs this test binary as the milter process of
// BenchmarkMemory10x10MB when that benchmark starts it, and as the tests
// otherwise.
func TestMain(m *testing.M) {
	if addr := os.Getenv("CALIOPEN_MILTER_CHILD"); addr != "" {
		os.Exit(milterChild(addr))
	}
	os.Exit(m.Run())
}

func milterChild(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	cfg := Config{Ingester: &copyIngester{}}
	if b := os.Getenv("CALIOPEN_MILTER_BUDGET"); b != "" {
		// TestMemoryBudget: report what is stored.
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg = Config{Ingester: &idPrinter{w: os.Stdout}, MaxBytesInFlight: n, MaxMessageBytes: n / 4}
		// As cmd/caliopen sets it.
		debug.SetMemoryLimit(MemoryLimit(n))
	}
	srv, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := srv.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// machineBusy is cpustat.Busy for a benchmark.
func machineBusy(tb testing.TB) time.Duration {
	d, err := cpustat.Busy()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// cpuTime is this process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
