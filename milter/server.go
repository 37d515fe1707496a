// Package milter is Caliopen's Postfix milter: at the end of each message it
// hands the envelope and the raw bytes to ingest, which stores them, and
// answers Postfix only once the store has them. Anything that goes wrong on
// our side becomes 451 4.3.0 so the sender retries; nothing is ever silently
// accepted.
//
// It speaks the milter protocol through github.com/emersion/go-milter. That
// library replaces its per-session handler after any final answer other than
// CONTINUE, losing what was learnt at connect, HELO and STARTTLS; so this
// package keeps connection facts in a per-connection object the handlers
// share, and ends every successful message with CONTINUE, which Postfix
// treats as accept at end of message.
//
// Memory is bounded: the bytes all sessions hold at once are capped
// (Config.MaxBytesInFlight), and a message that does not fit gets 451 4.3.2
// so its sender retries; nothing is lost.
//
// The milter stores before Postfix has queued the message. Should Postfix
// still refuse it afterwards (a later milter, a queue file error), the
// sender retries and ingest's idempotent delivery keeps one copy.
package milter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/internal/allowlist"
	"github.com/caliopen/caliopen/internal/ratelog"
)

// Ingester stores one message; *ingest.Ingester implements it. An error
// means the message may not be stored: the milter asks the sender to retry
// (451), and ingest's idempotent delivery makes a partial store harmless.
type Ingester interface {
	Ingest(ctx context.Context, env ingest.Envelope, raw []byte) (ingest.Result, error)
}

// Defaults for Config's zero values.
const (
	// DefaultMaxMessageBytes matches config's milter.max_message_size and the
	// message_size_limit in contrib/postfix/main.cf.
	DefaultMaxMessageBytes = 50 << 20
	// DefaultIngestTimeout stays well under Postfix's milter_content_timeout
	// (300s by default, 60s in contrib/postfix) so we answer 451 ourselves
	// rather than leaving Postfix to time out.
	DefaultIngestTimeout = 45 * time.Second
	// DefaultShutdownTimeout bounds how long Serve waits, after its context
	// ends, for messages being stored to get their answer.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultMaxConns: Postfix opens one connection per SMTP session
	// (smtpd's default_process_limit is 100) plus one per message it
	// makes itself, through non_smtpd_milters.
	DefaultMaxConns = 512
	// DefaultIdleTimeout is far above Postfix's smtpd_timeout (300s): the
	// milter hears nothing while a slow client sends its DATA, which has
	// no overall time limit. It reclaims connections whose peer vanished.
	DefaultIdleTimeout = time.Hour
	// DefaultMaxBytesInFlight lets five messages of the largest size
	// (DefaultMaxMessageBytes, counted twice: see Config.MaxBytesInFlight)
	// or fifty of 5 MB be received and stored at once.
	DefaultMaxBytesInFlight = 512 << 20
	// refusalLogInterval: at most one line a minute about refused
	// connections, with their count.
	refusalLogInterval = time.Minute
)

// RuntimeAllowance is what a milter process needs beyond
// MaxBytesInFlight: the runtime, connection buffers, ingest's store
// clients, and the room Go's collector leaves between collections.
const RuntimeAllowance = 128 << 20

// MemoryLimit is the Go soft memory limit (runtime/debug.SetMemoryLimit)
// for a process whose memory is mostly the milter's: its budget plus
// RuntimeAllowance. Without it the collector lets the heap grow to about
// twice the live bytes between collections, so the budget alone would
// not bound the resident memory.
func MemoryLimit(maxBytesInFlight int64) int64 {
	return maxBytesInFlight + RuntimeAllowance
}

