// Package config loads Caliopen's configuration: built-in defaults, then one
// TOML file, then CALIOPEN_* environment variables, then --set flags. Every
// key has the same name in all four places (see contrib/caliopen.toml).
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration. The toml tags are the key names.
type Config struct {
	DataDir   string `toml:"data_dir"`
	LogLevel  string `toml:"log_level"`
	LogFormat string `toml:"log_format"`

	Store    Store    `toml:"store"`
	Milter   Milter   `toml:"milter"`
	Lookupd  Lookupd  `toml:"lookupd"`
	API      API      `toml:"api"`
	DNS      DNS      `toml:"dns"`
	Verify   Verify   `toml:"verify"`
	Operator Operator `toml:"operator"`
	Secrets  Secrets  `toml:"secrets"`
}

type Store struct {
	Engine string `toml:"engine"` // "embedded" or "cassandra"
	Path   string `toml:"path"`   // embedded file; default DATA_DIR/caliopen.db
	// DefaultQuota is a user's mailbox quota unless set for them (caliopen
	// user quota); 0: unlimited.
	DefaultQuota Size      `toml:"default_quota"`
	Cassandra    Cassandra `toml:"cassandra"`
}

type Cassandra struct {
	Hosts          []string `toml:"hosts"`
	Keyspace       string   `toml:"keyspace"`
	Replication    string   `toml:"replication"`
	Consistency    string   `toml:"consistency"`
	Timeout        Duration `toml:"timeout"`
	ConnectTimeout Duration `toml:"connect_timeout"`
	Username       string   `toml:"username"`
	Password       string   `toml:"password"`
}

type Milter struct {
	Listen         string   `toml:"listen"` // host:port or unix:/path
	MaxMessageSize Size     `toml:"max_message_size"`
	DiscardStored  bool     `toml:"discard_stored"`
	MaxConnections int      `toml:"max_connections"`
	IdleTimeout    Duration `toml:"idle_timeout"`
	// MaxBytesInFlight caps the memory all messages being received or
	// stored may hold at once; each counts twice its size.
	MaxBytesInFlight Size     `toml:"max_bytes_in_flight"`
	AllowedClients   []string `toml:"allowed_clients"` // TCP peers: CIDR prefixes or addresses
}

// AllowedPrefixes parses allowed_clients; a bare address is a one-address
// prefix.
func (m Milter) AllowedPrefixes() ([]netip.Prefix, error) { return prefixes(m.AllowedClients) }

type Lookupd struct {
	Socketmap string `toml:"socketmap"` // host:port or unix:/path
	// TCPTable maps a listen address to the one map it serves (tcp_table has no map name).
	TCPTable           map[string]string `toml:"tcp_table"`
	RecipientDelimiter string            `toml:"recipient_delimiter"`
	// Connection limits, so that no client can starve Postfix's lookups.
	MaxConnections          int      `toml:"max_connections"`
	MaxConnectionsPerClient int      `toml:"max_connections_per_client"`
	IdleTimeout             Duration `toml:"idle_timeout"`
	AllowedClients          []string `toml:"allowed_clients"` // TCP peers: CIDR prefixes or addresses
	RefusalLogInterval      Duration `toml:"refusal_log_interval"`
}

// AllowedPrefixes parses allowed_clients; a bare address is a one-address
// prefix.
func (l Lookupd) AllowedPrefixes() ([]netip.Prefix, error) { return prefixes(l.AllowedClients) }

func prefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or a CIDR prefix", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

type API struct {
	Listen                string   `toml:"listen"`
	TokenTTL              Duration `toml:"token_ttl"`
	TokenIdle             Duration `toml:"token_idle"`
	MaxBody               Size     `toml:"max_body"`
	OutboundAuthenticated bool     `toml:"outbound_authenticated"`
	TrustedProxies        []string `toml:"trusted_proxies"` // CIDRs or addresses
	// HTTP time-outs of the API's server; the event stream is exempt from
	// read, write and idle.
	ReadHeaderTimeout Duration   `toml:"read_header_timeout"`
	ReadTimeout       Duration   `toml:"read_timeout"`
	WriteTimeout      Duration   `toml:"write_timeout"`
	IdleTimeout       Duration   `toml:"idle_timeout"`
	Login             Login      `toml:"login"`
	Send              Send       `toml:"send"`
	Events            Events     `toml:"events"`
	Submission        Submission `toml:"submission"`
}

