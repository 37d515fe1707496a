package cassandra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// micros is the write timestamp (µs) that orders conversation summary
// writes by the message's received_at rather than by arrival.
func micros(t time.Time) int64 { return sortNanos(t) / 1000 }

func newID() uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.New() // only fails if the random source does
	}
	return id
}

func (st *Store) GetOrCreateConversation(ctx context.Context, c store.Conversation) (store.Conversation, error) {
	if c.UserID == uuid.Nil || c.Key == "" {
		return store.Conversation{}, fmt.Errorf("get or create conversation: %w: UserID and Key are required", store.ErrInvalid)
	}
	op := "get or create conversation"
	if got, err := st.GetConversationByKey(ctx, c.UserID, c.Key); err == nil || !isNotFound(err) {
		return got, err
	}
	if c.ID == uuid.Nil {
		c.ID = newID()
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	parts, err := json.Marshal(c.Participants)
	if err != nil {
		return store.Conversation{}, fmt.Errorf("%s: encode participants: %w", op, err)
	}
	// Our row is written before the key is claimed, so whoever reads the
	// winner's ID from conversation_keys finds its row already there.
	if err := st.q(ctx, `INSERT INTO conversations (user_id, id, conv_key, contact_ids, participants, subject, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		gu(c.UserID), gu(c.ID), c.Key, uuids(c.ContactIDs), parts, c.Subject, tn(c.CreatedAt)).Exec(); err != nil {
		return store.Conversation{}, wrap(op, err)
	}
	ok, prev, err := casScan(st.q(ctx, `INSERT INTO conversation_keys (user_id, conv_key, id) VALUES (?, ?, ?) IF NOT EXISTS`,
		gu(c.UserID), c.Key, gu(c.ID)))
	if err != nil {
		return store.Conversation{}, wrap(op, err)
	}
	if !ok {
		winner := prevUUID(prev, "id")
		if winner != c.ID {
			if err := st.q(ctx, `DELETE FROM conversations WHERE user_id = ? AND id = ?`, gu(c.UserID), gu(c.ID)).Exec(); err != nil {
				st.log.WarnContext(ctx, "cassandra: dropping losing conversation row failed", "id", c.ID, "err", err)
			}
		}
		return st.GetConversation(ctx, c.UserID, winner)
	}
	if err := st.q(ctx, `INSERT INTO conversations_by_activity (user_id, last_activity, id) VALUES (?, ?, ?)`,
		gu(c.UserID), sortNanos(c.CreatedAt), gu(c.ID)).Exec(); err != nil {
		return store.Conversation{}, wrap(op, err)
	}
	// What was just written: no need to read it back.
	c.CreatedAt = fromNanos(sortNanos(c.CreatedAt))
	c = c.EmptySummary()
	return c, nil
}

func uuids(in []uuid.UUID) []gocql.UUID {
	if in == nil {
		return nil
	}
	out := make([]gocql.UUID, len(in))
	for i, u := range in {
		out[i] = gu(u)
	}
	return out
}

const convCols = `id, conv_key, contact_ids, participants, subject, created_at, last_activity, last_message_id, excerpt, protocols`

// scanConversation reads one conversations row; ok is false for a row
// without a key, which is what a summary write racing a delete leaves
// behind: not a conversation. Counters are filled in separately.
func scanConversation(sc interface{ Scan(...any) error }, userID uuid.UUID) (c store.Conversation, ok bool, err error) {
	var (
		cid, lastID      gocql.UUID
		contacts         []gocql.UUID
		parts            []byte
		created, lastAct int64
	)
	c.UserID = userID
	if err := sc.Scan(&cid, &c.Key, &contacts, &parts, &c.Subject, &created, &lastAct, &lastID, &c.Excerpt, &c.Protocols); err != nil {
		return c, false, err
	}
	if c.Key == "" {
		return store.Conversation{}, false, nil
	}
	c.ID, c.LastMessageID = ug(cid), ug(lastID)
	// Activity starts at creation and only moves forward, even when a
	// message's received_at predates the conversation (an import).
	c.CreatedAt, c.LastActivity = fromNanos(created), fromNanos(max(lastAct, created))
	for _, u := range contacts {
		c.ContactIDs = append(c.ContactIDs, ug(u))
	}
	if len(parts) > 0 {
		if err := json.Unmarshal(parts, &c.Participants); err != nil {
			return c, false, fmt.Errorf("decode participants of conversation %s: %w", c.ID, err)
		}
	}
	return c, true, nil
}

func (st *Store) GetConversation(ctx context.Context, userID, id uuid.UUID) (store.Conversation, error) {
	op := "get conversation " + id.String()
	c, ok, err := st.conversationRow(ctx, userID, id)
	if err != nil {
		return c, wrap(op, err)
	}
	if !ok {
		return store.Conversation{}, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	var messages, unread int64
	err = st.q(ctx, `SELECT messages, unread FROM conversation_counters WHERE user_id = ? AND conversation_id = ?`,
		gu(userID), gu(id)).Scan(&messages, &unread)
	if err != nil && !isNotFound(wrap(op, err)) {
		return store.Conversation{}, wrap(op, err)
	}
	c.SetCounts(messages, unread)
	return c, nil
}

// conversationRow reads the conversation without its counters.
func (st *Store) conversationRow(ctx context.Context, userID, id uuid.UUID) (store.Conversation, bool, error) {
	c, ok, err := scanConversation(st.q(ctx, `SELECT `+convCols+` FROM conversations WHERE user_id = ? AND id = ?`, gu(userID), gu(id)), userID)
	if err != nil && isNotFound(wrap("", err)) {
		return c, false, nil
	}
	return c, ok, err
}

// inChunk bounds the keys of one IN query: the coordinator fans each key out
// as a read of its own, so a few medium queries beat one huge one.
const inChunk = 100

// conversationsByID reads many conversations with their counters, in chunks
// of two queries each (IN on the last partition key column) rather than two
// queries per conversation.
func (st *Store) conversationsByID(ctx context.Context, userID uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]store.Conversation, error) {
	if len(ids) <= inChunk {
		return st.conversationsChunk(ctx, userID, ids)
	}
	parts, err := parallel(ctx, (len(ids)+inChunk-1)/inChunk, func(ctx context.Context, i int) (map[uuid.UUID]store.Conversation, bool, error) {
		m, err := st.conversationsChunk(ctx, userID, ids[i*inChunk:min((i+1)*inChunk, len(ids))])
		return m, err == nil, err
	})
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]store.Conversation, len(ids))
	for _, p := range parts {
		for id, c := range *p {
			out[id] = c
		}
	}
	return out, nil
}

func (st *Store) conversationsChunk(ctx context.Context, userID uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]store.Conversation, error) {
	out := make(map[uuid.UUID]store.Conversation, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := uuids(ids)
	type counts struct{ messages, unread int64 }
	var (
		wg        sync.WaitGroup
		counters  = make(map[uuid.UUID]counts, len(ids))
		countsErr error
	)
	wg.Go(func() {
		iter := st.q(ctx, `SELECT conversation_id, messages, unread FROM conversation_counters WHERE user_id = ? AND conversation_id IN ?`,
			gu(userID), keys).Iter()
		var (
			cid gocql.UUID
			c   counts
		)
		for iter.Scan(&cid, &c.messages, &c.unread) {
			counters[ug(cid)] = c
		}
		countsErr = iter.Close()
	})
	iter := st.q(ctx, `SELECT `+convCols+` FROM conversations WHERE user_id = ? AND id IN ?`, gu(userID), keys).Iter()
	sc := iter.Scanner()
	var scanErr error
	for sc.Next() {
		c, ok, err := scanConversation(sc, userID)
		if err != nil {
			scanErr = err
			_ = iter.Close()
			break
		}
		if ok {
			out[c.ID] = c
		}
	}
	if scanErr == nil {
		scanErr = sc.Err()
	}
	wg.Wait()
	if err := errors.Join(scanErr, countsErr); err != nil {
		return nil, err
	}
	for id, c := range out {
		n := counters[id]
		c.SetCounts(n.messages, n.unread)
		out[id] = c
	}
	return out, nil
}

func (st *Store) GetConversationByKey(ctx context.Context, userID uuid.UUID, key string) (store.Conversation, error) {
	var id gocql.UUID
	if err := st.q(ctx, `SELECT id FROM conversation_keys WHERE user_id = ? AND conv_key = ?`, gu(userID), key).Scan(&id); err != nil {
		return store.Conversation{}, wrap("get conversation by key", err)
	}
	return st.GetConversation(ctx, userID, ug(id))
}

func (st *Store) UpdateConversation(ctx context.Context, c store.Conversation) error {
	op := "update conversation " + c.ID.String()
	if c.Key == "" {
		return fmt.Errorf("%s: %w: Key is required", op, store.ErrInvalid)
	}
	cur, err := st.GetConversation(ctx, c.UserID, c.ID)
	if err != nil {
		return err
	}
	parts, err := json.Marshal(c.Participants)
	if err != nil {
		return fmt.Errorf("%s: encode participants: %w", op, err)
	}
	if c.Key != cur.Key {
		ok, prev, err := casScan(st.q(ctx, `INSERT INTO conversation_keys (user_id, conv_key, id) VALUES (?, ?, ?) IF NOT EXISTS`,
			gu(c.UserID), c.Key, gu(c.ID)))
		if err != nil {
			return wrap(op, err)
		}
		if !ok && prevUUID(prev, "id") != c.ID {
			return fmt.Errorf("%s: %w: key %q is another conversation's", op, store.ErrExists, c.Key)
		}
	}
	if err := st.q(ctx, `UPDATE conversations SET conv_key = ?, contact_ids = ?, participants = ?, subject = ? WHERE user_id = ? AND id = ?`,
		c.Key, uuids(c.ContactIDs), parts, c.Subject, gu(c.UserID), gu(c.ID)).Exec(); err != nil {
		return wrap(op, err)
	}
	if c.Key != cur.Key {
		if _, _, err := casScan(st.q(ctx, `DELETE FROM conversation_keys WHERE user_id = ? AND conv_key = ? IF id = ?`,
			gu(c.UserID), cur.Key, gu(c.ID))); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}

// activityCursor is a position in conversations_by_activity.
type activityCursor struct {
	at int64
	id uuid.UUID
}

func (c activityCursor) String() string { return strconv.FormatInt(c.at, 10) + "_" + c.id.String() }

func parseActivityCursor(s string) (activityCursor, error) {
	at, id, ok := strings.Cut(s, "_")
	if !ok {
		return activityCursor{}, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return activityCursor{}, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return activityCursor{}, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
	}
	return activityCursor{n, u}, nil
}

// ListConversations reads the user's activity index one slice at a time and
// resolves each row to its conversation. Rows left behind by racing writers
// (their activity no longer matches the conversation's) are skipped and
// removed, so a page may take more than one slice.
func (st *Store) ListConversations(ctx context.Context, userID uuid.UUID, p store.Page) ([]store.Conversation, string, error) {
	const op = "list conversations"
	limit := p.ClampLimit()
	var (
		pos    *activityCursor
		out    []store.Conversation
		posOut []activityCursor
	)
	if p.Cursor != "" {
		c, err := parseActivityCursor(p.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", op, err)
		}
		pos = &c
	}
	seen := map[uuid.UUID]bool{}
	for len(out) <= limit {
		want := limit + 1 - len(out)
		var q *gocql.Query
		if pos == nil {
			q = st.q(ctx, `SELECT last_activity, id FROM conversations_by_activity WHERE user_id = ? LIMIT ?`, gu(userID), want)
		} else {
			q = st.q(ctx, `SELECT last_activity, id FROM conversations_by_activity WHERE user_id = ? AND (last_activity, id) < (?, ?) LIMIT ?`,
				gu(userID), pos.at, gu(pos.id), want)
		}
		iter := q.Iter()
		var (
			rows []activityCursor
			at   int64
			id   gocql.UUID
		)
		for iter.Scan(&at, &id) {
			rows = append(rows, activityCursor{at, ug(id)})
		}
		if err := iter.Close(); err != nil {
			return nil, "", wrap(op, err)
		}
		ids := make([]uuid.UUID, len(rows))
		for i, r := range rows {
			ids[i] = r.id
		}
		convs, err := st.conversationsByID(ctx, userID, ids)
		if err != nil {
			return nil, "", wrap(op, err)
		}
		for _, r := range rows {
			c, ok := convs[r.id]
			switch cur := sortNanos(c.LastActivity); {
			case !ok || cur > r.at:
				// Deleted, or superseded by newer activity: a leftover row.
				st.dropActivityRow(ctx, userID, r)
				continue
			case cur < r.at:
				// A writer is between inserting this row and updating the
				// summary; the conversation's current row is listed instead.
				continue
			}
			if seen[c.ID] {
				continue
			}
			seen[c.ID] = true
			out = append(out, c)
			posOut = append(posOut, r)
		}
		if len(rows) < want {
			break // index exhausted
		}
		pos = &rows[len(rows)-1]
	}
	if len(out) > limit {
		return out[:limit], posOut[limit-1].String(), nil
	}
	return out, "", nil
}

func (st *Store) dropActivityRow(ctx context.Context, userID uuid.UUID, r activityCursor) {
	if err := st.q(ctx, `DELETE FROM conversations_by_activity WHERE user_id = ? AND last_activity = ? AND id = ?`,
		gu(userID), r.at, gu(r.id)).Exec(); err != nil {
		st.log.DebugContext(ctx, "cassandra: dropping stale activity row failed", "err", err)
	}
}

// parallel runs fn for 0..n-1 with bounded concurrency; result i is nil when
// fn reported it absent. The first error cancels the rest.
func parallel[T any](ctx context.Context, n int, fn func(context.Context, int) (T, bool, error)) ([]*T, error) {
	const workers = 16
	out := make([]*T, n)
	if n == 0 {
		return out, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				v, ok, err := fn(ctx, i)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
					continue
				}
				if ok {
					out[i] = &v
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, ctx.Err()
}

func (st *Store) DeleteConversation(ctx context.Context, userID, id uuid.UUID) error {
	op := "delete conversation " + id.String()
	c, err := st.GetConversation(ctx, userID, id)
	if err != nil {
		return err
	}
	buckets, err := st.buckets(ctx, userID, id)
	if err != nil {
		return wrap(op, err)
	}
	// Messages first, the conversation last: a failure half-way leaves a
	// conversation that can be deleted again.
	for _, b := range buckets {
		iter := st.q(ctx, `SELECT id FROM conversation_messages WHERE user_id = ? AND conversation_id = ? AND bucket = ?`,
			gu(userID), gu(id), b).Iter()
		var (
			mid gocql.UUID
			ids []uuid.UUID
		)
		for iter.Scan(&mid) {
			ids = append(ids, ug(mid))
		}
		if err := iter.Close(); err != nil {
			return wrap(op, err)
		}
		if _, err := parallel(ctx, len(ids), func(ctx context.Context, i int) (struct{}, bool, error) {
			m, err := st.GetMessage(ctx, userID, ids[i])
			if err == nil {
				err = st.dropMessage(ctx, m)
			}
			if isNotFound(err) {
				err = nil // already gone
			}
			return struct{}{}, false, err
		}); err != nil {
			return wrap(op, err)
		}
		if err := st.q(ctx, `DELETE FROM conversation_messages WHERE user_id = ? AND conversation_id = ? AND bucket = ?`,
			gu(userID), gu(id), b).Exec(); err != nil {
			return wrap(op, err)
		}
	}
	for _, s := range []string{
		`DELETE FROM conversation_buckets WHERE user_id = ? AND conversation_id = ?`,
		`DELETE FROM conversation_counters WHERE user_id = ? AND conversation_id = ?`,
	} {
		if err := st.q(ctx, s, gu(userID), gu(id)).Exec(); err != nil {
			return wrap(op, err)
		}
	}
	if err := st.q(ctx, `DELETE FROM conversations_by_activity WHERE user_id = ? AND last_activity = ? AND id = ?`,
		gu(userID), sortNanos(c.LastActivity), gu(id)).Exec(); err != nil {
		return wrap(op, err)
	}
	if _, _, err := casScan(st.q(ctx, `DELETE FROM conversation_keys WHERE user_id = ? AND conv_key = ? IF id = ?`,
		gu(userID), c.Key, gu(id))); err != nil {
		return wrap(op, err)
	}
	return wrap(op, st.q(ctx, `DELETE FROM conversations WHERE user_id = ? AND id = ?`, gu(userID), gu(id)).Exec())
}

// deleteUserConversations deletes every conversation listed in the user's
// activity index.
func (st *Store) deleteUserConversations(ctx context.Context, userID uuid.UUID) error {
	iter := st.q(ctx, `SELECT id FROM conversations_by_activity WHERE user_id = ?`, gu(userID)).Iter()
	var (
		id  gocql.UUID
		ids []uuid.UUID
	)
	seen := map[uuid.UUID]bool{}
	for iter.Scan(&id) {
		if !seen[ug(id)] {
			seen[ug(id)] = true
			ids = append(ids, ug(id))
		}
	}
	if err := iter.Close(); err != nil {
		return wrap("delete user conversations", err)
	}
	for _, cid := range ids {
		if err := st.DeleteConversation(ctx, userID, cid); err != nil && !isNotFound(err) {
			return err
		}
	}
	return nil
}

// buckets lists a conversation's message buckets, newest first.
func (st *Store) buckets(ctx context.Context, userID, convID uuid.UUID) ([]int, error) {
	iter := st.q(ctx, `SELECT bucket FROM conversation_buckets WHERE user_id = ? AND conversation_id = ?`, gu(userID), gu(convID)).Iter()
	var (
		b   int
		out []int
	)
	for iter.Scan(&b) {
		out = append(out, b)
	}
	return out, iter.Close()
}
