// Package ratelog logs a recurring event at most once per interval, with
// how many times it happened: a flood of refused connections is one
// attack, and thousands of identical lines would bury everything else.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger writes msg at Warn. The first event is logged at once; those that
// follow within the interval are counted and logged as one line when it
// ends, with the attributes of the latest. Its zero value is not usable:
// build it with New.
type Logger struct {
	log      *slog.Logger
	msg      string
	interval time.Duration

	mu      sync.Mutex
	last    time.Time // when the last line was written
	pending int       // events since then, not yet logged
	attrs   []slog.Attr
	timer   *time.Timer
}

// New returns a Logger writing msg to log (nil discards) at most once per
// interval.
func New(log *slog.Logger, msg string, interval time.Duration) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Logger{log: log, msg: msg, interval: interval}
}

// Note records one event; attrs describe it (the line shows the latest's).
func (l *Logger) Note(attrs ...slog.Attr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending++
	l.attrs = attrs
	if wait := l.interval - time.Since(l.last); wait > 0 {
		if l.timer == nil {
			l.timer = time.AfterFunc(wait, l.flush)
		}
		return
	}
	l.writeLocked()
}

func (l *Logger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	if l.pending > 0 {
		l.writeLocked()
	}
}

func (l *Logger) writeLocked() {
	attrs := append([]slog.Attr{slog.Int("count", l.pending)}, l.attrs...)
	attrs = append(attrs, slog.Duration("log_interval", l.interval))
	l.log.LogAttrs(context.Background(), slog.LevelWarn, l.msg, attrs...)
	l.pending = 0
	l.last = time.Now()
}
