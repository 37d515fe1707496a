package api

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestEventsStream(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Heartbeat = 50 * time.Millisecond })
	ts := httptest.NewServer(h.srv.Echo())
	defer ts.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/api/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+h.alice.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitFor := func(pred func(string) bool, what string) string {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stream closed waiting for %s", what)
				}
				if pred(l) {
					return l
				}
			case <-deadline:
				t.Fatalf("no %s within 5s", what)
			}
		}
	}
	waitFor(func(l string) bool { return l == ": connected" }, "connected comment")
	waitFor(func(l string) bool { return l == ": heartbeat" }, "heartbeat")

	// Bob's events are not Alice's.
	h.srv.Hub().Publish(h.bob.ID, Event{Type: "message.new", MessageID: uuid.Must(uuid.NewV7())})
	ev := Event{Type: "message.new", MessageID: uuid.Must(uuid.NewV7()), ConversationID: uuid.Must(uuid.NewV7()), At: time.Now().UTC()}
	h.srv.Hub().Publish(h.alice.ID, ev)
	waitFor(func(l string) bool { return l == "event: message.new" }, "event line")
	data := waitFor(func(l string) bool { return strings.HasPrefix(l, "data: ") }, "data line")
	var got Event
	if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &got); err != nil {
		t.Fatal(err)
	}
	if got.MessageID != ev.MessageID || got.ConversationID != ev.ConversationID {
		t.Fatalf("event %+v, want %+v (Bob's event must not arrive)", got, ev)
	}

	// Logging out ends the stream at the next heartbeat.
	if rec := h.do(http.MethodPost, "/api/v1/logout", h.alice.Token, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("logout: %d", rec.Code)
	}
	waitFor(func(l string) bool { return l == "event: unauthorized" }, "unauthorized event after logout")

	// The client leaves: the subscription ends.
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Hub().Subscribers(h.alice.ID) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("subscription still open after the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Without a token: 401, no stream.
	resp2, err := http.Get(ts.URL + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events without token: %d", resp2.StatusCode)
	}
}

func TestHubSlowClient(t *testing.T) {
	hub := NewHub()
	uid := uuid.Must(uuid.NewV7())
	sub, cancel := hub.subscribe(uid)
	defer cancel()
	for range subscriberBuffer + 10 {
		hub.Publish(uid, Event{Type: "message.new"}) // must never block
	}
	if len(sub.ch) != subscriberBuffer || !hub.takeLagged(sub) || hub.takeLagged(sub) {
		t.Fatalf("buffer %d, lagged mark not set once", len(sub.ch))
	}
}
