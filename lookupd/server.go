// Package lookupd answers Postfix's table lookups from the store: which
// domains and mailboxes are hosted, what aliases rewrite to, and which logins
// may send as an address. It speaks two Postfix client protocols:
//
//   - socketmap (socketmap_table(5)): netstring requests "name key", one
//     listener serves every map;
//   - tcp_table (tcp_table(5)): "get key" lines; the request carries no map
//     name, so each listener serves one map.
//
// Every answer comes from resolve.Resolver, the same code ingest uses to find
// the users a recipient reaches. A store failure is always answered as a
// temporary error (socketmap TEMP, tcp_table 400) and never as "not found",
// which would make Postfix reject the recipient for good.
//
// No client can starve Postfix of lookups: connections are capped in
// total, per TCP client and by an address allow-list, and refusals are
// logged at most once per interval. On one host with Postfix, serve the
// socketmap on a Unix socket of mode 0660 whose group is Postfix's: then no
// other local user can connect at all.
//
// Postfix configuration (socketmap):
//
//	virtual_mailbox_domains = socketmap:inet:127.0.0.1:2525:domains
//	virtual_mailbox_maps    = socketmap:inet:127.0.0.1:2525:mailboxes
//	virtual_alias_maps      = socketmap:inet:127.0.0.1:2525:aliases
//	smtpd_sender_login_maps = socketmap:inet:127.0.0.1:2525:senders
//	smtpd_recipient_restrictions = check_recipient_access socketmap:inet:127.0.0.1:2525:quota
package lookupd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caliopen/caliopen/internal/allowlist"
	"github.com/caliopen/caliopen/internal/ratelog"
	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
)

// Map names, as given in socketmap requests and to ServeTCPTable.
const (
	// MapDomains is for virtual_mailbox_domains: the value is the domain.
	MapDomains = "domains"
	// MapMailboxes is for virtual_mailbox_maps: the value is the hosted
	// mailbox address (a placeholder for Postfix with virtual_transport =
	// discard, since the milter has stored the message already).
	MapMailboxes = "mailboxes"
	// MapAliases is for virtual_alias_maps: comma-separated targets.
	MapAliases = "aliases"
	// MapSenders is for smtpd_sender_login_maps: comma-separated logins.
	MapSenders = "senders"
)

// Protocol limits set by Postfix's clients.
const (
	// SocketmapMaxReply is Postfix's socketmap_max_reply default: the most
	// a socketmap reply (netstring payload) may hold.
	SocketmapMaxReply = 100000
	// TCPTableMaxReply is the most a tcp_table reply line may hold,
	// including status and newline.
	TCPTableMaxReply = 4096
)

// Defaults for Config's zero values.
const (
	DefaultMaxConns = 1024
	// DefaultMaxConnsPerClient leaves half the slots to other clients.
	// Postfix on one host connects from one address, once per process
	// that uses a table (smtpd, cleanup, trivial-rewrite...).
	DefaultMaxConnsPerClient = 512
	// DefaultRefusalLogInterval: at most one line a minute about refused
	// connections, however many there are.
	DefaultRefusalLogInterval = time.Minute
	DefaultIdleTimeout        = 2 * time.Minute
	DefaultWriteTimeout       = 10 * time.Second
	DefaultLookupTimeout      = 10 * time.Second
	DefaultMaxRequestSize     = 4096
)

// Resolver answers lookups; *resolve.Resolver implements it. It is the
// same code ingest uses to find the users a recipient reaches.
type Resolver interface {
	Domain(ctx context.Context, name string) (store.Domain, error)
	Mailbox(ctx context.Context, addr string) (store.Address, error)
	Alias(ctx context.Context, addr string) ([]string, error)
	Logins(ctx context.Context, addr string) ([]string, error)
	Users(ctx context.Context, addr string) ([]store.Address, error) // the quota map
}

var _ Resolver = (*resolve.Resolver)(nil)

