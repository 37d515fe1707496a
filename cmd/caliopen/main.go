// Command caliopen is the whole of Caliopen in one binary: the Postfix milter,
// the Postfix lookup daemon, the JSON API, and the administration commands.
//
// Usage: caliopen [-c FILE] [--set key=value]… COMMAND [ARGS]
//
// The roles (serve, milter, lookupd, api) also take -c and --set after their
// name: caliopen serve -c FILE.
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
	"github.com/caliopen/caliopen/verify"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `caliopen — a privacy-first messaging back end for Postfix

Usage: caliopen [-c FILE] [--set key=value]... COMMAND [ARGS]

Roles (run until stopped by SIGINT/SIGTERM; -c and --set may also follow
the role's name, as in "caliopen serve -c FILE"):
  serve                    milter + lookupd + api in one process (embedded store)
  milter                   the Postfix milter alone
  lookupd                  the Postfix socketmap/tcp_table server alone
  api                      the JSON API alone

Set-up and administration:
  migrate                  create or upgrade the store schema
  domain add|list|remove   hosted mail domains
  user add|list|passwd|logout|key|remove|quota
                           accounts (passwords are read from the terminal or stdin);
                           passwd and logout end every API session of the user;
                           quota LOGIN [SIZE|default|unlimited] shows or sets a mailbox quota
  address add|list|remove  a user's mailbox addresses
  alias add|list|remove    aliases and catch-alls (@domain), with several targets
  deliver RECIPIENT...     store one message read on stdin (Postfix pipe transport)
  recompute [LOGIN...]     re-run pending checks, re-score stored messages with the current Privacy Index model
  compact                  rewrite the embedded store file without deleted data (server stopped)
  config                   print the effective configuration keys and values
  version

Global options:
  -c, --config FILE        TOML configuration (default: none; see contrib/caliopen.toml)
  --set key=value          override one key (repeatable); CALIOPEN_* variables also work

Run "caliopen COMMAND -h" for a command's own options.
`

// roles are the long-running commands, with their one-line descriptions.
var roles = map[string]string{
	"serve":   "milter + lookupd + api in one process (embedded store)",
	"milter":  "the Postfix milter alone",
	"lookupd": "the Postfix socketmap/tcp_table server alone",
	"api":     "the JSON API alone",
}

const roleUsage = `Usage: caliopen [GLOBAL OPTIONS] %[1]s [-c FILE] [--set key=value]...

%[1]s: %[2]s; runs until stopped by SIGINT or SIGTERM.
It takes no arguments: its settings come from the configuration.

Options (also accepted before %[1]s; given after it, they win):
  -c, --config FILE        TOML configuration (default: none, or $CALIOPEN_CONFIG;
                           beside Postfix: contrib/caliopen.toml)
  --set key=value          override one key (repeatable); CALIOPEN_* variables also work
  -h, --help               this help

Keys, defaults and meanings: docs/configuration.md; "caliopen config" prints
the effective values.
`

// app is what every command gets: the configuration and a logger.
type app struct {
	cfg    config.Config
	log    *slog.Logger
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// vfy is the process's one verifier (and DNS cache), built on first use.
	vfy *verify.Verifier
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
	configFlags(fs, &cfgPath, &sets)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return flag.ErrHelp
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
	if desc, ok := roles[cmd]; ok {
		help, err := parseRoleFlags(cmd, desc, rest, &cfgPath, &sets, stdout)
		if err != nil || help {
			return err
		}
		rest = nil
	}
	if cfgPath == "" {
		cfgPath = lookupEnv(environ, "CALIOPEN_CONFIG")
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
		"compact":   a.compact,
		"config":    a.printConfig,
	}
	f, ok := commands[cmd]
	if !ok {
		return fmt.Errorf("unknown command %q (run caliopen help)", cmd)
	}
	return f(ctx, rest)
}

// configFlags defines the options that say where the configuration comes from.
func configFlags(fs *flag.FlagSet, cfgPath *string, sets *multiFlag) {
	fs.StringVar(cfgPath, "c", *cfgPath, "configuration file")
	fs.StringVar(cfgPath, "config", *cfgPath, "configuration file")
	fs.Var(sets, "set", "key=value")
}

// parseRoleFlags reads the options given after a role's name into cfgPath
// and sets, so that "caliopen serve -c FILE" works as "caliopen -c FILE
// serve" does. help reports that -h or --help printed the role's usage.
func parseRoleFlags(cmd, desc string, args []string, cfgPath *string, sets *multiFlag, stdout io.Writer) (help bool, err error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	// Errors are returned as one line; usage is printed only when asked for.
	fs.SetOutput(io.Discard)
	configFlags(fs, cfgPath, sets)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, roleUsage, cmd, desc)
			return true, nil
		}
		return false, fmt.Errorf("%s: %v (see caliopen %s --help)", cmd, err, cmd)
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("%s takes no arguments, got %q (configuration comes from -c, CALIOPEN_* and --set; see caliopen %s --help)", cmd, fs.Arg(0), cmd)
	}
	return false, nil
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