// Config holds a Server's settings and dependencies. Zero values mean the
// defaults.
type Config struct {
	// Ingester stores messages. Required.
	Ingester Ingester
	// MaxMessageBytes limits a message's header and body as received; a
	// larger one gets 552 5.3.4 and is never buffered past the limit.
	// Zero means DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// IngestTimeout bounds one Ingest call. Zero means DefaultIngestTimeout.
	IngestTimeout time.Duration
	// DiscardStored answers DISCARD, rather than CONTINUE, to a message
	// stored for every one of its recipients (ingest.Result.Complete):
	// Postfix then tells the sender 250 as usual but drops its own copy
	// instead of queueing it for the discard: transport, which saves it
	// a queue run per message. It also drops what Postfix would have added
	// itself (always_bcc, sender_bcc_maps, recipient_bcc_maps) or rewritten
	// (recipient_canonical_maps), and skips any content_filter, so leave
	// it false where those are used. A message
	// with any recipient that is not hosted always gets CONTINUE.
	DiscardStored bool
	// ShutdownTimeout bounds the drain when Serve's context ends. Zero
	// means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// MaxConns bounds the open connections over all listeners; more are
	// accepted and closed at once, and Postfix applies
	// milter_default_action (tempfail: the sender retries). Zero means
	// DefaultMaxConns.
	MaxConns int
	// IdleTimeout closes a connection on which Postfix sends nothing for
	// that long. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// AllowedClients are the TCP peers served; others are closed at once.
	// nil means loopback only. Unix socket peers are not checked: the
	// socket's directory decides who connects.
	AllowedClients []netip.Prefix
	// MaxBytesInFlight caps the memory all sessions hold for messages at
	// once. Each message counts twice its size as received: its buffered
	// bytes, then the one contiguous copy handed to the Ingester along
	// with what ingest makes of it. A message that would pass the cap gets
	// 451 4.3.2 at end of data, and the sender retries. It must be at
	// least twice MaxMessageBytes, or the largest messages could never
	// pass. Zero means DefaultMaxBytesInFlight.
	MaxBytesInFlight int64
	// Logger receives one line per message and any errors; nil discards.
	Logger *slog.Logger
	// Registerer, when set, receives the milter's Prometheus collectors.
	Registerer prometheus.Registerer
}

// Server is the milter. Create it with New; one Server may serve several
// listeners at once.
type Server struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	slots    chan struct{} // connection slots, shared by all listeners
	refusals *ratelog.Logger
	inFlight atomic.Int64 // bytes reserved by sessions, at most cfg.MaxBytesInFlight
}

// reserve takes n bytes of the in-flight budget, or reports that they
// would pass it.
func (s *Server) reserve(n int64) bool {
	for {
		cur := s.inFlight.Load()
		if cur+n > s.cfg.MaxBytesInFlight {
			return false
		}
		if s.inFlight.CompareAndSwap(cur, cur+n) {
			s.metrics.bytesInFlight.Add(float64(n))
			return true
		}
	}
}

func (s *Server) release(n int64) {
	if n != 0 {
		s.inFlight.Add(-n)
		s.metrics.bytesInFlight.Sub(float64(n))
	}
}

