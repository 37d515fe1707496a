// Package api is Caliopen's JSON API for web and mobile clients: login,
// conversations, messages, contacts and their keys, sending, a stream of new
// messages, and the Privacy Index of each of them. Every handler is scoped to
// the user of the bearer token; another user's resource answers exactly like
// a resource that does not exist.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/store"
)

// Prefix is where every route of the API lives.
const Prefix = "/api/v1"

// Config holds the API's settings and collaborators. Store is required; every
// setting has a default (see withDefaults), and each is a key of the api
// section of the TOML file (docs/configuration.md).
type Config struct {
	Store Store
	// Logger receives the API's log; nil discards it.
	Logger *slog.Logger
	// Sender submits outgoing mail; nil answers POST /messages with 503.
	Sender Sender
	// Sent files what was sent into the user's mailbox; nil files nothing.
	Sent SentStorer
	// Clock is time.Now when nil.
	Clock func() time.Time
	// Hub carries new-message events to the streams; nil makes a new one.
	Hub *Hub
	// Domains feeds the Privacy Index with domain facts; optional.
	Domains DomainFacts

	// TokenTTL is how long a login token stays valid at most (default 720h);
	// TokenIdle ends it sooner when unused that long (default 168h).
	TokenTTL  time.Duration
	TokenIdle time.Duration
	// MaxBody caps request bodies in bytes (default 25 MiB: a message with
	// attachments being sent).
	MaxBody int64

	// Login rate limits: each key (user name, client address) may spend a
	// burst of failed attempts, refilled one per interval.
	LoginUserBurst    int           // default 5
	LoginUserInterval time.Duration // default 1m
	LoginAddrBurst    int           // default 20
	LoginAddrInterval time.Duration // default 10s
	// MaxConcurrentLogins bounds simultaneous password verifications, each
	// of which costs 64 MiB of Argon2id memory (default 4).
	MaxConcurrentLogins int
	// TrustedProxies are the reverse proxies in front of the API: only
	// from them is X-Forwarded-For believed (see clientIP). Empty: the
	// TCP peer is the client.
	TrustedProxies []netip.Prefix

	// SendBurst and SendInterval limit sending per user, counted in
	// envelope recipients: a burst of SendBurst (default 100, at least the
	// 100 recipients one message may have), refilled one per SendInterval
	// (default 36s: 100 an hour). Beyond it POST /messages answers 429.
	SendBurst    int
	SendInterval time.Duration

	// Heartbeat is the interval of SSE keep-alive comments (default 25s);
	// keep it under the reverse proxy's idle time-out.
	Heartbeat time.Duration
	// MaxStreamsPerUser and MaxStreams bound the open event streams of one
	// user (default 10) and of the whole server (default 10,000); beyond
	// them /events answers 429 too_many_streams.
	MaxStreamsPerUser int
	MaxStreams        int

	// OutboundAuthenticated: the relay DKIM-signs outgoing mail aligned with
	// the users' domains and those domains publish DMARC. It raises the
	// potential of channels (what recipients will verify); claim it only
	// when true.
	OutboundAuthenticated bool

	// filterScanLimit bounds how many conversations one filtered list
	// request examines (default 2000); the page may then be short, with a
	// cursor. Not a setting: tests lower it.
	filterScanLimit int
	// dummyHash replaces the costly hash verified for unknown users; tests
	// give a cheap one.
	dummyHash func() string
}

const (
	// piCacheTTL bounds how long a computed conversation PI is reused while
	// the conversation is unchanged; piCacheSize bounds the entries kept, in
	// this cache and in the contact name cache.
	piCacheTTL  = 5 * time.Minute
	piCacheSize = 100_000
	// limiterSize bounds the keys each rate limiter remembers.
	limiterSize = 100_000
)

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i <= 0 {
			*i = v
		}
	}
	def(&c.TokenTTL, 30*24*time.Hour)
	def(&c.TokenIdle, 7*24*time.Hour)
	if c.MaxBody <= 0 {
		c.MaxBody = 25 << 20
	}
	defInt(&c.LoginUserBurst, 5)
	def(&c.LoginUserInterval, time.Minute)
	defInt(&c.LoginAddrBurst, 20)
	def(&c.LoginAddrInterval, 10*time.Second)
	defInt(&c.MaxConcurrentLogins, 4)
	defInt(&c.filterScanLimit, 2000)
	def(&c.Heartbeat, 25*time.Second)
	defInt(&c.SendBurst, 100)
	def(&c.SendInterval, 36*time.Second)
	defInt(&c.MaxStreamsPerUser, 10)
	defInt(&c.MaxStreams, 10_000)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Hub == nil {
		c.Hub = NewHub()
	}
	if c.dummyHash == nil {
		c.dummyHash = newDummyHash()
	}
	return c
}

// Sender submits a message to the mail relay. An error of type
// *SubmissionError is the relay refusing it; anything else is the relay
// being unreachable or failing mid-way.
type Sender interface {
	Send(ctx context.Context, from string, to []string, msg []byte) error
}

// SentStorer files a message the user has just sent into their mailbox (the
// conversation with its recipients; recipients are the envelope's, Bcc
// included). *ingest.Ingester implements it.
type SentStorer interface {
	StoreSent(ctx context.Context, userID uuid.UUID, raw []byte, recipients []string) (ingest.Delivery, error)
}

// Store is the part of the store the API serves: a user's mailbox, contacts,
// raw messages and sessions, and their own account.
type Store interface {
	store.Mailbox
	store.Contacts
	store.Blobs
	store.Tokens
	GetUser(ctx context.Context, id uuid.UUID) (store.User, error)
	GetUserByName(ctx context.Context, name string) (store.User, error)
	UpdateUser(ctx context.Context, u store.User) error
	ListAddresses(ctx context.Context, userID uuid.UUID) ([]store.Address, error)
}