// Config holds a Server's settings and dependencies. Zero values mean the
// defaults.
type Config struct {
	// Resolver answers the lookups. Required.
	Resolver Resolver
	// Logger receives lookup failures and protocol errors (Warn), and every
	// lookup at Debug. Nil discards.
	Logger *slog.Logger
	// Registerer receives the server's metrics. Nil registers nowhere.
	Registerer prometheus.Registerer
	// MaxConns bounds concurrent connections over all listeners; more are
	// accepted and closed at once, so the client fails fast (Postfix then
	// defers) instead of hanging in the listen backlog. Each Postfix process
	// that uses the tables keeps one connection per server address.
	MaxConns int
	// MaxConnsPerClient bounds the connections open from one TCP client
	// (an IPv4 address or an IPv6 /64), so that one client cannot take
	// every slot. Unix socket clients count only against MaxConns: who may
	// connect there is the socket's group.
	MaxConnsPerClient int
	// AllowedClients are the TCP peers served; others are closed at once.
	// Nil means loopback only (127.0.0.0/8 and ::1). Loopback is any local
	// user: beside Postfix, listen on a Unix socket instead, which only
	// its group can reach.
	AllowedClients []netip.Prefix
	// RefusalLogInterval is the least time between two log lines about
	// refused connections; each line counts the refusals since the last.
	RefusalLogInterval time.Duration
	// IdleTimeout closes a connection that sends no request for that long.
	// Postfix's socketmap client closes its own after 10 s idle.
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one reply to a client that does not read.
	WriteTimeout time.Duration
	// LookupTimeout bounds one lookup in the store; past it the client gets
	// a temporary error.
	LookupTimeout time.Duration
	// MaxRequestSize bounds one request as sent: the socketmap netstring
	// payload, or the tcp_table line. Hosted addresses are at most 64+1+253
	// octets, so the default leaves ample room.
	MaxRequestSize int
	// Quota answers the quota map; nil: every key is not found there.
	Quota Quota
}

// Server answers Postfix table lookups. Create it with New; one Server may
// serve any number of listeners of both protocols at once.
type Server struct {
	res      Resolver
	log      *slog.Logger
	cfg      Config
	admit    *admission
	refusals *ratelog.Logger
	metrics  *metrics
}

