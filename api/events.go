package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/store"
)

// Event is one notification for a user's clients.
type Event struct {
	Type           string    `json:"type"` // "message.new"
	MessageID      uuid.UUID `json:"message_id"`
	ConversationID uuid.UUID `json:"conversation_id"`
	At             time.Time `json:"at"`
}

// subscriberBuffer is how many events a slow client may fall behind before
// it is told to resynchronise; publishing never blocks on a client.
const subscriberBuffer = 64

// Hub fans events out to the connected clients of each user, in process.
// The zero value is not usable: call NewHub.
type Hub struct {
	mu    sync.Mutex
	subs  map[uuid.UUID]map[*subscriber]struct{}
	total int // subscribers of every user
}

type subscriber struct {
	ch     chan Event
	lagged bool // an event was dropped: the client must refetch
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: make(map[uuid.UUID]map[*subscriber]struct{})} }

// Publish sends ev to every client of userID. It never blocks: a client
// whose buffer is full misses the event and receives a "resync" instead.
func (h *Hub) Publish(userID uuid.UUID, ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[userID] {
		select {
		case sub.ch <- ev:
		default:
			sub.lagged = true
		}
	}
}

// subscribe registers a client of userID; cancel unregisters it.
func (h *Hub) subscribe(userID uuid.UUID) (sub *subscriber, cancel func()) {
	sub, cancel, _ = h.trySubscribe(userID, 0, 0)
	return sub, cancel
}

// trySubscribe registers a client of userID unless the user already has
// perUser clients or the hub holds total (a limit <= 0 is none); ok=false
// then, and nothing is registered.
func (h *Hub) trySubscribe(userID uuid.UUID, perUser, total int) (sub *subscriber, cancel func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if perUser > 0 && len(h.subs[userID]) >= perUser || total > 0 && h.total >= total {
		return nil, nil, false
	}
	sub = &subscriber{ch: make(chan Event, subscriberBuffer)}
	if h.subs[userID] == nil {
		h.subs[userID] = make(map[*subscriber]struct{})
	}
	h.subs[userID][sub] = struct{}{}
	h.total++
	var once sync.Once
	return sub, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			delete(h.subs[userID], sub)
			h.total--
			if len(h.subs[userID]) == 0 {
				delete(h.subs, userID)
			}
		})
	}, true
}

// takeLagged reports and clears the dropped-event mark.
func (h *Hub) takeLagged(sub *subscriber) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := sub.lagged
	sub.lagged = false
	return l
}

// Subscribers returns how many clients userID has connected.
func (h *Hub) Subscribers(userID uuid.UUID) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[userID])
}

// events streams the user's events as Server-Sent Events until the client
// disconnects, with a comment every Heartbeat so proxies keep it open.
func (s *Server) events(c echo.Context) error {
	uid := userID(c)
	tokHash, _ := c.Get(userKey + ".token").(string)
	ctx := c.Request().Context()
	w := c.Response()
	rc := http.NewResponseController(w.Writer)

	// Each stream holds a goroutine, a buffer and a connection: bound them,
	// per user and in all, and refuse before any header is written.
	sub, cancel, ok := s.hub.trySubscribe(uid, s.cfg.MaxStreamsPerUser, s.cfg.MaxStreams)
	if !ok {
		return &Error{Status: http.StatusTooManyRequests, Code: "too_many_streams",
			Message: "too many open event streams, close one and retry", RetryAfter: 30}
	}
	defer cancel()

	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	write := func(p []byte) error {
		// A server WriteTimeout would cut a long stream: extend the deadline
		// per write instead (ignored where unsupported, e.g. in tests).
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.Heartbeat + 10*time.Second))
		if _, err := w.Write(p); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := write([]byte(": connected\nretry: 3000\n\n")); err != nil {
		return nil
	}
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()
	for {
		var frame []byte
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			// A stream outlives no token: logout or expiry ends it.
			if !s.tokenValid(ctx, tokHash) {
				_ = write([]byte("event: unauthorized\ndata: {}\n\n"))
				return nil
			}
			frame = []byte(": heartbeat\n\n")
		case ev := <-sub.ch:
			data, err := json.Marshal(ev)
			if err != nil {
				return fmt.Errorf("events: %w", err)
			}
			frame = fmt.Appendf(nil, "id: %s\nevent: %s\ndata: %s\n\n", ev.MessageID, ev.Type, data)
			if s.hub.takeLagged(sub) {
				frame = append(frame, "event: resync\ndata: {}\n\n"...)
			}
		}
		if err := write(frame); err != nil {
			// The client is gone: that is how a stream ends.
			return nil
		}
	}
}

// tokenValid reports whether the token is still stored and unexpired. A
// store failure keeps the stream: the client cannot do better than wait.
func (s *Server) tokenValid(ctx context.Context, hash string) bool {
	t, err := s.st.GetToken(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	return err != nil || s.tokenLive(t, s.now())
}
