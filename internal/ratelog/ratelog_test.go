package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

type counter struct {
	mu     sync.Mutex
	lines  int
	events int64
}

func (c *counter) Enabled(context.Context, slog.Level) bool { return true }
func (c *counter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *counter) WithGroup(string) slog.Handler            { return c }
func (c *counter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines++
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "count" {
			c.events += a.Value.Int64()
		}
		return true
	})
	return nil
}

func (c *counter) get() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lines, c.events
}

// 9,000 events in a burst are two lines: the first at once, the rest when
// the interval ends, and every event is counted.
func TestBurst(t *testing.T) {
	c := &counter{}
	l := New(slog.New(c), "refused", 100*time.Millisecond)
	for range 9000 {
		l.Note(slog.String("client", "x"))
	}
	if lines, n := c.get(); lines != 1 || n != 1 {
		t.Fatalf("right after the burst: %d lines counting %d, want 1 line counting 1", lines, n)
	}
	time.Sleep(300 * time.Millisecond)
	if lines, n := c.get(); lines != 2 || n != 9000 {
		t.Fatalf("after the interval: %d lines counting %d, want 2 lines counting 9000", lines, n)
	}
}