// Proxies parses api.trusted_proxies: CIDRs, or single addresses.
func (a API) Proxies() ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, s := range a.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not an address or a CIDR like 192.0.2.0/24", s)
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// Login limits failed logins per user name and per client address.
type Login struct {
	UserBurst     int      `toml:"user_burst"`
	UserInterval  Duration `toml:"user_interval"`
	AddrBurst     int      `toml:"addr_burst"`
	AddrInterval  Duration `toml:"addr_interval"`
	MaxConcurrent int      `toml:"max_concurrent"`
}

// Send limits sending per user, in envelope recipients.
type Send struct {
	Burst    int      `toml:"burst"`
	Interval Duration `toml:"interval"`
}

type Events struct {
	Heartbeat         Duration `toml:"heartbeat"`
	MaxStreamsPerUser int      `toml:"max_streams_per_user"`
	MaxStreams        int      `toml:"max_streams"`
}

type Submission struct {
	Address  string   `toml:"address"`
	Username string   `toml:"username"`
	Password string   `toml:"password"`
	StartTLS bool     `toml:"starttls"`
	HeloName string   `toml:"helo_name"`
	Timeout  Duration `toml:"timeout"`
}

type DNS struct {
	Server    string   `toml:"server"` // host:port of a resolver for DKIM, SPF, DMARC; "" = /etc/resolv.conf
	Timeout   Duration `toml:"timeout"`
	CacheSize int      `toml:"cache_size"` // answers kept for their TTL; 0 = no cache
}

type Verify struct {
	TrustSpamHeaders  bool     `toml:"trust_spam_headers"`
	TrustedARCSealers []string `toml:"trusted_arc_sealers"`
	// Budget bounds one message's DNS checks inside the milter's time:
	// checks still running then are stored as pending and retried later.
	Budget Duration `toml:"budget"`
	// RetryInterval is how often the milter re-runs pending checks; 0 = never
	// (caliopen recompute still does).
	RetryInterval Duration `toml:"retry_interval"`
}

// Secrets is the operator key that seals secrets at rest (internal/seal):
// server-held private keys, TOTP secrets, remote credentials.
type Secrets struct {
	// KeyFile: 32 random bytes, base64, mode 0600; empty means
	// DATA_DIR/secrets.key. Created at first start on the embedded store;
	// on Cassandra every process must be given the same file.
	KeyFile string `toml:"key_file"`
	// PreviousKeyFiles still open values sealed before a key rotation.
	PreviousKeyFiles []string `toml:"previous_key_files"`
}

type Operator struct {
	Listen string `toml:"listen"` // health and metrics; keep it off public interfaces
}

// Default returns the configuration used when nothing else is given: an
// embedded store under ./caliopen-data, every role on loopback.
func Default() Config {
	return Config{
		DataDir:   "caliopen-data",
		LogLevel:  "info",
		LogFormat: "text",
		Store: Store{
			Engine: "embedded",
			Cassandra: Cassandra{
				Hosts:          []string{"127.0.0.1:9042"},
				Keyspace:       "caliopen",
				Replication:    "{'class': 'SimpleStrategy', 'replication_factor': 3}",
				Consistency:    "QUORUM",
				Timeout:        Duration(5 * time.Second),
				ConnectTimeout: Duration(5 * time.Second),
			},
		},
		Milter: Milter{
			Listen: "127.0.0.1:10027", MaxMessageSize: 50 << 20, DiscardStored: true,
			MaxConnections: 512, IdleTimeout: Duration(time.Hour), MaxBytesInFlight: 512 << 20,
			AllowedClients: []string{"127.0.0.0/8", "::1"},
		},
		Lookupd: Lookupd{
			Socketmap: "127.0.0.1:10026", RecipientDelimiter: "+",
			MaxConnections: 1024, MaxConnectionsPerClient: 512, IdleTimeout: Duration(2 * time.Minute),
			AllowedClients:     []string{"127.0.0.0/8", "::1"},
			RefusalLogInterval: Duration(time.Minute),
		},
		API: API{
			Listen:    "127.0.0.1:8080",
			TokenTTL:  Duration(30 * 24 * time.Hour),
			TokenIdle: Duration(7 * 24 * time.Hour),
			MaxBody:   25 << 20,
			// A 25 MB body must fit in read_timeout on a slow uplink, a
			// large attachment in write_timeout on a slow downlink.
			ReadHeaderTimeout: Duration(10 * time.Second),
			ReadTimeout:       Duration(5 * time.Minute),
			WriteTimeout:      Duration(5 * time.Minute),
			IdleTimeout:       Duration(2 * time.Minute),
			Login: Login{UserBurst: 5, UserInterval: Duration(time.Minute),
				AddrBurst: 20, AddrInterval: Duration(10 * time.Second), MaxConcurrent: 4},
			Send:       Send{Burst: 100, Interval: Duration(36 * time.Second)},
			Events:     Events{Heartbeat: Duration(25 * time.Second), MaxStreamsPerUser: 10, MaxStreams: 10_000},
			Submission: Submission{Address: "127.0.0.1:25", HeloName: "localhost", Timeout: Duration(time.Minute)},
		},
		DNS:      DNS{Timeout: Duration(3 * time.Second), CacheSize: 10000},
		Verify:   Verify{Budget: Duration(5 * time.Second), RetryInterval: Duration(5 * time.Minute)},
		Operator: Operator{Listen: "127.0.0.1:9465"},
	}
}

