package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/caliopen/caliopen/api"
	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/keytrust"
	"github.com/caliopen/caliopen/lookupd"
	"github.com/caliopen/caliopen/milter"
	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/verify"
	"github.com/caliopen/caliopen/verify/dnsresolver"
)

func (a *app) resolver(st resolve.Directory) (*resolve.Resolver, error) {
	return resolve.New(resolve.Config{Store: st, Delimiter: a.cfg.Lookupd.RecipientDelimiter})
}

// dnsServer is the configured resolver, or the system's first one.
func (a *app) dnsServer() string {
	if a.cfg.DNS.Server != "" {
		return a.cfg.DNS.Server
	}
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		// Every check then ends as temperror: facts are missing, mail is not.
		a.log.Warn("no DNS resolver: set dns.server; DKIM, SPF and DMARC will be temperror", "err", err)
		return "127.0.0.1:53"
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port)
}

// verifier is the configured verification: DNS through the configured
// resolver (cached), within verify.budget per message.
func (a *app) verifier() (*verify.Verifier, error) {
	// One verifier, so one DNS cache, for ingest and the retry queue.
	if a.vfy != nil {
		return a.vfy, nil
	}
	dnsr, err := dnsresolver.New(dnsresolver.Config{
		Server:    a.dnsServer(),
		Timeout:   time.Duration(a.cfg.DNS.Timeout),
		CacheSize: a.cfg.DNS.CacheSize,
	})
	if err != nil {
		return nil, err
	}
	a.vfy, err = verify.New(verify.Config{
		Resolver:          dnsr,
		Logger:            a.log,
		TrustSpamHeaders:  a.cfg.Verify.TrustSpamHeaders,
		TrustedARCSealers: a.cfg.Verify.TrustedARCSealers,
		// Inside the milter's 45 s: a slow DNS delays facts (pending), never
		// the sender.
		Timeout: time.Duration(a.cfg.Verify.Budget),
	})
	return a.vfy, err
}

// ingester builds the one inbound path with verification wired in.
func (a *app) ingester(st store.Store) (*ingest.Ingester, error) {
	r, err := a.resolver(st)
	if err != nil {
		return nil, err
	}
	q, err := a.quotaChecker(st)
	if err != nil {
		return nil, err
	}
	v, err := a.verifier()
	if err != nil {
		return nil, err
	}
	kt, err := keytrust.New(keytrust.Config{Verify: v, Store: st, Logger: a.log})
	if err != nil {
		return nil, err
	}
	return ingest.New(ingest.Config{Store: st, Resolver: r, Quota: q, Verifier: kt, Logger: a.log})
}

// observing calls each with every delivery of a successful Ingest: the
// milter's way to tell API clients and the re-verification queue.
type observing struct {
	milter.Ingester
	each func(ingest.Delivery)
}

func (o observing) Ingest(ctx context.Context, env ingest.Envelope, raw []byte) (ingest.Result, error) {
	res, err := o.Ingester.Ingest(ctx, env, raw)
	if err == nil {
		for _, d := range res.Deliveries {
			o.each(d)
		}
	}
	return res, err
}

// notifying publishes a "message.new" event for each message ingest created,
// so API clients of the same process learn of new mail at once.
func notifying(ing milter.Ingester, hub *api.Hub) milter.Ingester {
	return observing{ing, func(d ingest.Delivery) {
		if d.Created {
			hub.Publish(d.UserID, api.Event{Type: "message.new", MessageID: d.MessageID, ConversationID: d.ConversationID, At: time.Now().UTC()})
		}
	}}
}

// retrying starts the re-verification queue (verify.retry_interval) and
// returns ing feeding it the deliveries stored with pending checks; ing
// itself when retries are off.
func (a *app) retrying(rt *runtime, ing milter.Ingester) (milter.Ingester, error) {
	if a.cfg.Verify.RetryInterval == 0 {
		return ing, nil
	}
	v, err := a.verifier()
	if err != nil {
		return nil, err
	}
	q, err := keytrust.NewQueue(keytrust.QueueConfig{Store: rt.store, Verifier: v,
		Log: a.log.With("role", "reverify"), Interval: time.Duration(a.cfg.Verify.RetryInterval)})
	if err != nil {
		return nil, err
	}
	rt.group.Go(func() error { return q.Run(rt.ctx) })
	return observing{ing, func(d ingest.Delivery) {
		if d.Pending {
			q.Add(d.UserID, d.MessageID)
		}
	}}, nil
}

