package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/cassandra"
	"github.com/caliopen/caliopen/store/embedded"
)

func (a *app) cassandraConfig() cassandra.Config {
	c := a.cfg.Store.Cassandra
	return cassandra.Config{
		Hosts:          c.Hosts,
		Keyspace:       c.Keyspace,
		Replication:    c.Replication,
		Consistency:    c.Consistency,
		Timeout:        time.Duration(c.Timeout),
		ConnectTimeout: time.Duration(c.ConnectTimeout),
		Username:       c.Username,
		Password:       c.Password,
	}
}

// openStore opens the configured engine and checks it answers, so a role
// that cannot reach its store fails at start with one clear line.
func (a *app) openStore(ctx context.Context) (store.Store, error) {
	switch a.cfg.Store.Engine {
	case "cassandra":
		st, err := cassandra.Open(ctx, a.cassandraConfig(), a.log)
		if err != nil {
			return nil, fmt.Errorf("cassandra store %v: %w", a.cfg.Store.Cassandra.Hosts, err)
		}
		return st, nil
	default:
		if err := os.MkdirAll(filepath.Dir(a.cfg.Store.Path), 0o750); err != nil {
			return nil, fmt.Errorf("embedded store: %w", err)
		}
		st, err := embedded.Open(a.cfg.Store.Path)
		if err != nil {
			return nil, fmt.Errorf("embedded store %s: %w", a.cfg.Store.Path, err)
		}
		return st, nil
	}
}

func (a *app) migrate(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return errors.New("migrate takes no arguments")
	}
	if a.cfg.Store.Engine != "cassandra" {
		// The embedded store creates its buckets when it opens.
		st, err := a.openStore(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, "embedded store ready:", a.cfg.Store.Path)
		return st.Close()
	}
	if err := a.checkDurability(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := cassandra.Migrate(ctx, a.cassandraConfig(), a.log); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	fmt.Fprintln(a.stdout, "cassandra schema up to date in keyspace", a.cfg.Store.Cassandra.Keyspace)
	return nil
}

// listen binds every address before any role starts, so a port in use is
// reported at start rather than after the other roles are serving. addr is
// host:port, or unix:/path for a Unix socket (see listenUnix).
func listen(name, addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		ln, err := listenUnix(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return ln, nil
}

// listenUnix listens on a Unix socket at path, mode 0660: who may connect is
// the socket's group (the directory's, when it is set-group-ID, as
// contrib/postfix sets it up for Postfix). A socket left by a process that
// died is replaced; one still answering is another instance's, and an error.
// The socket is removed when the listener closes.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen unix:%s: a file that is not a socket is in the way", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen unix:%s: another process is listening there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen unix:%s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	return ln, nil
}

// runtime is what the roles of one process share.
type runtime struct {
	store store.Store
	reg   *prometheus.Registry
	group *errgroup.Group
	ctx   context.Context
}

// startRuntime opens the store and the operator endpoint (/healthz, /metrics).
func (a *app) startRuntime(ctx context.Context, roles string) (*runtime, func(), error) {
	if strings.Contains(roles, "milter") { // the role that answers 250
		if err := a.checkDurability(ctx); err != nil {
			return nil, nil, err
		}
	}
	st, err := a.openStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opLn, err := listen("operator", a.cfg.Operator.Listen)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	rt := &runtime{store: st, reg: reg, group: g, ctx: gctx}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := st.Ping(pctx); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	serveHTTP(rt, "operator", opLn, mux, operatorTimeouts)
	a.log.Info("caliopen started", "roles", roles, "store", a.cfg.Store.Engine, "operator", opLn.Addr().String(), "version", version)
	return rt, func() { st.Close() }, nil
}

// httpTimeouts bound what one client may hold of an HTTP server.
type httpTimeouts struct {
	readHeader, read, write, idle time.Duration
}

// operatorTimeouts suit /healthz and /metrics: small, quick answers.
var operatorTimeouts = httpTimeouts{readHeader: 10 * time.Second, read: 30 * time.Second, write: 30 * time.Second, idle: time.Minute}

// apiTimeouts are the api section's; the event stream lifts its own.
func (a *app) apiTimeouts() httpTimeouts {
	c := a.cfg.API
	return httpTimeouts{readHeader: time.Duration(c.ReadHeaderTimeout), read: time.Duration(c.ReadTimeout),
		write: time.Duration(c.WriteTimeout), idle: time.Duration(c.IdleTimeout)}
}

// serveHTTP runs h on ln inside the runtime's group and shuts it down gracefully.
func serveHTTP(rt *runtime, name string, ln net.Listener, h http.Handler, to httpTimeouts) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: to.readHeader, ReadTimeout: to.read,
		WriteTimeout: to.write, IdleTimeout: to.idle}
	rt.group.Go(func() error {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("%s: %w", name, err)
	})
	rt.group.Go(func() error {
		<-rt.ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}

// wait blocks until a signal or a role's failure, then returns the failure.
func (a *app) wait(rt *runtime) error {
	err := rt.group.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	a.log.Info("caliopen stopped")
	return nil
}

func logAttrsListen(log *slog.Logger, role string, ln net.Listener) {
	log.Info("listening", "role", role, "addr", ln.Addr().String())
}
