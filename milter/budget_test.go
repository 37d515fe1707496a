package milter

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/internal/postfixtest"
)

// idPrinter stands in for ingest+store in the memory child: it reads every
// byte (a hash, as content addressing does), takes a store's time, and
// prints "stored <Message-ID>" for the parent to count.
type idPrinter struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *idPrinter) Ingest(_ context.Context, _ ingest.Envelope, raw []byte) (ingest.Result, error) {
	_ = sha256.Sum256(raw)
	// A store's time (Cassandra, an fsync): messages pile up in the milter.
	time.Sleep(500 * time.Millisecond)
	id := "none"
	if i := bytes.Index(raw, []byte("Message-ID: <")); i >= 0 {
		rest := raw[i+len("Message-ID: <"):]
		if j := bytes.IndexByte(rest, '>'); j >= 0 {
			id = string(rest[:j])
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := fmt.Fprintf(p.w, "stored %s\n", id)
	return ingest.Result{}, err
}

// sendBig sends one message of a header and body through Postfix and
// returns the final reply. It writes the body as is: body's lines never
// start with a dot, and textproto's dot-stuffing writer, a loop over every
// byte, would cost more than Postfix and the milter together.
func sendBig(addr, id string, body []byte) (int, string, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Minute))
	tp := textproto.NewConn(nc)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return 0, "", err
	}
	for _, step := range []struct {
		cmd  string
		want int
	}{{"HELO sender.example.net", 250}, {"MAIL FROM:<zoe@example.net>", 250}, {"RCPT TO:<bob@example.org>", 250}, {"DATA", 354}} {
		if err := tp.PrintfLine("%s", step.cmd); err != nil {
			return 0, "", err
		}
		if code, msg, err := tp.ReadResponse(step.want); err != nil {
			return code, msg, fmt.Errorf("%s: %w", step.cmd, err)
		}
	}
	if _, err := fmt.Fprintf(nc, "From: zoe@example.net\r\nTo: bob@example.org\r\nSubject: big %s\r\nMessage-ID: <%s>\r\n\r\n", id, id); err != nil {
		return 0, "", err
	}
	if _, err := nc.Write(body); err != nil {
		return 0, "", err
	}
	if _, err := nc.Write([]byte(".\r\n")); err != nil {
		return 0, "", err
	}
	code, msg, err := tp.ReadResponse(0)
	if err != nil && code == 0 {
		return 0, "", err
	}
	_ = tp.PrintfLine("QUIT")
	return code, msg, nil
}