func (a *app) startMilter(rt *runtime, ing milter.Ingester) error {
	ln, err := listen("milter", a.cfg.Milter.Listen)
	if err != nil {
		return err
	}
	allowed, err := a.cfg.Milter.AllowedPrefixes()
	if err != nil {
		ln.Close()
		return fmt.Errorf("milter.allowed_clients: %w", err)
	}
	srv, err := milter.New(milter.Config{
		AllowedClients:   allowed,
		Ingester:         ing,
		MaxMessageBytes:  int64(a.cfg.Milter.MaxMessageSize),
		DiscardStored:    a.cfg.Milter.DiscardStored,
		MaxConns:         a.cfg.Milter.MaxConnections,
		IdleTimeout:      time.Duration(a.cfg.Milter.IdleTimeout),
		MaxBytesInFlight: int64(a.cfg.Milter.MaxBytesInFlight),
		Logger:           a.log.With("role", "milter"),
		Registerer:       rt.reg,
	})
	if err != nil {
		ln.Close()
		return err
	}
	// Bound the heap to the budget: without a limit Go's collector lets the
	// heap reach about twice the live bytes. GOMEMLIMIT, when set, wins.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(milter.MemoryLimit(int64(a.cfg.Milter.MaxBytesInFlight)))
	}
	logAttrsListen(a.log, "milter", ln)
	rt.group.Go(func() error { return srv.Serve(rt.ctx, ln) })
	return nil
}

func (a *app) startLookupd(rt *runtime) error {
	r, err := a.resolver(rt.store)
	if err != nil {
		return err
	}
	q, err := a.quotaChecker(rt.store)
	if err != nil {
		return err
	}
	lc := a.cfg.Lookupd
	allowed, err := lc.AllowedPrefixes()
	if err != nil {
		return fmt.Errorf("lookupd.allowed_clients: %w", err)
	}
	srv, err := lookupd.New(lookupd.Config{
		Resolver:           r,
		Quota:              q,
		Logger:             a.log.With("role", "lookupd"),
		Registerer:         rt.reg,
		MaxConns:           lc.MaxConnections,
		MaxConnsPerClient:  lc.MaxConnectionsPerClient,
		IdleTimeout:        time.Duration(lc.IdleTimeout),
		AllowedClients:     allowed,
		RefusalLogInterval: time.Duration(lc.RefusalLogInterval),
	})
	if err != nil {
		return err
	}
	if a.cfg.Lookupd.Socketmap != "" {
		ln, err := listen("lookupd socketmap", a.cfg.Lookupd.Socketmap)
		if err != nil {
			return err
		}
		logAttrsListen(a.log, "lookupd socketmap", ln)
		rt.group.Go(func() error { return srv.ServeSocketmap(rt.ctx, ln) })
	}
	for addr, name := range a.cfg.Lookupd.TCPTable {
		ln, err := listen("lookupd tcp_table "+name, addr)
		if err != nil {
			return err
		}
		logAttrsListen(a.log, "lookupd tcp_table "+name, ln)
		rt.group.Go(func() error { return srv.ServeTCPTable(rt.ctx, ln, name) })
	}
	return nil
}

func (a *app) startAPI(rt *runtime, ing *ingest.Ingester, hub *api.Hub) error {
	ln, err := listen("api", a.cfg.API.Listen)
	if err != nil {
		return err
	}
	var srv *api.Server
	cfg, err := a.apiConfig(rt.store, ing, hub)
	if err == nil {
		srv, err = api.New(cfg)
	}
	if err != nil {
		ln.Close()
		return err
	}
	logAttrsListen(a.log, "api", ln)
	serveHTTP(rt, "api", ln, srv.Echo(), a.apiTimeouts())
	return nil
}

