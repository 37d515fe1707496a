package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caliopen/caliopen/internal/postfixtest"
)

// freeLowPort is a loopback TCP port below the kernel's ephemeral range
// that was free a moment ago: a node restarted on it cannot find it taken
// by an outgoing connection (or its TIME-WAIT), as a port from
// FreeAddr can be.
func freeLowPort(t *testing.T) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	for range 200 {
		p := 10000 + rand.IntN(low-10000)
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatalf("no free port below %d", low)
	return 0
}

// settings are the environment of caliopen on this node, one replica per
// row as a single node needs, plus more.
func (c *cassandraNode) settings(t *testing.T, keyspace string, more map[string]string) map[string]string {
	s := map[string]string{
		"CALIOPEN_DATA_DIR":                        t.TempDir(),
		"CALIOPEN_STORE_ENGINE":                    "cassandra",
		"CALIOPEN_STORE_CASSANDRA_HOSTS":           c.addr(),
		"CALIOPEN_STORE_CASSANDRA_KEYSPACE":        keyspace,
		"CALIOPEN_STORE_CASSANDRA_REPLICATION":     "{'class': 'SimpleStrategy', 'replication_factor': 1}",
		"CALIOPEN_STORE_CASSANDRA_TIMEOUT":         "5s",
		"CALIOPEN_STORE_CASSANDRA_CONNECT_TIMEOUT": "5s",
		"CALIOPEN_OPERATOR_LISTEN":                 freeAddr(t),
	}
	for k, v := range more {
		s[k] = v
	}
	return s
}

// sent is one message of the load and what the server answered.
type sent struct {
	from, to, subject string
	raw               []byte
	accepted          bool // 250 at the end of DATA
}