// Load builds the configuration from defaults, the file at path (skipped when
// path is ""), the environment (CALIOPEN_STORE_ENGINE=…) and sets ("store.engine=…").
func Load(path string, environ []string, sets []string) (Config, error) {
	c := Default()
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		md, err := toml.Decode(string(raw), &c)
		if err != nil {
			var pe toml.ParseError
			if errors.As(err, &pe) {
				return c, fmt.Errorf("config %s:%d: %s", path, pe.Position.Line, pe.Message)
			}
			return c, fmt.Errorf("config %s: %w", path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			key := und[0].String()
			return c, fmt.Errorf("config %s:%d: unknown key %q", path, lineOf(string(raw), und[0][len(und[0])-1]), key)
		}
	}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		// CALIOPEN_TEST_* belong to the test suite, not to the configuration.
		if !ok || !strings.HasPrefix(k, "CALIOPEN_") || strings.HasPrefix(k, "CALIOPEN_TEST_") {
			continue
		}
		key, ok := envKeys()[k]
		if !ok {
			return c, fmt.Errorf("config: environment variable %s names no configuration key", k)
		}
		if err := Set(&c, key, v); err != nil {
			return c, fmt.Errorf("config: environment %s: %w", k, err)
		}
	}
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, fmt.Errorf("config: --set %q: want key=value", kv)
		}
		// Any user of the machine can read a command line (ps).
		if strings.HasSuffix(strings.TrimSpace(k), "password") {
			return c, fmt.Errorf("config: --set %s: secrets go in the file or the environment, not on the command line", k)
		}
		if err := Set(&c, strings.TrimSpace(k), v); err != nil {
			return c, fmt.Errorf("config: --set %s: %w", k, err)
		}
	}
	if c.Store.Path == "" {
		c.Store.Path = filepath.Join(c.DataDir, "caliopen.db")
	}
	if c.Secrets.KeyFile == "" {
		c.Secrets.KeyFile = filepath.Join(c.DataDir, "secrets.key")
	}
	return c, c.Validate()
}