// apiConfig is the api section of the configuration, with the API's
// collaborators.
func (a *app) apiConfig(st store.Store, sent api.SentStorer, hub *api.Hub) (api.Config, error) {
	c := a.cfg.API
	sub := c.Submission
	// starttls = true: required and verified; false: plain, for a loopback relay.
	sender, err := api.NewSMTPSender(api.SMTPConfig{Addr: sub.Address, LocalName: sub.HeloName,
		Username: sub.Username, Password: sub.Password, RequireTLS: sub.StartTLS, NoTLS: !sub.StartTLS,
		Timeout: time.Duration(sub.Timeout)})
	if err != nil {
		return api.Config{}, fmt.Errorf("api.submission: %w", err)
	}
	proxies, err := c.Proxies()
	if err != nil {
		return api.Config{}, fmt.Errorf("api.trusted_proxies: %w", err)
	}
	return api.Config{
		Store:                 st,
		Logger:                a.log.With("role", "api"),
		Sender:                sender,
		Sent:                  sent,
		Hub:                   hub,
		TokenTTL:              time.Duration(c.TokenTTL),
		TokenIdle:             time.Duration(c.TokenIdle),
		MaxBody:               int64(c.MaxBody),
		OutboundAuthenticated: c.OutboundAuthenticated,
		TrustedProxies:        proxies,
		LoginUserBurst:        c.Login.UserBurst,
		LoginUserInterval:     time.Duration(c.Login.UserInterval),
		LoginAddrBurst:        c.Login.AddrBurst,
		LoginAddrInterval:     time.Duration(c.Login.AddrInterval),
		MaxConcurrentLogins:   c.Login.MaxConcurrent,
		SendBurst:             c.Send.Burst,
		SendInterval:          time.Duration(c.Send.Interval),
		Heartbeat:             time.Duration(c.Events.Heartbeat),
		MaxStreamsPerUser:     c.Events.MaxStreamsPerUser,
		MaxStreams:            c.Events.MaxStreams,
	}, nil
}

// serve runs its role; run has read its options (parseRoleFlags).
func (a *app) serve(ctx context.Context, _ []string) error {
	rt, done, err := a.startRuntime(ctx, "milter,lookupd,api")
	if err != nil {
		return err
	}
	defer done()
	hub := api.NewHub()
	ing, err := a.ingester(rt.store)
	if err != nil {
		return err
	}
	inbound, err := a.retrying(rt, notifying(ing, hub))
	if err != nil {
		return err
	}
	for _, start := range []func() error{
		func() error { return a.startLookupd(rt) },
		func() error { return a.startMilter(rt, inbound) },
		func() error { return a.startAPI(rt, ing, hub) },
	} {
		if err := start(); err != nil {
			rt.group.Go(func() error { return err }) // stops what already started
			break
		}
	}
	return a.wait(rt)
}

// milterRole runs its role; run has read its options (parseRoleFlags).
func (a *app) milterRole(ctx context.Context, _ []string) error {
	rt, done, err := a.startRuntime(ctx, "milter")
	if err != nil {
		return err
	}
	defer done()
	ing, err := a.ingester(rt.store)
	var inbound milter.Ingester
	if err == nil {
		inbound, err = a.retrying(rt, ing)
	}
	if err == nil {
		err = a.startMilter(rt, inbound)
	}
	if err != nil {
		rt.group.Go(func() error { return err })
	}
	return a.wait(rt)
}

// lookupdRole runs its role; run has read its options (parseRoleFlags).
func (a *app) lookupdRole(ctx context.Context, _ []string) error {
	rt, done, err := a.startRuntime(ctx, "lookupd")
	if err != nil {
		return err
	}
	defer done()
	if err := a.startLookupd(rt); err != nil {
		rt.group.Go(func() error { return err })
	}
	return a.wait(rt)
}

// apiRole runs its role; run has read its options (parseRoleFlags).
func (a *app) apiRole(ctx context.Context, _ []string) error {
	rt, done, err := a.startRuntime(ctx, "api")
	if err != nil {
		return err
	}
	defer done()
	// Events reach only clients of this process: new mail stored by a
	// separate milter process is seen on the next list request.
	ing, err := a.ingester(rt.store)
	if err == nil {
		err = a.startAPI(rt, ing, api.NewHub())
	}
	if err != nil {
		rt.group.Go(func() error { return err })
	}
	return a.wait(rt)
}