// Server holds the API's state. Build it with New; serve Echo().
type Server struct {
	cfg     Config
	st      Store
	log     *slog.Logger
	sender  Sender
	sent    SentStorer
	now     func() time.Time
	hub     *Hub
	domains DomainFacts

	userLimiter *limiter
	addrLimiter *limiter
	netLimiter  *limiter // IPv6 /48s
	sendLimiter *limiter
	loginSlots  chan struct{}
	dummyHash   func() string
	piCache     *piCache
	names       *ttlCache[ownedID, contactName]
	revoked     *revocations

	e *echo.Echo
}

// New builds the API; serve its Echo() (every route is under Prefix).
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: Config.Store is required")
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:         cfg,
		st:          cfg.Store,
		log:         cfg.Logger,
		sender:      cfg.Sender,
		sent:        cfg.Sent,
		now:         cfg.Clock,
		hub:         cfg.Hub,
		domains:     cfg.Domains,
		userLimiter: newLimiter(cfg.LoginUserBurst, cfg.LoginUserInterval, limiterSize),
		addrLimiter: newLimiter(cfg.LoginAddrBurst, cfg.LoginAddrInterval, limiterSize),
		netLimiter:  newNetLimiter(cfg),
		sendLimiter: newLimiter(cfg.SendBurst, cfg.SendInterval, limiterSize),
		loginSlots:  make(chan struct{}, cfg.MaxConcurrentLogins),
		dummyHash:   cfg.dummyHash,
		piCache:     newPICache(piCacheTTL, piCacheSize),
		names:       newTTLCache[ownedID, contactName](contactNameTTL, piCacheSize),
		revoked:     newRevocations(),
	}
	s.e = s.routes()
	return s, nil
}

// Echo returns the HTTP handler.
func (s *Server) Echo() *echo.Echo { return s.e }

// Hub returns the event hub new messages are published to.
func (s *Server) Hub() *Hub { return s.hub }

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.IPExtractor = s.clientIP
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		// The panic and its stack go to our log, never to the client.
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.ErrorContext(c.Request().Context(), "panic in handler",
				"method", c.Request().Method, "path", c.Path(), "panic", err.Error(), "stack", string(stack))
			return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
		},
	}))
	e.Use(middleware.BodyLimit(strconv.FormatInt(s.cfg.MaxBody, 10) + "B"))
	e.Use(s.securityHeaders)

	g := e.Group(Prefix)
	g.GET("/openapi.json", s.openAPI)
	g.POST("/login", s.login, smallBody)

	a := g.Group("", s.authenticate)
	a.POST("/logout", s.logout)

	a.GET("/me", s.getMe)
	a.POST("/me/password", s.changePassword, smallBody)

	a.GET("/conversations", s.listConversations)
	a.GET("/conversations/:id", s.getConversation)
	a.DELETE("/conversations/:id", s.deleteConversation)
	a.GET("/conversations/:id/messages", s.listMessages)

	a.POST("/messages", s.sendMessage)
	a.GET("/messages/:id", s.getMessage)
	a.PATCH("/messages/:id", s.patchMessage)
	a.DELETE("/messages/:id", s.deleteMessage)
	a.GET("/messages/:id/raw", s.getRaw)
	a.GET("/messages/:id/attachments/:part", s.getAttachment)

	a.GET("/contacts", s.listContacts)
	a.POST("/contacts", s.createContact)
	a.GET("/contacts/:id", s.getContact)
	a.PATCH("/contacts/:id", s.patchContact)
	a.DELETE("/contacts/:id", s.deleteContact)
	a.GET("/contacts/:id/privacy", s.contactPrivacy)
	a.GET("/contacts/:id/keys", s.listKeys)
	a.POST("/contacts/:id/keys", s.importKey, keyBody)
	a.POST("/contacts/:id/keys/:fingerprint/verify", s.verifyKey)
	a.DELETE("/contacts/:id/keys/:fingerprint", s.deleteKey)

	a.GET("/events", s.events)

	// A known path with another method is 405, not 404 (echo's group
	// catch-alls would otherwise answer 404 for it).
	e.RouteNotFound(Prefix+"/*", s.notFound)
	g.RouteNotFound("/*", s.notFound)
	a.RouteNotFound("/*", s.notFound)
	return e
}

// notFound answers 405 with Allow when the path is routed for other methods,
// else 404.
func (s *Server) notFound(c echo.Context) error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		rc := s.e.NewContext(nil, nil)
		s.e.Router().Find(m, c.Request().URL.Path, rc)
		if p := rc.Path(); p != "" && !strings.HasSuffix(p, "*") {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		return errNotFound
	}
	c.Response().Header().Set(echo.HeaderAllow, strings.Join(allow, ", "))
	return &Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "method not allowed"}
}

// securityHeaders keeps browsers from sniffing or framing API answers, and
// from caching what is personal.
func (s *Server) securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		return next(c)
	}
}

// smallBodyLimit caps the bodies of routes that take a few short fields
// (login, password change), under the general api.max_body that a message with
// attachments needs.
const smallBodyLimit = "16K"

var (
	smallBody = middleware.BodyLimit(smallBodyLimit)
	// keyBody fits one armored key of maxArmoredKey, JSON-escaped.
	keyBody = middleware.BodyLimit("1M")
)

// noContent answers 204.
func noContent(c echo.Context) error { return c.NoContent(http.StatusNoContent) }