// Validate checks every value and names the key at fault.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...)))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be debug, info, warn or error, not %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", "must be text or json, not %q", c.LogFormat)
	}
	switch c.Store.Engine {
	case "embedded":
		if c.Store.Path == "" {
			bad("store.path", "must not be empty")
		}
	case "cassandra":
		if len(c.Store.Cassandra.Hosts) == 0 {
			bad("store.cassandra.hosts", "needs at least one host")
		}
		if !regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`).MatchString(c.Store.Cassandra.Keyspace) {
			bad("store.cassandra.keyspace", "%q is not a valid keyspace name (lowercase letters, digits, _)", c.Store.Cassandra.Keyspace)
		}
		switch strings.ToUpper(c.Store.Cassandra.Consistency) {
		case "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE":
		default:
			bad("store.cassandra.consistency", "unknown consistency level %q", c.Store.Cassandra.Consistency)
		}
	default:
		bad("store.engine", "must be embedded or cassandra, not %q", c.Store.Engine)
	}
	for key, addr := range map[string]string{
		"milter.listen": c.Milter.Listen, "lookupd.socketmap": c.Lookupd.Socketmap,
		"api.listen": c.API.Listen, "operator.listen": c.Operator.Listen,
		"dns.server": c.DNS.Server, "api.submission.address": c.API.Submission.Address,
	} {
		if addr == "" && (key == "lookupd.socketmap" || key == "dns.server") {
			continue // socketmap may be off; no DNS server means the system's
		}
		if path, ok := strings.CutPrefix(addr, "unix:"); ok && (key == "milter.listen" || key == "lookupd.socketmap") {
			if !filepath.IsAbs(path) {
				bad(key, "%q: a Unix socket path must be absolute", addr)
			}
			continue
		}
		if !isHostPort(addr) {
			bad(key, "%q is not host:port", addr)
		}
	}
	for addr, name := range c.Lookupd.TCPTable {
		if !isHostPort(addr) {
			bad("lookupd.tcp_table", "%q is not host:port", addr)
		}
		switch name {
		case "domains", "mailboxes", "aliases", "senders":
		default:
			bad("lookupd.tcp_table", "%s: unknown map %q (domains, mailboxes, aliases or senders)", addr, name)
		}
	}
	if len(c.Lookupd.RecipientDelimiter) > 1 {
		bad("lookupd.recipient_delimiter", "must be one character or empty, not %q", c.Lookupd.RecipientDelimiter)
	}
	if _, err := c.Milter.AllowedPrefixes(); err != nil {
		bad("milter.allowed_clients", "%v", err)
	}
	if _, err := c.Lookupd.AllowedPrefixes(); err != nil {
		bad("lookupd.allowed_clients", "%v", err)
	}
	for _, v := range []struct {
		key string
		n   int64
	}{
		{"lookupd.max_connections", int64(c.Lookupd.MaxConnections)},
		{"lookupd.max_connections_per_client", int64(c.Lookupd.MaxConnectionsPerClient)},
		{"lookupd.idle_timeout", int64(c.Lookupd.IdleTimeout)},
		{"lookupd.refusal_log_interval", int64(c.Lookupd.RefusalLogInterval)},
		{"milter.max_connections", int64(c.Milter.MaxConnections)},
		{"milter.idle_timeout", int64(c.Milter.IdleTimeout)},
		{"milter.max_message_size", int64(c.Milter.MaxMessageSize)},
	} {
		if v.n <= 0 {
			bad(v.key, "must be positive")
		}
	}
	if c.Milter.MaxBytesInFlight < 2*c.Milter.MaxMessageSize {
		bad("milter.max_bytes_in_flight", "must be at least twice milter.max_message_size (%d bytes), or the largest messages are never accepted", 2*c.Milter.MaxMessageSize)
	}
	if c.DNS.Timeout < 0 {
		bad("dns.timeout", "must not be negative")
	}
	// The milter gives ingest 45 s in all; storing needs its share.
	if c.Verify.Budget <= 0 || c.Verify.Budget > Duration(30*time.Second) {
		bad("verify.budget", "must be positive and at most 30s (the milter answers within 45s), not %v", time.Duration(c.Verify.Budget))
	}
	if c.Verify.RetryInterval < 0 {
		bad("verify.retry_interval", "must not be negative (0 turns automatic retries off)")
	}
	if c.DNS.CacheSize < 0 {
		bad("dns.cache_size", "must not be negative (0 turns the cache off)")
	}
	for key, d := range map[string]Duration{
		"api.token_ttl": c.API.TokenTTL, "api.token_idle": c.API.TokenIdle,
		"api.login.user_interval": c.API.Login.UserInterval, "api.login.addr_interval": c.API.Login.AddrInterval,
		"api.send.interval": c.API.Send.Interval, "api.events.heartbeat": c.API.Events.Heartbeat,
		"api.submission.timeout":  c.API.Submission.Timeout,
		"api.read_header_timeout": c.API.ReadHeaderTimeout, "api.read_timeout": c.API.ReadTimeout,
		"api.write_timeout": c.API.WriteTimeout, "api.idle_timeout": c.API.IdleTimeout,
	} {
		if d <= 0 {
			bad(key, "must be positive")
		}
	}
	for key, n := range map[string]int{
		"api.login.user_burst": c.API.Login.UserBurst, "api.login.addr_burst": c.API.Login.AddrBurst,
		"api.login.max_concurrent": c.API.Login.MaxConcurrent, "api.send.burst": c.API.Send.Burst,
		"api.events.max_streams_per_user": c.API.Events.MaxStreamsPerUser, "api.events.max_streams": c.API.Events.MaxStreams,
	} {
		if n <= 0 {
			bad(key, "must be positive")
		}
	}
	if _, err := c.API.Proxies(); err != nil {
		bad("api.trusted_proxies", "%v", err)
	}
	if c.API.MaxBody <= 0 {
		bad("api.max_body", "must be positive")
	}
	if c.API.Submission.HeloName == "" {
		bad("api.submission.helo_name", "must not be empty")
	}
	return errors.Join(errs...)
}

// isHostPort: host:port with a numeric port ("unix:/x" splits, but is not one).
func isHostPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

// lineOf finds the first line that defines key, for error messages.
func lineOf(src, key string) int {
	re := regexp.MustCompile(`(?m)^\s*"?` + regexp.QuoteMeta(key) + `"?\s*=`)
	if loc := re.FindStringIndex(src); loc != nil {
		return strings.Count(src[:loc[0]], "\n") + 1
	}
	return 0
}

// Keys lists every settable key ("store.cassandra.hosts", …).
func Keys() []string {
	var keys []string
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(key string, _ reflect.Value) { keys = append(keys, key) })
	return keys
}

func envKeys() map[string]string {
	m := map[string]string{}
	for _, k := range Keys() {
		m["CALIOPEN_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_"))] = k
	}
	return m
}

func walk(v reflect.Value, prefix string, fn func(string, reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		name := t.Field(i).Tag.Get("toml")
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct {
			walk(f, key, fn)
			continue
		}
		fn(key, f)
	}
}

// Set assigns one key from its text form: lists are comma-separated, maps
// are comma-separated k=v pairs, durations like "5s", sizes like "50MB".
func Set(c *Config, key, value string) error {
	var target reflect.Value
	walk(reflect.ValueOf(c).Elem(), "", func(k string, v reflect.Value) {
		if k == key {
			target = v
		}
	})
	if !target.IsValid() {
		return fmt.Errorf("unknown key %q", key)
	}
	if u, ok := target.Addr().Interface().(interface{ UnmarshalText([]byte) error }); ok {
		if err := u.UnmarshalText([]byte(value)); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	}
	switch target.Kind() {
	case reflect.String:
		target.SetString(value)
	case reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("%s: %q is not a whole number", key, value)
		}
		target.SetInt(int64(n))
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", key, value)
		}
		target.SetBool(b)
	case reflect.Slice:
		var list []string
		for s := range strings.SplitSeq(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		target.Set(reflect.ValueOf(list))
	case reflect.Map:
		m := map[string]string{}
		for s := range strings.SplitSeq(value, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(s), "=")
			if !ok {
				return fmt.Errorf("%s: %q: want address=map", key, s)
			}
			m[k] = v
		}
		target.Set(reflect.ValueOf(m))
	default:
		return fmt.Errorf("%s: cannot be set from text", key)
	}
	return nil
}

// Duration is a time.Duration written as "5s", "720h".
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like 5s or 2h", b)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Size is a byte count written as "50MB", "512KB" or a plain number (powers of 1024).
type Size int64

func (s *Size) UnmarshalText(b []byte) error {
	txt := strings.ToUpper(strings.TrimSpace(string(b)))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(txt, u.suffix) {
			txt, mult = strings.TrimSpace(strings.TrimSuffix(txt, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(txt, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size like 50MB", b)
	}
	*s = Size(n * mult)
	return nil
}

func (s Size) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(s), 10)), nil }

// Get returns one key's value as text; secrets (keys ending in "password")
// are masked so the output is safe to paste into a bug report.
func Get(c Config, key string) (string, bool) {
	var out string
	var found bool
	walk(reflect.ValueOf(&c).Elem(), "", func(k string, v reflect.Value) {
		if k != key {
			return
		}
		found = true
		if strings.HasSuffix(k, "password") && v.String() != "" {
			out = "********"
			return
		}
		if m, ok := v.Interface().(interface{ MarshalText() ([]byte, error) }); ok {
			b, _ := m.MarshalText()
			out = string(b)
			return
		}
		out = fmt.Sprint(v.Interface())
	})
	return out, found
}