// sysexits(3) codes Postfix's pipe(8) understands.
const (
	exUsage    = 64
	exDataErr  = 65
	exNoUser   = 67
	exTempFail = 75
)

// deliver stores one message read on stdin for the given recipients. As a
// Postfix pipe transport: argv = caliopen deliver ${recipient}
// (flags=R adds our own Return-Path and Received: we skip the latter).
func (a *app) deliver(ctx context.Context, args []string) (err error) {
	// Any exit status Postfix does not know bounces the message: a bug
	// must only delay it.
	defer func() {
		if r := recover(); r != nil {
			err = &exitError{exTempFail, fmt.Errorf("deliver: internal error: %v", r)}
		}
	}()
	var env ingest.Envelope
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch {
		case args[0] == "--from" && len(args) > 1:
			env.MailFrom, args = args[1], args[2:]
		case args[0] == "--own-received" && len(args) > 1:
			if _, err := fmt.Sscan(args[1], &env.OwnReceived); err != nil {
				return &exitError{exUsage, fmt.Errorf("deliver: --own-received %q: %w", args[1], err)}
			}
			args = args[2:]
		default:
			return &exitError{exUsage, fmt.Errorf("usage: caliopen deliver [--from SENDER] [--own-received N] RECIPIENT...")}
		}
	}
	if len(args) == 0 {
		return &exitError{exUsage, errors.New("usage: caliopen deliver [--from SENDER] [--own-received N] RECIPIENT...")}
	}
	env.Recipients = args
	raw, err := io.ReadAll(io.LimitReader(a.stdin, int64(a.cfg.Milter.MaxMessageSize)+1))
	if err != nil {
		return &exitError{exTempFail, fmt.Errorf("deliver: read message: %w", err)}
	}
	if int64(len(raw)) > int64(a.cfg.Milter.MaxMessageSize) {
		return &exitError{exDataErr, fmt.Errorf("deliver: message larger than %d bytes", a.cfg.Milter.MaxMessageSize)}
	}
	st, err := a.openStore(ctx)
	if err != nil {
		return &exitError{exTempFail, err}
	}
	defer st.Close()
	ing, err := a.ingester(st)
	if err != nil {
		return &exitError{exTempFail, fmt.Errorf("deliver: %w", err)}
	}
	res, err := ing.Ingest(ctx, env, raw)
	if err != nil {
		return &exitError{exTempFail, fmt.Errorf("deliver: %w", err)}
	}
	if len(res.Deliveries) == 0 {
		return &exitError{exNoUser, fmt.Errorf("deliver: no hosted recipient among %s", strings.Join(args, ", "))}
	}
	for _, d := range res.Deliveries {
		state := "stored"
		if !d.Created {
			state = "already stored"
		}
		fmt.Fprintf(a.stdout, "%s message %s for user %s\n", state, d.MessageID, d.UserID)
	}
	return nil
}

// recompute re-runs the checks that were pending when messages were
// delivered (DNS down, verify.budget spent), then re-scores stored messages
// with the current Privacy Index model, for every user or the ones named.
func (a *app) recompute(ctx context.Context, args []string) error {
	v, err := a.verifier()
	if err != nil {
		return err
	}
	return a.withStore(ctx, func(st store.Store) error {
		var users []store.User
		if len(args) == 0 {
			all, err := st.ListUsers(ctx)
			if err != nil {
				return err
			}
			users = all
		}
		for _, name := range args {
			u, err := st.GetUserByName(ctx, name)
			if err != nil {
				return fmt.Errorf("user %s: %w", name, err)
			}
			users = append(users, u)
		}
		for _, u := range users {
			rv, err := keytrust.Reverify(ctx, st, v, u.ID)
			if err != nil {
				return fmt.Errorf("user %s: %w", u.Name, err)
			}
			stats, err := ingest.Recompute(ctx, st, u.ID)
			if err != nil {
				return fmt.Errorf("user %s: %w", u.Name, err)
			}
			fmt.Fprintf(a.stdout, "%s: %d messages, %d re-scored; %d with pending checks, %d completed\n",
				u.Name, stats.Messages, stats.Changed, rv.Pending, rv.Completed)
		}
		return nil
	})
}