// New returns a Server answering from cfg.Resolver and registers its
// metrics with cfg.Registerer.
func New(cfg Config) (*Server, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("lookupd: Config.Resolver is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerClient <= 0 {
		cfg.MaxConnsPerClient = DefaultMaxConnsPerClient
	}
	if cfg.AllowedClients == nil {
		cfg.AllowedClients = allowlist.Loopback
	}
	if cfg.RefusalLogInterval <= 0 {
		cfg.RefusalLogInterval = DefaultRefusalLogInterval
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.MaxRequestSize <= 0 {
		cfg.MaxRequestSize = DefaultMaxRequestSize
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Server{
		res:      cfg.Resolver,
		log:      cfg.Logger,
		cfg:      cfg,
		admit:    newAdmission(cfg),
		refusals: ratelog.New(cfg.Logger, "lookupd refused connections", cfg.RefusalLogInterval),
		metrics:  m,
	}, nil
}

// mapKind is a table this server answers.
type mapKind int

const (
	mapDomains mapKind = iota
	mapMailboxes
	mapAliases
	mapSenders
	mapQuota
	numMaps
)

func parseMap(name string) (mapKind, bool) {
	switch name {
	case MapDomains:
		return mapDomains, true
	case MapMailboxes:
		return mapMailboxes, true
	case MapAliases:
		return mapAliases, true
	case MapSenders:
		return mapSenders, true
	case MapQuota:
		return mapQuota, true
	}
	return 0, false
}

func (m mapKind) String() string {
	switch m {
	case mapDomains:
		return MapDomains
	case mapMailboxes:
		return MapMailboxes
	case mapAliases:
		return MapAliases
	case mapSenders:
		return MapSenders
	case mapQuota:
		return MapQuota
	}
	return fmt.Sprintf("map(%d)", int(m))
}

// result is a lookup's outcome, as both protocols can express it.
type result int

const (
	found    result = iota
	notFound        // socketmap NOTFOUND, tcp_table 500
	tempFail        // socketmap TEMP, tcp_table 400: store failure, timeout
	permFail        // socketmap PERM, tcp_table 400: bad request, reply too large
	numResults
)

func (r result) String() string {
	switch r {
	case found:
		return "found"
	case notFound:
		return "notfound"
	case tempFail:
		return "temp"
	case permFail:
		return "perm"
	}
	return fmt.Sprintf("result(%d)", int(r))
}

// lookup answers key in map m. The value of a found key is what Postfix
// gets; err explains a temporary failure.
func (s *Server) lookup(ctx context.Context, m mapKind, key string) (value string, res result, err error) {
	// An in-flight lookup finishes even when the server shuts down: the
	// client is waiting for it. The timeout still bounds it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.LookupTimeout)
	defer cancel()
	// A bug in the resolver or an engine must cost one deferred
	// recipient, not the daemon (which may also run the milter and API).
	defer func() {
		if p := recover(); p != nil {
			value, res, err = "", tempFail, fmt.Errorf("lookupd: panic in lookup: %v\n%s", p, debug.Stack())
		}
	}()

	switch m {
	case mapDomains:
		var d store.Domain
		if d, err = s.res.Domain(ctx, key); err == nil {
			value = d.Name
		}
	case mapMailboxes:
		var a store.Address
		if a, err = s.res.Mailbox(ctx, key); err == nil {
			value = a.Address
		}
	case mapAliases:
		var targets []string
		if targets, err = s.res.Alias(ctx, key); err == nil {
			value = strings.Join(targets, ",")
		}
	case mapSenders:
		var logins []string
		if logins, err = s.res.Logins(ctx, key); err == nil {
			value = strings.Join(logins, ",")
		}
	case mapQuota:
		value, err = s.quotaLookup(ctx, key)
	default:
		return "", permFail, fmt.Errorf("lookupd: unknown map %v", m)
	}
	switch {
	case err == nil:
		if value == "" {
			// Postfix would read an empty value as "found, nothing": an
			// alias with no targets is a store inconsistency, not an answer.
			return "", tempFail, errors.New("lookupd: empty value")
		}
		return value, found, nil
	case isNotFound(err):
		return "", notFound, nil
	}
	return "", tempFail, err
}

// isNotFound reports whether err means the key is not hosted, and nothing
// else: any hint of a failure wins, since answering "not found" to a
// failure bounces mail.
func isNotFound(err error) bool {
	return errors.Is(err, store.ErrNotFound) &&
		!errors.Is(err, store.ErrUnavailable) &&
		!errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, context.Canceled)
}

// observe records one lookup in metrics and, at Debug, in the log.
func (s *Server) observe(ctx context.Context, p protocol, m mapKind, key string, res result, err error, took time.Duration) {
	s.metrics.lookups[p][m][res].Inc()
	s.metrics.latency[m].Observe(took.Seconds())
	switch {
	case err != nil:
		s.log.LogAttrs(ctx, slog.LevelWarn, "lookup failed",
			slog.String("protocol", p.String()), slog.String("map", m.String()),
			slog.String("key", key), slog.String("result", res.String()), slog.Any("err", err))
	case s.log.Enabled(ctx, slog.LevelDebug):
		s.log.LogAttrs(ctx, slog.LevelDebug, "lookup",
			slog.String("protocol", p.String()), slog.String("map", m.String()),
			slog.String("key", key), slog.String("result", res.String()), slog.Duration("took", took))
	}
}

// protocol is a wire protocol this server speaks.
type protocol int

const (
	protoSocketmap protocol = iota
	protoTCPTable
	numProtocols
)

func (p protocol) String() string {
	if p == protoTCPTable {
		return "tcp_table"
	}
	return "socketmap"
}

// conn is one client connection. Shutdown interrupts a connection only
// between requests, or while it waits for one; mu orders that against the
// handler arming its read deadline.
type conn struct {
	nc      net.Conn
	mu      sync.Mutex
	closing bool
}

// waitRequest arms the idle timeout before reading the next request. It
// returns false once the server is shutting down.
func (c *conn) waitRequest(idle time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(idle))
	return true
}

func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	// Wakes a handler blocked waiting for a request; one busy with a lookup
	// writes its reply, then sees closing in waitRequest.
	_ = c.nc.SetReadDeadline(time.Now())
}

func (c *conn) write(b []byte, timeout time.Duration) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.nc.Write(b)
	return err
}

