package keytrust

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/google/uuid"
	"github.com/miekg/dns"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
	"github.com/caliopen/caliopen/verify"
	"github.com/caliopen/caliopen/verify/dnsresolver"
)

// zoneServer is a real authoritative UDP DNS server for remote.example that
// can be taken down (it then drops every query, as an overloaded resolver).
type zoneServer struct {
	addr  string
	txt   map[string]string // lowercased FQDN → TXT
	down  atomic.Bool
	delay atomic.Int64 // nanoseconds to wait before each answer
}

func startZone(t *testing.T, txt map[string]string) *zoneServer {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &zoneServer{addr: pc.LocalAddr().String(), txt: txt}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if z.down.Load() || len(req.Question) != 1 {
			return
		}
		time.Sleep(time.Duration(z.delay.Load()))
		q := req.Question[0]
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		v, ok := z.txt[strings.ToLower(q.Name)]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeTXT:
			var parts []string
			for len(v) > 255 {
				parts, v = append(parts, v[:255]), v[255:]
			}
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
				Txt: append(parts, v)})
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return z
}

// v14 is PI vector 14's setting: remote.example publishes a DKIM key, SPF
// and DMARC p=reject on a real DNS server; Bob's message to Alice is signed
// by a real signer and comes over TLS 1.3 from an authorised IP.
type v14 struct {
	zone  *zoneServer
	st    store.Store
	v     *verify.Verifier
	in    *ingest.Ingester
	alice uuid.UUID
	key   ed25519.PrivateKey
	raw   []byte
	env   ingest.Envelope
}

// signedMessage is Bob's message, DKIM-signed by remote.example.
func signedMessage(t *testing.T, key ed25519.PrivateKey, id string) []byte {
	raw := "From: Bob <bob@remote.example>\r\nTo: alice@example.org\r\nSubject: figures\r\n" +
		"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" + id + "@remote.example>\r\n\r\nThe figures.\r\n"
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(raw), &dkim.SignOptions{Domain: "remote.example", Selector: "sel", Signer: key}); err != nil {
		t.Fatal(err)
	}
	return signed.Bytes()
}

// v14Budget is the verification budget.
const v14Budget = 300 * time.Millisecond

func newV14(t *testing.T) *v14 { return newV14Timeout(t, 400*time.Millisecond) }

