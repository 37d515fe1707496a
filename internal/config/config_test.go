package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// contrib/caliopen.toml shows every default, but for the two addresses
// Postfix connects to: beside Postfix, the milter and lookupd listen on the
// Unix sockets contrib/postfix/main.cf names relative to Postfix's queue
// directory. Those two must name the same sockets as main.cf; every other key
// must equal its default.
func TestExampleIsTheDefault(t *testing.T) {
	got, err := Load("../../contrib/caliopen.toml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mainCF, err := os.ReadFile("../../contrib/postfix/main.cf")
	if err != nil {
		t.Fatal(err)
	}
	// Postfix resolves a relative Unix socket path from its queue directory.
	const queueDir = "/var/spool/postfix/"
	var milters []string
	maps := map[string]bool{}
	for _, line := range strings.Split(string(mainCF), "\n") {
		name, value, ok := strings.Cut(line, " = ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if name == "smtpd_milters" || name == "non_smtpd_milters" {
			milters = append(milters, value)
		}
		for _, ref := range strings.Fields(strings.ReplaceAll(value, ",", " ")) {
			rest, ok := strings.CutPrefix(ref, "socketmap:")
			if !ok {
				continue
			}
			i := strings.LastIndex(rest, ":")
			addr, mapName := rest[:i], rest[i+1:]
			maps[mapName] = true
			if path, ok := strings.CutPrefix(addr, "unix:"); !ok || "unix:"+queueDir+path != got.Lookupd.Socketmap {
				t.Errorf("contrib/postfix/main.cf %s = %s, contrib/caliopen.toml lookupd.socketmap = %q: they must name the same Unix socket",
					name, ref, got.Lookupd.Socketmap)
			}
		}
	}
	if len(milters) != 2 {
		t.Errorf("contrib/postfix/main.cf: want smtpd_milters and non_smtpd_milters, found %q", milters)
	}
	for _, m := range milters {
		if path, ok := strings.CutPrefix(m, "unix:"); !ok || "unix:"+queueDir+path != got.Milter.Listen {
			t.Errorf("contrib/caliopen.toml milter.listen = %q, contrib/postfix/main.cf milter = %q: they must name the same Unix socket",
				got.Milter.Listen, m)
		}
	}
	if len(maps) != 5 || !maps["domains"] || !maps["mailboxes"] || !maps["aliases"] || !maps["senders"] || !maps["quota"] {
		t.Errorf("contrib/postfix/main.cf asks lookupd for maps %v, want domains, mailboxes, aliases, senders and quota", maps)
	}
	got.Milter.Listen = Default().Milter.Listen
	got.Lookupd.Socketmap = Default().Lookupd.Socketmap
	want := Default()
	want.Store.Path = filepath.Join(want.DataDir, "caliopen.db")
	want.Secrets.KeyFile = filepath.Join(want.DataDir, "secrets.key")
	got.Lookupd.TCPTable = nil
	got.Verify.TrustedARCSealers = nil
	got.API.TrustedProxies = nil
	got.Secrets.PreviousKeyFiles = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("contrib/caliopen.toml differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestNoFile(t *testing.T) {
	c, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Engine != "embedded" || c.Store.Path != filepath.Join("caliopen-data", "caliopen.db") {
		t.Fatalf("defaults: %+v", c.Store)
	}
}

func TestPrecedence(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(f, []byte("[store]\nengine = \"cassandra\"\n[store.cassandra]\nkeyspace = \"fromfile\"\n"), 0o600)
	c, err := Load(f,
		[]string{"CALIOPEN_STORE_CASSANDRA_KEYSPACE=fromenv", "CALIOPEN_STORE_CASSANDRA_HOSTS=a:1, b:2", "HOME=/x", "CALIOPEN_TEST_CASSANDRA=127.0.0.1:1"},
		[]string{"store.cassandra.timeout=9s", "lookupd.tcp_table=127.0.0.1:1=domains"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Engine != "cassandra" || c.Store.Cassandra.Keyspace != "fromenv" {
		t.Fatalf("precedence: %+v", c.Store)
	}
	if !reflect.DeepEqual(c.Store.Cassandra.Hosts, []string{"a:1", "b:2"}) {
		t.Fatalf("hosts %v", c.Store.Cassandra.Hosts)
	}
	if time.Duration(c.Store.Cassandra.Timeout) != 9*time.Second {
		t.Fatalf("timeout %v", c.Store.Cassandra.Timeout)
	}
	if c.Lookupd.TCPTable["127.0.0.1:1"] != "domains" {
		t.Fatalf("tcp_table %v", c.Lookupd.TCPTable)
	}
}

func TestErrorsNameLineAndKey(t *testing.T) {
	cases := []struct {
		file, want string
		env, sets  []string
	}{
		{file: "log_level = \"info\"\n\n[store]\nengin = \"x\"\n", want: `:4: unknown key "store.engin"`},
		{file: "log_level = \n", want: "c.toml:1:"},
		{file: "[store]\nengine = \"mysql\"\n", want: `store.engine: must be embedded or cassandra, not "mysql"`},
		{file: "[milter]\nmax_message_size = \"lots\"\n", want: `"lots" is not a size`},
		{file: "[milter]\nlisten = \"nowhere\"\n", want: `milter.listen: "nowhere" is not host:port`},
		{file: "[milter]\nlisten = \"unix:caliopen/milter.sock\"\n", want: `milter.listen: "unix:caliopen/milter.sock": a Unix socket path must be absolute`},
		{sets: []string{"api.listen=unix:/run/api.sock"}, want: `api.listen: "unix:/run/api.sock" is not host:port`},
		{env: []string{"CALIOPEN_NOPE=1"}, want: "CALIOPEN_NOPE names no configuration key"},
		{sets: []string{"api.token_ttl=soon"}, want: `"soon" is not a duration`},
		{sets: []string{"store.cassandra.password=hunter2"}, want: "not on the command line"},
		{sets: []string{"lookupd.tcp_table=127.0.0.1:1=users"}, want: `unknown map "users"`},
		{sets: []string{"api.login.user_burst=0"}, want: "api.login.user_burst: must be positive"},
		{sets: []string{"api.send.burst=many"}, want: `api.send.burst: "many" is not a whole number`},
		{file: "[api.events]\nmax_streams = -1\n", want: "api.events.max_streams: must be positive"},
		{sets: []string{"api.trusted_proxies=10.0.0.0/8,proxy.example"}, want: `api.trusted_proxies: "proxy.example" is not an address or a CIDR`},
		{sets: []string{"verify.budget=0s"}, want: "verify.budget: must be positive"},
	}
	for _, tc := range cases {
		path := ""
		if tc.file != "" {
			path = filepath.Join(t.TempDir(), "c.toml")
			os.WriteFile(path, []byte(tc.file), 0o600)
		}
		_, err := Load(path, tc.env, tc.sets)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q, %v, %v) error = %v, want it to contain %q", tc.file, tc.env, tc.sets, err, tc.want)
		}
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[string]Size{"10": 10, "2KB": 2048, "50MB": 50 << 20, "1gb": 1 << 30} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("Size(%q) = %d, %v; want %d", in, s, err, want)
		}
	}
}

func TestGetMasksSecrets(t *testing.T) {
	c := Default()
	c.Store.Cassandra.Password = "hunter2"
	if v, ok := Get(c, "store.cassandra.password"); !ok || v != "********" {
		t.Fatalf("password shown as %q", v)
	}
	if v, _ := Get(c, "milter.max_message_size"); v != "52428800" {
		t.Fatalf("size shown as %q", v)
	}
	if _, ok := Get(c, "nope"); ok {
		t.Fatal("unknown key found")
	}
}

func TestLookupdLimits(t *testing.T) {
	c, err := Load("", nil, []string{"lookupd.max_connections=64", "lookupd.allowed_clients=10.0.0.0/8, 192.0.2.7, 2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Lookupd.AllowedPrefixes()
	if err != nil || c.Lookupd.MaxConnections != 64 || len(p) != 3 || p[1].String() != "192.0.2.7/32" {
		t.Fatalf("max_connections %d, allowed %v, %v", c.Lookupd.MaxConnections, p, err)
	}
	for _, set := range []string{"lookupd.allowed_clients=localhost", "lookupd.max_connections=0", "lookupd.max_connections=many"} {
		if _, err := Load("", nil, []string{set}); err == nil || !strings.Contains(err.Error(), strings.SplitN(set, "=", 2)[0]) {
			t.Errorf("--set %s: %v, want an error naming the key", set, err)
		}
	}
}