// serve accepts connections on ln until ctx is done, then closes ln and
// waits for every connection to finish its current request.
func (s *Server) serve(ctx context.Context, ln net.Listener, p protocol, handle func(context.Context, *conn)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// Also shut connections down when the listener fails, rather than
	// waiting for them to idle out. ln.Close hangs off this context, so
	// by the time Accept fails for shutdown, ctx.Err() says so.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	log := s.log.With(slog.String("protocol", p.String()), slog.String("listen", ln.Addr().String()))
	log.Info("lookupd listening")
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				log.Info("lookupd stopped")
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("lookupd: accept on %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors, aborted handshakes: transient. Back
			// off so a persistent failure does not spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("accept failed", slog.Any("err", err), slog.Duration("retry_in", backoff))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		release, refused := s.admit.admit(nc.RemoteAddr())
		if refused != "" {
			// Closed at once, so the client fails fast (Postfix then
			// defers) instead of hanging in the listen backlog.
			s.metrics.rejected[refused].Inc()
			s.refusals.Note(slog.String("last_reason", refused), slog.String("last_client", nc.RemoteAddr().String()))
			nc.Close()
			continue
		}
		c := &conn{nc: nc}
		wg.Go(func() {
			defer release()
			defer nc.Close()
			stopConn := context.AfterFunc(ctx, c.shutdown)
			defer stopConn()
			gauge := s.metrics.conns[p]
			gauge.Inc()
			defer gauge.Dec()
			handle(ctx, c)
		})
	}
}

// readFailed logs why reading a request ended. Waiting idle past the
// timeout, the client closing, and shutdown are normal.
func (s *Server) readFailed(ctx context.Context, p protocol, c *conn, err error, started bool) {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
	case !started && errors.Is(err, io.EOF):
	case !started && errors.As(err, &ne) && ne.Timeout():
		s.log.Debug("idle connection closed", slog.String("protocol", p.String()),
			slog.String("client", c.nc.RemoteAddr().String()))
	default:
		s.metrics.protoErrors[p].Inc()
		s.log.Warn("reading request failed", slog.String("protocol", p.String()),
			slog.String("client", c.nc.RemoteAddr().String()), slog.Any("err", err))
	}
}

// protocolError counts and logs a malformed request that the server
// answered (and possibly closed the connection for).
func (s *Server) protocolError(p protocol, c *conn, msg string) {
	s.metrics.protoErrors[p].Inc()
	s.log.Warn("malformed request", slog.String("protocol", p.String()),
		slog.String("client", c.nc.RemoteAddr().String()), slog.String("error", msg))
}

// sanitize makes free text safe for either protocol's reply: one line of
// printable ASCII.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f {
			return '?'
		}
		return r
	}, s)
}

// metrics are the server's Prometheus collectors, resolved per label set
// up front so a lookup pays no label hashing.
type metrics struct {
	lookups     [numProtocols][numMaps][numResults]prometheus.Counter
	latency     [numMaps]prometheus.Observer
	conns       [numProtocols]prometheus.Gauge
	protoErrors [numProtocols]prometheus.Counter
	rejected    map[string]prometheus.Counter // by refusal reason
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caliopen", Subsystem: "lookupd", Name: "lookups_total",
		Help: "Postfix table lookups answered, by protocol, map and result (found, notfound, temp, perm).",
	}, []string{"protocol", "map", "result"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caliopen", Subsystem: "lookupd", Name: "lookup_duration_seconds",
		Help:    "Time to answer one lookup from the store, by map.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 4, 9), // 50µs … 3.3s
	}, []string{"map"})
	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caliopen", Subsystem: "lookupd", Name: "connections",
		Help: "Open client connections, by protocol.",
	}, []string{"protocol"})
	protoErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caliopen", Subsystem: "lookupd", Name: "protocol_errors_total",
		Help: "Malformed, oversized or truncated requests, by protocol.",
	}, []string{"protocol"})
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caliopen", Subsystem: "lookupd", Name: "connections_rejected_total",
		Help: "Connections closed at once, by reason: max_conns (lookupd.max_connections open), max_per_client (lookupd.max_connections_per_client open from that client), not_allowed (outside lookupd.allowed_clients).",
	}, []string{"reason"})
	if reg != nil {
		for _, c := range []prometheus.Collector{lookups, latency, conns, protoErrors, rejected} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("lookupd: registering metrics: %w", err)
			}
		}
	}
	m := &metrics{rejected: map[string]prometheus.Counter{}}
	for _, r := range []string{refusedTotal, refusedPerClient, refusedNotAllowed} {
		m.rejected[r] = rejected.WithLabelValues(r)
	}
	for p := range numProtocols {
		m.conns[p] = conns.WithLabelValues(p.String())
		m.protoErrors[p] = protoErrors.WithLabelValues(p.String())
		for k := range numMaps {
			for r := range numResults {
				m.lookups[p][k][r] = lookups.WithLabelValues(p.String(), k.String(), r.String())
			}
		}
	}
	for k := range numMaps {
		m.latency[k] = latency.WithLabelValues(k.String())
	}
	return m, nil
}