// TestCassandraKillKeepsAcknowledgedMail is issue 9's point 12: mail flows
// through real Postfix into `caliopen milter` on one Cassandra node set up
// as shipped for a single node (replication factor 1, QUORUM, batch commit
// log), the node is killed with SIGKILL under that load and restarted, and
// then every message that got 250 is stored, none twice. The messages that
// got 4xx are sent again, as the sender's MTA would, and the conversations'
// message counts must then equal the messages listed.
func TestCassandraKillKeepsAcknowledgedMail(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	postfixtest.Require(t)
	t0 := time.Now()
	step := func(what string) { t.Logf("[%6.1fs] %s", time.Since(t0).Seconds(), what) }
	cass := startCassandra(t)
	step("cassandra started")

	milterAddr, lookupdAddr, apiAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	pf := postfixtest.Start(t, postfixtest.Options{
		TLS:     postfixtest.TLSOff,
		Include: &postfixtest.Include{MilterAddr: milterAddr, LookupdAddr: lookupdAddr},
	})
	// The single-node set-up of docs/configuration.md; consistency is the
	// default (QUORUM).
	settings := cass.settings(t, "e2e_kill", map[string]string{
		"CALIOPEN_MILTER_LISTEN":          milterAddr,
		"CALIOPEN_LOOKUPD_SOCKETMAP":      lookupdAddr,
		"CALIOPEN_API_LISTEN":             apiAddr,
		"CALIOPEN_API_SUBMISSION_ADDRESS": pf.SMTPAddr,
		"CALIOPEN_DNS_SERVER":             startDNS(t).Addr,
		"CALIOPEN_DNS_TIMEOUT":            "1s",
	})
	admin := newNode(t, settings)
	// The shipped default (RF 3, QUORUM) cannot store anything on one
	// node: migrate refuses it rather than letting the milter answer 4xx forever.
	shipped := map[string]string{}
	for k, v := range settings {
		shipped[k] = v
	}
	delete(shipped, "CALIOPEN_STORE_CASSANDRA_REPLICATION")
	bad := newNode(t, shipped)
	if out, err := bad.cli("", "migrate"); err == nil || !strings.Contains(out, "cannot keep acknowledged mail") {
		t.Errorf("migrate with RF 3 and QUORUM on one node: err %v, output %s; want a refusal", err, out)
	}
	out := admin.mustCLI("", "migrate")
	if !strings.Contains(out, "DURABILITY NOT VERIFIED") {
		t.Errorf("migrate on one Cassandra 2.1 node did not warn that the commit-log mode is unchecked:\n%s", out)
	}
	admin.mustCLI("", "domain", "add", "kill.test")
	users := []string{"ann", "ben", "cat", "dan"}
	for _, u := range users {
		admin.mustCLI(password+"\n", "user", "add", "--address", u+"@kill.test", u)
	}
	step("migrated and provisioned")

	roles := map[string]*proc{}
	ops := map[string]string{}
	for _, name := range []string{"milter", "lookupd", "api"} {
		s := map[string]string{}
		for k, v := range settings {
			s[k] = v
		}
		ops[name] = freeAddr(t)
		s["CALIOPEN_OPERATOR_LISTEN"] = ops[name]
		roles[name] = newNode(t, s).start(name)
	}
	for name, p := range roles {
		p.waitHealthy(ops[name], 60*time.Second)
	}
	roles["milter"].waitListening(milterAddr, 10*time.Second)
	roles["lookupd"].waitListening(lookupdAddr, 10*time.Second)
	step("roles healthy")

	// The load: senders on their own connections, each writing to every
	// user in turn, so conversations hold several messages.
	const senders = 6
	var (
		mu       sync.Mutex
		all      []*sent
		accepted atomic.Int64
		killed   atomic.Bool
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for g := range senders {
		wg.Go(func() {
			from := fmt.Sprintf("s%d@far.test", g)
			var c *postfixtest.Client
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			afterKill := 0
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				// Against the dead node each sender tries one more message
				// (a 4xx): enough to cover what was in flight, and it keeps
				// the retries below few.
				if killed.Load() {
					if afterKill++; afterKill > 1 {
						return
					}
				}
				if c == nil {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					var err error
					c, err = postfixtest.Dial(ctx, pf.SMTPAddr)
					cancel()
					if err == nil {
						if r, err2 := c.Hello("far.test"); err2 != nil || !r.OK() {
							c.Close()
							c = nil
						}
					}
					if c == nil {
						time.Sleep(100 * time.Millisecond)
						continue
					}
				}
				m := &sent{from: from, to: users[(g+n)%len(users)] + "@kill.test", subject: fmt.Sprintf("load %d-%d", g, n)}
				m.raw = msg(from, m.to, m.subject, fmt.Sprintf("k%d.%d@far.test", g, n), "Under load.\n")
				tr, err := c.Send(from, []string{m.to}, m.raw)
				m.accepted = err == nil && tr.Accepted()
				if m.accepted {
					accepted.Add(1)
				}
				mu.Lock()
				all = append(all, m)
				mu.Unlock()
				if err != nil || n%20 == 19 { // a new connection now and then, as MTAs do
					c.Close()
					c = nil
				}
			}
		})
	}
	waitFor(t, 90*time.Second, "100 messages accepted before the kill", func() (bool, string) {
		return accepted.Load() >= 100, fmt.Sprintf("%d accepted", accepted.Load())
	})
	// SIGKILL the node mid-load: no flush, no drain.
	b, err := os.ReadFile(filepath.Join(cass.dir, "cassandra.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 cassandra (pid %d): %v", pid, err)
	}
	killed.Store(true)
	atKill := accepted.Load()
	step(fmt.Sprintf("cassandra killed with %d messages accepted", atKill))
	time.Sleep(500 * time.Millisecond) // the load goes on against the dead node: 4xx
	close(stop)
	wg.Wait()
	mu.Lock()
	total := len(all)
	mu.Unlock()
	step(fmt.Sprintf("load stopped: %d sent, %d accepted", total, accepted.Load()))
	if n, _ := pf.QueueCount(); n != 0 {
		t.Errorf("Postfix queued %d messages: they were not stored, yet accepted", n)
	}

	start := time.Now()
	cass.start()
	step(fmt.Sprintf("cassandra restarted after %s", time.Since(start).Round(time.Second)))
	for name, p := range roles {
		if p.exited() {
			t.Fatalf("caliopen %s exited when Cassandra was killed: %v", name, p.err)
		}
		p.waitHealthy(ops[name], 60*time.Second)
	}
	// Postfix's smtpd caches the lookup failures of the outage (see
	// TestCassandraRoles): an operator reloads it once the store is back.
	if out, err := exec.Command(postfixtest.PostfixBinary, "-c", pf.ConfigDir, "reload").CombinedOutput(); err != nil {
		t.Fatalf("postfix reload: %v\n%s", err, out)
	}

	// Every 250 is stored, once.
	clients := map[string]*apiClient{}
	for _, u := range users {
		clients[u+"@kill.test"] = login(t, apiAddr, u, password)
	}
	stored := func() map[string]int {
		n := map[string]int{}
		for _, c := range clients {
			for _, m := range c.messages() {
				n[m.Subject]++
			}
		}
		return n
	}
	have := stored()
	lost, twice := 0, 0
	for _, m := range all {
		switch got := have[m.subject]; {
		case m.accepted && got == 0:
			lost++
			if lost <= 5 {
				t.Errorf("%q to %s got 250 but is not stored", m.subject, m.to)
			}
		case got > 1:
			twice++
			t.Errorf("%q to %s is stored %d times", m.subject, m.to, got)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d messages answered 250 are lost", lost, accepted.Load())
	}
	step(fmt.Sprintf("checked: %d accepted, %d lost, %d stored twice", accepted.Load(), lost, twice))

	// The sender's MTA retries what got 4xx; each is then stored once and
	// the counters agree with the messages listed.
	var retry []*sent
	for _, m := range all {
		if !m.accepted {
			retry = append(retry, m)
		}
	}
	var next atomic.Int64
	for range senders {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(retry); i = int(next.Add(1)) - 1 {
				m := retry[i]
				deadline := time.Now().Add(60 * time.Second)
				for {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					s, err := postfixtest.SendMail(ctx, pf.SMTPAddr, postfixtest.SendOptions{},
						postfixtest.Message{From: m.from, To: []string{m.to}, Raw: m.raw})
					cancel()
					if err == nil && len(s.Transactions) == 1 && s.Transactions[0].Accepted() {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("retry of %q not accepted after 60s: %v %+v", m.subject, err, s.Transactions)
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	step(fmt.Sprintf("%d retries accepted", len(retry)))
	have = stored()
	for _, m := range all {
		if have[m.subject] != 1 {
			t.Errorf("after the retries %q to %s is stored %d times, want 1", m.subject, m.to, have[m.subject])
		}
	}
	for addr, c := range clients {
		listed, counted := 0, 0
		var convs pageOf[conversation]
		cursor := ""
		for {
			p := "/conversations?limit=100"
			if cursor != "" {
				p += "&cursor=" + url.QueryEscape(cursor)
			}
			c.must("GET", p, nil, &convs)
			for _, cv := range convs.Items {
				counted += cv.MessageCount
			}
			if cursor = convs.NextCursor; cursor == "" {
				break
			}
		}
		listed = len(c.messages())
		if counted != listed {
			t.Errorf("%s: conversations' message_count sum to %d, but %d messages are listed", addr, counted, listed)
		}
	}
	step("counters checked")
}