// New checks cfg, fills in defaults and registers the metrics.
func New(cfg Config) (*Server, error) {
	if cfg.Ingester == nil {
		return nil, errors.New("milter: Config.Ingester is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.IngestTimeout <= 0 {
		cfg.IngestTimeout = DefaultIngestTimeout
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxBytesInFlight <= 0 {
		cfg.MaxBytesInFlight = DefaultMaxBytesInFlight
	}
	if cfg.MaxBytesInFlight < 2*cfg.MaxMessageBytes {
		return nil, fmt.Errorf("milter: MaxBytesInFlight (%d) is less than twice MaxMessageBytes (%d): the largest messages would never be accepted",
			cfg.MaxBytesInFlight, cfg.MaxMessageBytes)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.AllowedClients == nil {
		cfg.AllowedClients = allowlist.Loopback
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		metrics:  m,
		slots:    make(chan struct{}, cfg.MaxConns),
		refusals: ratelog.New(cfg.Logger, "milter: refused connections", refusalLogInterval),
	}, nil
}

// Macros the milter needs, per stage, requested with SMFIF_SETSYMLIST.
// Postfix honours the request, which replaces main.cf's milter_*_macros for
// this milter (TestMacrosRequestedBySymList); contrib/postfix lists the same
// macros in main.cf anyway, so the configuration says what we rely on.
var symList = map[gomilter.Stage][]string{
	gomilter.StageConnect: {"{client_name}", "{client_addr}"},
	// TLS facts are known from the EHLO after STARTTLS.
	gomilter.StageHelo:     {"{tls_version}", "{cipher}", "{cipher_bits}"},
	gomilter.StageMailFrom: {"i", "{auth_authen}", "{tls_version}", "{cipher}", "{cipher_bits}"},
	gomilter.StageEOM:      {"i"},
}

// protocol: no callbacks for stages we do not use; header values with
// their leading white space, so headers can be rebuilt byte for byte; and
// no replies before end of message (SMFIP_NR_*). The milter only ever
// answers at end of message, so every earlier reply would be a CONTINUE that
// costs Postfix a round trip per command, header and body chunk.
const protocol = gomilter.OptNoUnknown | gomilter.OptNoData | gomilter.OptHeaderLeadingSpace |
	gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoMailReply | gomilter.OptNoRcptReply |
	gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply

// Serve answers milter connections from ln until ctx ends, then stops
// accepting, lets each message already being stored get its answer (up to
// ShutdownTimeout), closes every connection and returns nil. Postfix applies
// milter_default_action (tempfail) to sessions whose milter went away.
// Serve closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer ln.Close()
	run := &runner{
		srv:     s,
		log:     s.log,
		metrics: s.metrics,
		max:     s.cfg.MaxMessageBytes,
		timeout: s.cfg.IngestTimeout,
		conns:   map[*conn]struct{}{},
		// Ingest must finish even while Serve drains: the message is in
		// flight and its sender waits for our answer.
		ingestCtx: context.WithoutCancel(ctx),
	}

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var acceptErr error
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				// Out of file descriptors and the like pass: back off rather
				// than stop, since without the milter all mail is tempfailed.
				var te interface{ Temporary() bool }
				if errors.As(err, &te) && te.Temporary() {
					run.log.Warn("milter: accept", "err", err)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				acceptErr = fmt.Errorf("milter: accept: %w", err)
			}
			break
		}
		if !allowlist.Allows(s.cfg.AllowedClients, nc.RemoteAddr()) {
			s.metrics.refused.Inc()
			s.refusals.Note(slog.String("last_client", nc.RemoteAddr().String()), slog.String("reason", "not in milter.allowed_clients"))
			nc.Close()
			continue
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.metrics.refused.Inc()
			s.refusals.Note(slog.String("last_client", nc.RemoteAddr().String()), slog.String("reason", "milter.max_connections open"), slog.Int("max_connections", s.cfg.MaxConns))
			nc.Close()
			continue
		}
		run.serveConn(nc)
	}
	ln.Close()

	run.drain(s.cfg.ShutdownTimeout)
	return acceptErr
}

// runner is one Serve call's state.
type runner struct {
	srv       *Server
	log       *slog.Logger
	metrics   *metrics
	max       int64
	timeout   time.Duration
	ingestCtx context.Context

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool
	wg       sync.WaitGroup
}

// serveConn runs go-milter on one connection. Each connection gets its own
// go-milter Server over a one-connection listener, so that the handler
// factory can bind every handler it makes (go-milter makes a new one after
// each final answer) to this connection's facts.
func (r *runner) serveConn(nc net.Conn) {
	c := &conn{Conn: nc, run: r, done: make(chan struct{})}
	// Room for a whole body chunk packet (Postfix sends up to 64 KB).
	c.br = bufio.NewReaderSize(nc, 70<<10)
	r.mu.Lock()
	if r.draining {
		r.mu.Unlock()
		nc.Close()
		<-r.srv.slots
		return
	}
	r.conns[c] = struct{}{}
	r.wg.Add(1)
	r.mu.Unlock()
	r.metrics.connections.Inc()

	gs := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &session{c: c} },
		Actions:   gomilter.OptSetSymList,
		Protocol:  protocol,
		SymList:   symList,
	}
	go func() {
		// Returns once the connection is closed: the listener hands out
		// this one connection and then blocks until c closes.
		_ = gs.Serve(&oneConnListener{c: c})
	}()
}