// newV14Timeout is newV14 with DNS queries timing out after dnsTimeout.
func newV14Timeout(t *testing.T, dnsTimeout time.Duration) *v14 {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	zone := startZone(t, map[string]string{
		"sel._domainkey.remote.example.": "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub),
		"remote.example.":                "v=spf1 ip4:192.0.2.10 -all",
		"_dmarc.remote.example.":         "v=DMARC1; p=reject",
	})
	res, err := dnsresolver.New(dnsresolver.Config{Server: zone.addr, Timeout: dnsTimeout, CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(verify.Config{Resolver: res, Timeout: v14Budget})
	if err != nil {
		t.Fatal(err)
	}

	st, alice, in := deliveryPath(t, v)
	return &v14{zone: zone, st: st, v: v, alice: alice, key: priv, raw: signedMessage(t, priv, "v14"),
		in: in,
		env: ingest.Envelope{Recipients: []string{"alice@example.org"}, MailFrom: "bob@remote.example",
			ClientAddr: "192.0.2.10", Helo: "mx.remote.example", TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384"}}
}

// deliverDuringOutage ingests the message with DNS down: within the budget,
// stored pending, 22 D without warning.
func (x *v14) deliverDuringOutage(t *testing.T) ingest.Delivery {
	t.Helper()
	x.zone.down.Store(true)
	return x.deliverPending(t)
}

// deliverPending ingests the message while DNS cannot answer within the
// budget: stored within it, pending, 22 D without warning.
func (x *v14) deliverPending(t *testing.T) ingest.Delivery {
	t.Helper()
	start := time.Now()
	r, err := x.in.Ingest(t.Context(), x.env, x.raw)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > v14Budget+2*time.Second {
		t.Errorf("ingest took %v with a %v budget and DNS down", d, v14Budget)
	}
	d := r.Deliveries[0]
	m, err := x.st.GetMessage(t.Context(), x.alice, d.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := ingest.DecodeSecurity(m.Security)
	if m.PI.Score != 22 || m.PI.Band != "D" || m.PI.Warning || !slices.Contains(sec.Features.Pending(), privacyindex.CheckDKIM) || !d.Pending {
		t.Fatalf("during the outage: PI %d %s warning %v, pending %v (delivery %v); want 22 D, no warning, DKIM pending",
			m.PI.Score, m.PI.Band, m.PI.Warning, sec.Features.Pending(), d.Pending)
	}
	return d
}

// recover brings DNS back. Queries sent while it was down are shared by
// later lookups until they time out (dns.timeout): let them.
func (x *v14) recover() {
	x.zone.down.Store(false)
	time.Sleep(500 * time.Millisecond)
}

// PI vector 14 end to end: vector 3's message delivered while DNS drops every
// query is stored within the budget with its checks pending (22 D, no
// warning); once DNS answers, Reverify completes them and the stored PI is
// 30 C. The sender's history is left as it was.
func TestReverifyCompletesPendingChecks(t *testing.T) {
	x := newV14(t)
	ctx, st, v, alice := t.Context(), x.st, x.v, x.alice
	id := x.deliverDuringOutage(t).MessageID
	m, err := st.GetMessage(ctx, alice, id)
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := ingest.DecodeSecurity(m.Security)
	history := sec.Features.History

	// Still down: nothing completes, nothing is lost.
	stats, err := Reverify(ctx, st, v, alice)
	if err != nil || stats != (ReverifyStats{Pending: 1}) {
		t.Fatalf("reverify while down: %+v, %v", stats, err)
	}

	x.recover()
	stats, err = Reverify(ctx, st, v, alice)
	if err != nil || stats != (ReverifyStats{Pending: 1, Completed: 1}) {
		t.Fatalf("reverify: %+v, %v", stats, err)
	}
	m, err = st.GetMessage(ctx, alice, id)
	if err != nil {
		t.Fatal(err)
	}
	sec, _ = ingest.DecodeSecurity(m.Security)
	if m.PI.Score != 30 || m.PI.Band != "C" || m.PI.Warning || len(sec.Features.Pending()) != 0 {
		t.Errorf("re-verified: PI %d %s warning %v pending %v; want 30 C", m.PI.Score, m.PI.Band, m.PI.Warning, sec.Features.Pending())
	}
	if sec.Features.History != history || sec.Features.DMARCPolicy != "reject" {
		t.Errorf("history %+v → %+v, policy %q", history, sec.Features.History, sec.Features.DMARCPolicy)
	}
	var d Details
	if err := json.Unmarshal(sec.Verification, &d); err != nil || d.DKIM.Result != privacyindex.AuthPass || d.DKIM.Pending {
		t.Errorf("stored details DKIM %+v, %v", d.DKIM, err)
	}
	// Done: a second run finds nothing pending.
	if stats, err := Reverify(ctx, st, v, alice); err != nil || stats != (ReverifyStats{}) {
		t.Errorf("second reverify: %+v, %v", stats, err)
	}
}

// The background queue: a message stored pending before it starts (a crash)
// is found by its first scan; while DNS is still down it stays queued; once
// DNS answers, a later round completes it. A message added while it runs is
// retried the same way.
func TestQueueResumesAndRetries(t *testing.T) {
	x := newV14(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	before := x.deliverDuringOutage(t) // stored before the queue exists

	q, err := NewQueue(QueueConfig{Store: x.st, Verifier: x.v, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()

	// Let the first scan find it while DNS is still down (one budget), and
	// a round or two retry it in vain: only the queue can complete it now.
	time.Sleep(3 * v14Budget)
	x.raw = signedMessage(t, x.key, "v14b")
	during := x.deliverDuringOutage(t)
	q.Add(during.UserID, during.MessageID)

	x.recover()
	for _, d := range []ingest.Delivery{before, during} {
		waitFor(t, "re-verification to reach 30 C", func() bool {
			m, err := x.st.GetMessage(ctx, x.alice, d.MessageID)
			return err == nil && m.PI.Score == 30 && m.PI.Band == "C" && !m.PI.Warning
		})
	}
	waitFor(t, "the queue to empty", func() bool { return q.Len() == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if _, err := NewQueue(QueueConfig{Store: x.st, Interval: time.Second}); err == nil {
		t.Error("NewQueue without a Verifier succeeded")
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A resolver slower than the budget (but within the DNS time-out): the
// sender does not wait for it, the message is stored pending, and the
// answers that arrive after the budget are cached, so the next retry
// completes the checks at once.
func TestSlowDNSDoesNotHoldTheSender(t *testing.T) {
	x := newV14Timeout(t, 3*time.Second)
	x.zone.delay.Store(int64(time.Second)) // > v14Budget
	d := x.deliverPending(t)
	time.Sleep(1500 * time.Millisecond) // the answers arrive and are cached
	start := time.Now()
	stats, err := Reverify(t.Context(), x.st, x.v, x.alice)
	if err != nil || stats != (ReverifyStats{Pending: 1, Completed: 1}) {
		t.Fatalf("reverify: %+v, %v; want the cached answers to complete it", stats, err)
	}
	if took := time.Since(start); took > v14Budget {
		t.Errorf("reverify took %v: the answers were not cached", took)
	}
	m, err := x.st.GetMessage(t.Context(), x.alice, d.MessageID)
	if err != nil || m.PI.Score != 30 || m.PI.Band != "C" {
		t.Errorf("re-verified: %+v, %v; want 30 C", m.PI, err)
	}
}

// While DNS is down, a round ends in about a budget or a few, not a budget
// per queued message (messages from one domain share their queries; from
// many, the round gives up after giveUpAfter in a row), and keeps them all.
func TestQueueRoundStopsDuringOutage(t *testing.T) {
	x := newV14(t)
	const n = 10
	x.zone.down.Store(true)
	for i := range n {
		// From the 4th on, X3 rates Bob's history: 24 D, still pending.
		if _, err := x.in.Ingest(t.Context(), x.env, signedMessage(t, x.key, fmt.Sprint("outage", i))); err != nil {
			t.Fatal(err)
		}
	}
	q, err := NewQueue(QueueConfig{Store: x.st, Verifier: x.v, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	q.round(t.Context()) // the first round scans the store, then retries
	if took := time.Since(start); took > (giveUpAfter+1)*v14Budget+500*time.Millisecond {
		t.Errorf("a round during the outage took %v for %d messages (budget %v)", took, n, v14Budget)
	}
	if q.Len() != n {
		t.Errorf("%d messages queued after the round, want all %d", q.Len(), n)
	}
}

// deliveryPath is the milter's delivery path without the milter: ingest
// with this package's Verifier over v, on an embedded store (fsync on) that
// hosts alice@example.org.
func deliveryPath(tb testing.TB, v *verify.Verifier) (store.Store, uuid.UUID, *ingest.Ingester) {
	tb.Helper()
	st, err := embedded.Open(filepath.Join(tb.TempDir(), "s.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	ctx := context.Background()
	alice := uuid.Must(uuid.NewV7())
	for _, err := range []error{
		st.AddDomain(ctx, store.Domain{Name: "example.org"}),
		st.CreateUser(ctx, store.User{ID: alice, Name: "alice"}),
		st.AddAddress(ctx, store.Address{Address: "alice@example.org", UserID: alice}),
	} {
		if err != nil {
			tb.Fatal(err)
		}
	}
	r, err := resolve.New(resolve.Config{Store: st, Delimiter: resolve.DefaultDelimiter})
	if err != nil {
		tb.Fatal(err)
	}
	kt, err := New(Config{Verify: v, Store: st})
	if err != nil {
		tb.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Store: st, Resolver: r, Verifier: kt})
	if err != nil {
		tb.Fatal(err)
	}
	return st, alice, in
}