// TestMemoryBudget sends 100 messages of 10 MB at once through Postfix to a
// milter process with milter.max_bytes_in_flight = 64 MiB (three such
// messages; max_message_size 16 MiB). Its resident
// memory stays under the budget plus an allowance for the runtime (Go's
// heap goal runs ahead of the live heap); the messages that do not fit get
// 451 4.3.2; and once the sender retries them (as Postfix's queue would),
// every message is stored exactly once.
func TestMemoryBudget(t *testing.T) {
	const (
		n         = 100
		size      = 10 << 20
		budget    = 64 << 20
		allowance = RuntimeAllowance
	)
	addr, child := startMilterChild(t, budget)
	pf := startPostfix(t, addr)

	line := []byte(strings.Repeat("z", 78) + "\r\n")
	body := bytes.Repeat(line, size/len(line))
	before, err := procStatus(child.pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}

	started := time.Now()
	type outcome struct {
		code int
		text string
		err  error
	}
	results := make([]outcome, n)
	send := func(ids []int, conc int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, conc)
		for _, i := range ids {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				code, text, err := sendBig(pf.SMTPAddr, fmt.Sprintf("big%d@example.net", i), body)
				results[i] = outcome{code, text, err}
			})
		}
		wg.Wait()
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	send(all, n)
	var deferred []int
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Fatalf("message %d: %v", i, r.err)
		case r.code == 250:
		case r.code == 451 && strings.HasPrefix(r.text, "4.3.2 "):
			deferred = append(deferred, i)
		default:
			t.Fatalf("message %d: %d %s, want 250 or 451 4.3.2", i, r.code, r.text)
		}
	}
	firstWave := time.Since(started)
	if len(deferred) == 0 {
		t.Fatalf("all %d messages of %d MB accepted at once under a %d MB budget", n, size>>20, budget>>20)
	}
	// The retries, as Postfix's queue would make them: a few at a time.
	retried := len(deferred)
	for round := 0; len(deferred) > 0; round++ {
		if round == 10 {
			t.Fatalf("%d messages still deferred after %d retry rounds", len(deferred), round)
		}
		send(deferred, 3) // 3 × 2 × 10 MB fit in the budget
		var again []int
		for _, i := range deferred {
			switch r := results[i]; {
			case r.err != nil:
				t.Fatalf("retry of message %d: %v", i, r.err)
			case r.code == 451:
				again = append(again, i)
			case r.code != 250:
				t.Fatalf("retry of message %d: %d %s", i, r.code, r.text)
			}
		}
		deferred = again
	}

	stored := child.waitStored(t, n)
	for i := range n {
		if id := fmt.Sprintf("big%d@example.net", i); stored[id] != 1 {
			t.Errorf("message %s stored %d times, want once", id, stored[id])
		}
	}
	peak, err := procStatus(child.pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d × %d MB: %d deferred in the first wave (%v), all stored after retries (%v in all); milter RSS %d MB at start, peak %d MB; budget %d MB + allowance %d MB",
		n, size>>20, retried, firstWave.Round(time.Millisecond), time.Since(started).Round(time.Millisecond),
		before>>10, peak>>10, budget>>20, allowance>>20)
	if peak<<10 >= budget+allowance {
		t.Errorf("milter peak RSS %d MB, want under the %d MB budget + %d MB allowance", peak>>10, budget>>20, allowance>>20)
	}
}

// buildWithoutRace builds this package's test binary without the race
// detector, whose shadow memory (several times the heap it watches) would
// be measured as the milter's. go vet has compiled the packages already
// (scripts/test.sh), so this mostly links.
func buildWithoutRace(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "milter.test")
	cmd := exec.Command("go", "test", "-c", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the milter child without -race: %v\n%s", err, out)
	}
	return bin
}

type memChild struct {
	pid    int
	mu     sync.Mutex
	stored map[string]int
}

// startMilterChild runs this test binary as a milter process (TestMain)
// with the given memory budget, and collects what it stores. With no
// budget, the child stores with copyIngester and reports nothing.
func startMilterChild(t testing.TB, budget int64) (string, *memChild) {
	t.Helper()
	addr := postfixtest.FreeAddr(t)
	bin := os.Args[0]
	if raceEnabled {
		bin = buildWithoutRace(t)
	}
	cmd := exec.Command(bin)
	// The child dies with this process, even if a time-out kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), "CALIOPEN_MILTER_CHILD="+addr)
	if budget > 0 {
		cmd.Env = append(cmd.Env, "CALIOPEN_MILTER_BUDGET="+strconv.FormatInt(budget, 10))
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.Contains(sc.Text(), "ready") {
	}
	c := &memChild{pid: cmd.Process.Pid, stored: map[string]int{}}
	go func() {
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "stored "); ok {
				c.mu.Lock()
				c.stored[id]++
				c.mu.Unlock()
			}
		}
	}()
	return addr, c
}

// waitStored waits until n distinct messages are stored, then a little
// more to catch a duplicate, and returns the counts.
func (c *memChild) waitStored(t *testing.T, n int) map[string]int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c.mu.Lock()
		got := len(c.stored)
		c.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages stored, want %d", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.stored))
	for k, v := range c.stored {
		out[k] = v
	}
	return out
}