// drain closes idle connections now and busy ones as soon as their answer
// is written, waiting at most timeout before closing everything.
func (r *runner) drain(timeout time.Duration) {
	r.mu.Lock()
	r.draining = true
	conns := make([]*conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.closeWhenIdle()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		r.log.Warn("milter: shutdown timeout, closing connections with messages in flight", "timeout", timeout)
		for _, c := range conns {
			c.Close()
		}
		<-done
	}
}

func (r *runner) forget(c *conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	<-r.srv.slots
	r.metrics.connections.Dec()
	r.wg.Done()
}

func (r *runner) isDraining() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.draining
}

// conn is one milter connection, which Postfix opens per SMTP session. It
// holds the SMTP connection's facts for every message on it, and knows
// whether an answer is owed, so a shutdown does not cut a stored message's
// answer.
type conn struct {
	net.Conn
	run *runner

	// facts are written and read only by go-milter's goroutine for this
	// connection (callbacks run one at a time).
	facts facts

	br *bufio.Reader

	// held is the budget the current message holds (Server.reserve),
	// given back at the end of each message and when the connection
	// closes, whichever goroutine closes it.
	held atomic.Int64

	mu        sync.Mutex
	answering bool // between end of message and the answer written
	closing   bool // close once the answer is written
	closeOnce sync.Once
	done      chan struct{}
}

// facts are what the SMTP session told us before MAIL FROM.
type facts struct {
	local                        bool // not SMTP: mail Postfix got otherwise
	clientAddr, clientName, helo string
	tlsVersion, tlsCipher        string
	tlsBits                      int
	authUser                     string
}

func (c *conn) beginAnswer() {
	c.mu.Lock()
	c.answering = true
	c.mu.Unlock()
}

// Write sends go-milter's packets; the answer to end of message is written
// in one Write (go-milter flushes a bufio.Writer per packet), after which a
// draining server may close the connection.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	closeNow := c.answering && c.closing
	c.answering = false
	c.mu.Unlock()
	if closeNow {
		c.Close()
	}
	return n, err
}

// Read buffers: go-milter reads each packet's 4-byte length and then its
// payload straight from the connection, two system calls per packet. It
// reports a connection we closed as EOF, so go-milter ends the session
// quietly instead of logging a read error.
func (c *conn) Read(p []byte) (int, error) {
	if c.br.Buffered() == 0 {
		// About to wait for Postfix: bound the wait.
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.run.srv.cfg.IdleTimeout))
	}
	n, err := c.br.Read(p)
	if err != nil {
		select {
		case <-c.done:
			return n, io.EOF
		default:
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.run.log.Info("milter: idle connection closed", "client", c.RemoteAddr().String(), "idle_timeout", c.run.srv.cfg.IdleTimeout)
			return n, io.EOF
		}
	}
	return n, err
}

func (c *conn) closeWhenIdle() {
	c.mu.Lock()
	c.closing = true
	busy := c.answering
	c.mu.Unlock()
	if !busy {
		c.Close()
	}
}

func (c *conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		close(c.done)
		c.giveBack()
		c.run.forget(c)
	})
	return err
}

// take reserves n more bytes of the budget for the current message.
func (c *conn) take(n int64) bool {
	if !c.run.srv.reserve(n) {
		return false
	}
	c.held.Add(n)
	select {
	case <-c.done:
		// Closed meanwhile, maybe after Close gave back what was held.
		c.giveBack()
	default:
	}
	return true
}

// giveBack returns what the current message holds to the budget.
func (c *conn) giveBack() {
	c.run.srv.release(c.held.Swap(0))
}

// oneConnListener yields one connection, then blocks until it closes, so
// go-milter's Serve returns when the connection ends.
type oneConnListener struct {
	c    *conn
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var first bool
	l.once.Do(func() { first = true })
	if first {
		return l.c, nil
	}
	<-l.c.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }
