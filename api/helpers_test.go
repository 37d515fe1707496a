package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/google/uuid"
	"golang.org/x/crypto/argon2"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/cassandra/cassandratest"
	"github.com/caliopen/caliopen/store/embedded"
)

// clock is a settable test clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type testUser struct {
	ID       uuid.UUID
	Name     string
	Password string
	Addr     string
	Token    string
}

type harness struct {
	t     *testing.T
	st    store.Store
	srv   *Server
	clock *clock
	ing   *ingest.Ingester
	alice testUser
	bob   testUser
	// domain hosts alice and bob: example.org, or a fresh one on Cassandra.
	domain string
}

// mail adapts a test message written for example.org to the harness's domain.
func (h *harness) mail(raw string) string {
	return strings.ReplaceAll(raw, "@example.org", "@"+h.domain)
}

// cheapHash is an Argon2id PHC string with tiny parameters: Verify reads
// the parameters from the hash, so tests exercise the real verification
// without 64 MiB per attempt (slow under -race on a shared machine).
func cheapHash(pw string) string {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte(pw), salt, 1, 64, 1, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=64,t=1,p=1$%s$%s", argon2.Version, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// engineEnv selects the store the API tests run on: "cassandra" runs them on
// the test cluster (scripts/test.sh does, after the embedded run).
const engineEnv = "CALIOPEN_TEST_API_ENGINE"

func onCassandra() bool { return os.Getenv(engineEnv) == "cassandra" }

func openStore(t testing.TB) store.Store {
	t.Helper()
	if onCassandra() {
		return cassandratest.Open(t)
	}
	st, err := embedded.Open(filepath.Join(t.TempDir(), "caliopen.db"))
	if err != nil {
		t.Fatalf("open embedded store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

type option func(*Config)

func newHarness(t *testing.T, opts ...option) *harness {
	t.Helper()
	ctx := context.Background()
	st := openStore(t)
	clk := &clock{t: time.Now().UTC().Truncate(time.Millisecond)}
	h := &harness{t: t, st: st, clock: clk}
	r, err := resolve.New(resolve.Config{Store: st, Delimiter: resolve.DefaultDelimiter})
	if err != nil {
		t.Fatal(err)
	}
	ing, err := ingest.New(ingest.Config{Store: st, Resolver: r, Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h.ing = ing
	// On Cassandra the keyspace outlives the test: names and addresses
	// must be new each time.
	h.domain = "example.org"
	suffix := ""
	if onCassandra() {
		suffix = "-" + uuid.Must(uuid.NewV7()).String()[24:]
		h.domain = "h" + suffix[1:] + ".example"
	}
	if err := st.AddDomain(ctx, store.Domain{Name: h.domain, CreatedAt: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	mk := func(name, pw string) testUser {
		u := testUser{ID: uuid.Must(uuid.NewV7()), Name: name + suffix, Password: pw, Addr: name + "@" + h.domain}
		if err := st.CreateUser(ctx, store.User{ID: u.ID, Name: u.Name, DisplayName: strings.ToUpper(name[:1]) + name[1:],
			PasswordHash: cheapHash(pw), CreatedAt: clk.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := st.AddAddress(ctx, store.Address{Address: u.Addr, UserID: u.ID}); err != nil {
			t.Fatal(err)
		}
		return u
	}
	h.alice = mk("alice", "alice: correct horse battery")
	h.bob = mk("bob", "bob: staple tr0ub4dor &3")

	dummy := cheapHash("not a password of anyone")
	cfg := Config{Store: st, Clock: clk.Now, Sent: h.ing,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		dummyHash: func() string { return dummy }}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	// Tokens are minted directly: login has its own tests, and each login
	// costs an Argon2id verification.
	h.alice.Token = h.token(h.alice.ID)
	h.bob.Token = h.token(h.bob.ID)
	return h
}

// smtpSender builds a Sender for a test relay.
func smtpSender(t *testing.T, cfg SMTPConfig) *SMTPSender {
	t.Helper()
	s, err := NewSMTPSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (h *harness) token(uid uuid.UUID) string {
	h.t.Helper()
	tok, t, err := newToken(uid, h.clock.Now(), time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.st.PutToken(context.Background(), t); err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// do sends a request; body is JSON-encoded unless it is a string or []byte.
func (h *harness) do(method, path, token string, body any) *httptest.ResponseRecorder {
	h.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req := httptest.NewRequest(method, path, r)
	req.RemoteAddr = "192.0.2.1:40000"
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.srv.Echo().ServeHTTP(rec, req)
	return rec
}

// decode reads a JSON answer, failing on another status.
func decode[T any](t *testing.T, rec *httptest.ResponseRecorder, status int) T {
	t.Helper()
	var v T
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %T: %v; body %s", v, err, rec.Body)
	}
	return v
}

type apiErr struct {
	Error struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Field   string         `json:"field"`
		Details map[string]any `json:"details"`
	} `json:"error"`
}

// wantError checks status and JSON error shape; code and field if not "".
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code, field string) apiErr {
	t.Helper()
	e := decode[apiErr](t, rec, status)
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error without code or message: %s", rec.Body)
	}
	if code != "" && e.Error.Code != code {
		t.Fatalf("error code %q, want %q (%s)", e.Error.Code, code, rec.Body)
	}
	if field != "" && e.Error.Field != field {
		t.Fatalf("error field %q, want %q (%s)", e.Error.Field, field, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "goroutine") || strings.Contains(rec.Body.String(), ".go:") {
		t.Fatalf("error leaks internals: %s", rec.Body)
	}
	return e
}

// deliver ingests raw as an inbound message to u, as the milter would.
func (h *harness) deliver(u testUser, raw string) ingest.Delivery {
	h.t.Helper()
	res, err := h.ing.Ingest(context.Background(), ingest.Envelope{
		MailFrom: "sender@remote.example", Recipients: []string{u.Addr},
		TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_256_GCM_SHA384", ReceivedAt: h.clock.Now(),
	}, []byte(strings.ReplaceAll(h.mail(raw), "\n", "\r\n")))
	if err != nil {
		h.t.Fatalf("ingest: %v", err)
	}
	if len(res.Deliveries) != 1 {
		h.t.Fatalf("ingest: %d deliveries, want 1", len(res.Deliveries))
	}
	return res.Deliveries[0]
}

// seedConversation stores a conversation with n messages directly through
// the store (no parsing): for volume tests.
func seedConversation(t testing.TB, st store.Store, uid uuid.UUID, at time.Time, i, n int, mod func(*store.Message)) store.Conversation {
	t.Helper()
	ctx := context.Background()
	contact := uuid.Must(uuid.NewV7())
	conv, err := st.GetOrCreateConversation(ctx, store.Conversation{
		ID: uuid.Must(uuid.NewV7()), UserID: uid, Key: contact.String(), ContactIDs: []uuid.UUID{contact},
		Participants: []store.Participant{{Role: "from", Protocol: "email", Address: "peer" + itoa(i) + "@remote.example", ContactID: contact}},
		Subject:      "subject " + itoa(i), CreatedAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	hash, err := st.PutBlob(ctx, []byte("Subject: seeded\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	for j := range n {
		m := store.Message{
			ID: uuid.Must(uuid.NewV7()), UserID: uid, ConversationID: conv.ID,
			DedupKey: "seed:" + itoa(i) + ":" + itoa(j), Protocol: "email", Inbound: true,
			Date: at, ReceivedAt: at.Add(time.Duration(j) * time.Second), MessageID: itoa(i) + "." + itoa(j) + "@remote.example",
			Subject:      conv.Subject,
			Participants: conv.Participants, Excerpt: "excerpt " + itoa(i),
			PI:      store.PI{Version: 1, Score: 22, Band: "D"},
			RawHash: hash, RawSize: 24, Flags: store.Flags{Tags: []string{}},
		}
		if mod != nil {
			mod(&m)
		}
		if _, _, err := st.PutMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	conv, err = st.GetConversation(ctx, uid, conv.ID)
	if err != nil {
		t.Fatal(err)
	}
	return conv
}

func itoa(i int) string { return strconv.Itoa(i) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func bytesHex(b []byte) string { return hex.EncodeToString(b) }

func fmtJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// armoredBody strips ASCII armor.
func armoredBody(t *testing.T, b []byte) io.Reader {
	t.Helper()
	block, err := armor.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("armor: %v", err)
	}
	return block.Body
}
