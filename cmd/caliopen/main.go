// Command caliopen is the whole of Caliopen in one binary: the Postfix milter,
// the Postfix lookup daemon, the JSON API, and the administration commands.
//
// Usage: caliopen [-c FILE] [--set key=value]… COMMAND [ARGS]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/caliopen/caliopen/internal/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `caliopen — a privacy-first messaging back end for Postfix

Usage: caliopen [-c FILE] [--set key=value]... COMMAND [ARGS]

Roles (run until stopped by SIGINT/SIGTERM):
  serve                    milter + lookupd + api in one process (embedded store)
  milter                   the Postfix milter alone
  lookupd                  the Postfix socketmap/tcp_table server alone
  api                      the JSON API alone

Set-up and administration:
  migrate                  create or upgrade the store schema
  domain add|list|remove   hosted mail domains
  user add|list|passwd|logout|key|remove
                           accounts (passwords are read from the terminal or stdin);
                           passwd and logout end every API session of the user
  address add|list|remove  a user's mailbox addresses
  alias add|list|remove    aliases and catch-alls (@domain), with several targets
  deliver RECIPIENT...     store one message read on stdin (Postfix pipe transport)
  recompute [LOGIN...]     re-score stored messages with the current Privacy Index model
  config                   print the effective configuration keys and values
  version

Global options:
  -c, --config FILE        TOML configuration (default: none; see contrib/caliopen.toml)
  --set key=value          override one key (repeatable); CALIOPEN_* variables also work

Run "caliopen COMMAND -h" for a command's own options.
`

// app is what every command gets: the configuration and a logger.
type app struct {
	cfg    config.Config
	log    *slog.Logger
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// exitError carries a process exit status (sysexits for deliver).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		// One line, no stack: operators and scripts read it.
		fmt.Fprintln(os.Stderr, "caliopen:", strings.ReplaceAll(err.Error(), "\n", "; "))
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func run(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("caliopen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	var cfgPath string
	var sets multiFlag
	fs.StringVar(&cfgPath, "c", "", "configuration file")
	fs.StringVar(&cfgPath, "config", "", "configuration file")
	fs.Var(&sets, "set", "key=value")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	if cfgPath == "" {
		cfgPath = lookupEnv(environ, "CALIOPEN_CONFIG")
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "caliopen", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	var env []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "CALIOPEN_CONFIG=") {
			env = append(env, kv)
		}
	}
	cfg, err := config.Load(cfgPath, env, sets)
	if err != nil {
		if cmd == "deliver" {
			// Not EX_CONFIG: Postfix bounces that (5.3.5), and a config
			// being edited must only delay mail.
			return &exitError{exTempFail, err}
		}
		return err
	}
	a := &app{cfg: cfg, log: newLogger(cfg, stderr), stdin: stdin, stdout: stdout, stderr: stderr}
	commands := map[string]func(context.Context, []string) error{
		"serve":     a.serve,
		"milter":    a.milterRole,
		"lookupd":   a.lookupdRole,
		"api":       a.apiRole,
		"migrate":   a.migrate,
		"domain":    a.domainCmd,
		"user":      a.userCmd,
		"address":   a.addressCmd,
		"alias":     a.aliasCmd,
		"deliver":   a.deliver,
		"recompute": a.recompute,
		"config":    a.printConfig,
	}
	f, ok := commands[cmd]
	if !ok {
		return fmt.Errorf("unknown command %q (run caliopen help)", cmd)
	}
	return f(ctx, rest)
}

func lookupEnv(environ []string, key string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (a *app) printConfig(_ context.Context, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("config takes no arguments")
	}
	for _, k := range config.Keys() {
		v, _ := config.Get(a.cfg, k)
		fmt.Fprintf(a.stdout, "%s = %s\n", k, v)
	}
	return nil
}
