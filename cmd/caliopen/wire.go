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

func noArgs(cmd string, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments (configuration comes from -c, CALIOPEN_* and --set)", cmd)
	}
	return nil
}

func (a *app) resolver(st store.Store) *resolve.Resolver {
	r := resolve.New(st)
	r.Delimiter = a.cfg.Lookupd.RecipientDelimiter
	return r
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

// ingester builds the one inbound path with verification wired in.
func (a *app) ingester(st store.Store) *ingest.Ingester {
	return &ingest.Ingester{
		Store:    st,
		Resolver: a.resolver(st),
		Verifier: &keytrust.Verifier{
			Base: &verify.Verifier{
				Resolver:          dnsresolver.New(a.dnsServer(), time.Duration(a.cfg.DNS.Timeout)),
				Log:               a.log,
				TrustSpamHeaders:  a.cfg.Verify.TrustSpamHeaders,
				TrustedARCSealers: a.cfg.Verify.TrustedARCSealers,
				// Inside the milter's 45 s: a slow DNS delays facts, never the sender.
				Timeout: 20 * time.Second,
			},
			Store: st,
			Log:   a.log,
		},
		Log: a.log,
	}
}

// notifying publishes a "message.new" event for each message ingest created,
// so API clients of the same process learn of new mail at once.
type notifying struct {
	*ingest.Ingester
	hub *api.Hub
}

func (n notifying) Ingest(ctx context.Context, env ingest.Envelope, raw []byte) (ingest.Result, error) {
	res, err := n.Ingester.Ingest(ctx, env, raw)
	if err == nil {
		for _, d := range res.Deliveries {
			if d.Created {
				n.hub.Publish(d.UserID, api.Event{Type: "message.new", MessageID: d.MessageID, ConversationID: d.ConversationID, At: time.Now().UTC()})
			}
		}
	}
	return res, err
}

func (a *app) startMilter(rt *runtime, ing milter.Ingester) error {
	ln, err := listen("milter", a.cfg.Milter.Listen)
	if err != nil {
		return err
	}
	srv, err := milter.New(milter.Config{
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
	lc := a.cfg.Lookupd
	allowed, err := lc.AllowedPrefixes()
	if err != nil {
		return fmt.Errorf("lookupd.allowed_clients: %w", err)
	}
	srv, err := lookupd.New(lookupd.Config{
		Resolver:           a.resolver(rt.store),
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
	sub := a.cfg.API.Submission
	// starttls = true: required and verified; false: plain, for a loopback relay.
	smtp := api.SMTPConfig{Addr: sub.Address, Username: sub.Username, Password: sub.Password, RequireTLS: sub.StartTLS, NoTLS: !sub.StartTLS}
	srv := api.NewServer(api.Config{
		TokenTTL:  time.Duration(a.cfg.API.TokenTTL),
		BodyLimit: fmt.Sprintf("%dB", a.cfg.API.MaxBody),
	}, api.Deps{
		Store:  rt.store,
		Logger: a.log.With("role", "api"),
		Sender: api.NewSMTPSender(smtp),
		Sent:   ing,
		Hub:    hub,
	})
	logAttrsListen(a.log, "api", ln)
	serveHTTP(rt, "api", ln, srv.Echo())
	return nil
}

func (a *app) serve(ctx context.Context, args []string) error {
	if err := noArgs("serve", args); err != nil {
		return err
	}
	rt, done, err := a.startRuntime(ctx, "milter,lookupd,api")
	if err != nil {
		return err
	}
	defer done()
	hub := api.NewHub()
	ing := a.ingester(rt.store)
	for _, start := range []func() error{
		func() error { return a.startLookupd(rt) },
		func() error { return a.startMilter(rt, notifying{ing, hub}) },
		func() error { return a.startAPI(rt, ing, hub) },
	} {
		if err := start(); err != nil {
			rt.group.Go(func() error { return err }) // stops what already started
			break
		}
	}
	return a.wait(rt)
}

func (a *app) milterRole(ctx context.Context, args []string) error {
	if err := noArgs("milter", args); err != nil {
		return err
	}
	rt, done, err := a.startRuntime(ctx, "milter")
	if err != nil {
		return err
	}
	defer done()
	if err := a.startMilter(rt, a.ingester(rt.store)); err != nil {
		rt.group.Go(func() error { return err })
	}
	return a.wait(rt)
}

func (a *app) lookupdRole(ctx context.Context, args []string) error {
	if err := noArgs("lookupd", args); err != nil {
		return err
	}
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

func (a *app) apiRole(ctx context.Context, args []string) error {
	if err := noArgs("api", args); err != nil {
		return err
	}
	rt, done, err := a.startRuntime(ctx, "api")
	if err != nil {
		return err
	}
	defer done()
	// Events reach only clients of this process: new mail stored by a
	// separate milter process is seen on the next list request.
	if err := a.startAPI(rt, a.ingester(rt.store), api.NewHub()); err != nil {
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
	res, err := a.ingester(st).Ingest(ctx, env, raw)
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

// recompute re-scores stored messages with the current Privacy Index model,
// for every user or the ones named.
func (a *app) recompute(ctx context.Context, args []string) error {
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
			stats, err := ingest.Recompute(ctx, st, u.ID)
			if err != nil {
				return fmt.Errorf("user %s: %w", u.Name, err)
			}
			fmt.Fprintf(a.stdout, "%s: %d messages, %d re-scored\n", u.Name, stats.Messages, stats.Changed)
		}
		return nil
	})
}
