package cassandra

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// bucketOf is the conversation_messages partition a message falls in: its
// received_at month, UTC, as YYYYMM.
func bucketOf(t time.Time) int {
	t = t.UTC()
	return t.Year()*100 + int(t.Month())
}

const msgCols = `user_id, id, conversation_id, dedup_key, protocol, inbound, sent_at, received_at, message_id, in_reply_to, refs,
	subject, participants, excerpt, text_body, html_body, attachments, read, starred, tags, security,
	pi_version, pi_score, pi_band, pi_warning, pi_details, raw_hash, raw_size`

func (st *Store) insertMessage(ctx context.Context, m store.Message) error {
	parts, err := json.Marshal(m.Participants)
	if err != nil {
		return fmt.Errorf("encode participants: %w", err)
	}
	var atts []byte
	if m.Attachments != nil {
		if atts, err = json.Marshal(m.Attachments); err != nil {
			return fmt.Errorf("encode attachments: %w", err)
		}
	}
	return st.q(ctx, `INSERT INTO messages (`+msgCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		gu(m.UserID), gu(m.ID), gu(m.ConversationID), m.DedupKey, m.Protocol, m.Inbound, tn(m.Date), tn(m.ReceivedAt), m.MessageID,
		m.InReplyTo, m.References, m.Subject, parts, m.Excerpt, m.TextBody, m.HTMLBody, atts,
		m.Flags.Read, m.Flags.Starred, m.Flags.Tags, m.Security,
		m.PI.Version, m.PI.Score, m.PI.Band, m.PI.Warning, m.PI.Details, m.RawHash, m.RawSize).Exec()
}

func scanMessage(sc interface{ Scan(...any) error }) (store.Message, error) {
	var (
		m                  store.Message
		uid, id, cid       gocql.UUID
		sent, received     int64
		parts, atts, sec   []byte
		piDetails          []byte
		inReplyTo, refs    []string
		tags               []string
		read, starred, inb bool
	)
	if err := sc.Scan(&uid, &id, &cid, &m.DedupKey, &m.Protocol, &inb, &sent, &received, &m.MessageID, &inReplyTo, &refs,
		&m.Subject, &parts, &m.Excerpt, &m.TextBody, &m.HTMLBody, &atts, &read, &starred, &tags, &sec,
		&m.PI.Version, &m.PI.Score, &m.PI.Band, &m.PI.Warning, &piDetails, &m.RawHash, &m.RawSize); err != nil {
		return m, err
	}
	m.UserID, m.ID, m.ConversationID = ug(uid), ug(id), ug(cid)
	m.Inbound, m.Date, m.ReceivedAt = inb, fromNanos(sent), fromNanos(received)
	m.InReplyTo, m.References = inReplyTo, refs
	m.Flags = store.Flags{Read: read, Starred: starred, Tags: tags}
	m.Security, m.PI.Details = sec, piDetails
	if len(parts) > 0 {
		if err := json.Unmarshal(parts, &m.Participants); err != nil {
			return m, fmt.Errorf("decode participants of message %s: %w", m.ID, err)
		}
	}
	if len(atts) > 0 {
		if err := json.Unmarshal(atts, &m.Attachments); err != nil {
			return m, fmt.Errorf("decode attachments of message %s: %w", m.ID, err)
		}
	}
	return m, nil
}

// PutMessage stores m once per (UserID, DedupKey). Each caller first writes
// the message row under its own ID, then a lightweight transaction on
// message_dedup picks the winner: a loser drops its row and returns the
// winner's, which is already readable. Only the winner counts the message
// and writes the indexes, so counters stay exact under concurrent
// redelivery; a retry after the winner failed repairs the count (counts.go).
func (st *Store) PutMessage(ctx context.Context, m store.Message) (store.Message, bool, error) {
	const op = "put message"
	if m.UserID == uuid.Nil || m.ConversationID == uuid.Nil {
		return store.Message{}, false, fmt.Errorf("%s: %w: UserID and ConversationID are required", op, store.ErrInvalid)
	}
	if m.ID == uuid.Nil {
		m.ID = newID()
	}
	if m.DedupKey == "" {
		return store.Message{}, false, fmt.Errorf("%s: %w: DedupKey is required", op, store.ErrInvalid)
	}
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = time.Now()
	}
	// The dedup lookup (a redelivery is answered without a transaction) runs
	// beside the conversation check. Our row is written only after both: a
	// caller retrying with the winner's own ID must not overwrite it.
	var (
		prev    store.Message
		prevErr error
		wg      sync.WaitGroup
	)
	wg.Go(func() { prev, prevErr = st.byDedupKey(ctx, m.UserID, m.DedupKey) })
	conv, convOK, convErr := st.conversationRow(ctx, m.UserID, m.ConversationID)
	wg.Wait()
	switch {
	case convErr != nil:
		return store.Message{}, false, wrap(op, convErr)
	case !convOK:
		return store.Message{}, false, fmt.Errorf("%s: conversation %s: %w", op, m.ConversationID, store.ErrNotFound)
	case prevErr == nil:
		if prev.ConversationID == conv.ID {
			// Redoing the (idempotent) index writes lets a retry finish a
			// PutMessage that failed after winning the key; the count it
			// may have lost is repaired from the index.
			if err := st.indexMessage(ctx, prev, conv); err != nil {
				return store.Message{}, false, wrap(op, err)
			}
			if err := st.repairCount(ctx, prev); err != nil {
				return store.Message{}, false, wrap(op, err)
			}
		}
		return prev, false, nil
	case !isNotFound(prevErr):
		return store.Message{}, false, prevErr
	}

	// The blob reference and the usage are taken before the claim and given
	// back by a loser: a crash can then only leave them one too high (a blob
	// kept, never one deleted while a message still needs it).
	if err := st.messageStored(ctx, m); err != nil {
		return store.Message{}, false, wrap(op, err)
	}
	if err := st.insertMessage(ctx, m); err != nil {
		return store.Message{}, false, wrap(op, err)
	}
	ok, cas, err := casScan(st.q(ctx, `INSERT INTO message_dedup (user_id, dedup_key, id) VALUES (?, ?, ?) IF NOT EXISTS`,
		gu(m.UserID), m.DedupKey, gu(m.ID)))
	if err != nil {
		// The outcome is unknown: keep our row, a retry resolves it.
		return store.Message{}, false, wrap(op, err)
	}
	if !ok {
		winner := prevUUID(cas, "id")
		if winner != m.ID {
			st.dropRow(ctx, m)
			if err := st.messageUnstored(ctx, m); err != nil {
				st.log.Warn("cassandra: giving back a lost race's blob reference failed; the blob is kept", "raw", m.RawHash, "err", err)
			}
		}
		got, err := st.GetMessage(ctx, m.UserID, winner)
		return got, false, err
	}

	// Only the winner counts the message: counter updates are not
	// idempotent, so the driver never retries them, and a caller's retry
	// takes the duplicate path, which re-indexes and repairs a lost count.
	// Counted before indexed: the repair relies on it (counts.go).
	if err := faultAt(ctx, "claimed"); err != nil {
		return store.Message{}, false, wrap(op, err)
	}
	if err := st.addCounts(ctx, m.UserID, m.ConversationID, store.PutDelta(m)); err != nil {
		return store.Message{}, false, wrap(op, err)
	}
	if err := faultAt(ctx, "counted"); err != nil {
		return store.Message{}, false, wrap(op, err)
	}
	if err := st.indexMessage(ctx, m, conv); err != nil {
		return store.Message{}, false, wrap(op, err)
	}
	return m, true, nil
}

// dropRow deletes a message row that lost (or never entered) the race for
// its dedup key; nothing points at it, so a failure only leaves garbage.
func (st *Store) dropRow(ctx context.Context, m store.Message) {
	if err := st.q(ctx, `DELETE FROM messages WHERE user_id = ? AND id = ?`, gu(m.UserID), gu(m.ID)).Exec(); err != nil {
		st.log.WarnContext(ctx, "cassandra: dropping an unused message row failed", "id", m.ID, "err", err)
	}
}

// indexMessage makes a stored message visible: conversation index, the
// conversation's place in the activity list (the new row goes in before the
// summary changes and the old one goes after, so a reader always finds a row
// matching the summary), and last the Message-ID lookup: ingest takes a
// message found by Message-ID for stored, so it must find only complete
// ones. Every write is idempotent.
func (st *Store) indexMessage(ctx context.Context, m store.Message, conv store.Conversation) error {
	recv := sortNanos(m.ReceivedAt)
	old := sortNanos(conv.LastActivity)
	bucket := bucketOf(m.ReceivedAt)
	// Unlogged: each write is idempotent and a failure is retried whole, so
	// the batch log's cost buys nothing.
	b := st.s.Batch(gocql.UnloggedBatch).WithContext(ctx)
	b.Query(`INSERT INTO conversation_buckets (user_id, conversation_id, bucket) VALUES (?, ?, ?)`, gu(m.UserID), gu(m.ConversationID), bucket)
	b.Query(`INSERT INTO conversation_messages (user_id, conversation_id, bucket, received_at, id) VALUES (?, ?, ?, ?, ?)`,
		gu(m.UserID), gu(m.ConversationID), bucket, recv, gu(m.ID))
	if recv > old { // an older message (an import) does not move the conversation
		b.Query(`INSERT INTO conversations_by_activity (user_id, last_activity, id) VALUES (?, ?, ?)`, gu(m.UserID), recv, gu(m.ConversationID))
	}
	if err := b.Exec(); err != nil {
		return err
	}
	if err := st.writeSummary(ctx, m); err != nil {
		return err
	}
	var wg sync.WaitGroup
	if old < recv {
		wg.Go(func() { st.dropActivityRow(ctx, m.UserID, activityCursor{old, m.ConversationID}) })
	}
	var err error
	if m.MessageID != "" {
		err = st.q(ctx, `INSERT INTO messages_by_message_id (user_id, message_id, id) VALUES (?, ?, ?)`,
			gu(m.UserID), m.MessageID, gu(m.ID)).Exec()
	}
	wg.Wait()
	return err
}

// writeSummary makes m the conversation's latest message, with write
// timestamp = m's received_at so that the newest message wins whatever order
// concurrent writers land in (and an older, imported message never wins).
func (st *Store) writeSummary(ctx context.Context, m store.Message) error {
	d := store.PutDelta(m)
	id, excerpt := store.LatestOf(&m)
	b := st.s.Batch(gocql.UnloggedBatch).WithContext(ctx) // one partition: applied together
	b.Query(`UPDATE conversations USING TIMESTAMP ? SET last_activity = ?, last_message_id = ?, excerpt = ? WHERE user_id = ? AND id = ?`,
		micros(m.ReceivedAt), sortNanos(d.Activity), gu(id), excerpt, gu(m.UserID), gu(m.ConversationID))
	if d.Protocol != "" {
		b.Query(`UPDATE conversations SET protocols = protocols + ? WHERE user_id = ? AND id = ?`,
			[]string{d.Protocol}, gu(m.UserID), gu(m.ConversationID))
	}
	return b.Exec()
}

// addCounts applies d's counts to the conversation's counters. Counter
// updates are not idempotent: the driver never retries them.
func (st *Store) addCounts(ctx context.Context, userID, convID uuid.UUID, d store.SummaryDelta) error {
	return st.q(ctx, `UPDATE conversation_counters SET messages = messages + ?, unread = unread + ? WHERE user_id = ? AND conversation_id = ?`,
		int64(d.Messages), int64(d.Unread), gu(userID), gu(convID)).Exec()
}

func (st *Store) byDedupKey(ctx context.Context, userID uuid.UUID, key string) (store.Message, error) {
	var id gocql.UUID
	if err := st.q(ctx, `SELECT id FROM message_dedup WHERE user_id = ? AND dedup_key = ?`, gu(userID), key).Scan(&id); err != nil {
		return store.Message{}, wrap("put message", err)
	}
	return st.GetMessage(ctx, userID, ug(id))
}

func (st *Store) GetMessage(ctx context.Context, userID, id uuid.UUID) (store.Message, error) {
	m, err := scanMessage(st.q(ctx, `SELECT `+msgCols+` FROM messages WHERE user_id = ? AND id = ?`, gu(userID), gu(id)))
	if err == nil && m.ConversationID == uuid.Nil {
		// Only flag or security columns: what an update racing a delete leaves.
		return store.Message{}, fmt.Errorf("get message %s: %w", id, store.ErrNotFound)
	}
	return m, wrap("get message "+id.String(), err)
}

func (st *Store) FindMessageByMessageID(ctx context.Context, userID uuid.UUID, messageID string) (store.Message, error) {
	const op = "find message by Message-ID"
	iter := st.q(ctx, `SELECT id FROM messages_by_message_id WHERE user_id = ? AND message_id = ?`, gu(userID), messageID).Iter()
	var (
		id  gocql.UUID
		ids []uuid.UUID
	)
	for iter.Scan(&id) {
		ids = append(ids, ug(id))
	}
	if err := iter.Close(); err != nil {
		return store.Message{}, wrap(op, err)
	}
	for _, id := range ids { // oldest first (UUIDv7 order)
		m, err := st.GetMessage(ctx, userID, id)
		if err == nil || !isNotFound(err) {
			return m, err
		}
	}
	return store.Message{}, fmt.Errorf("%s: %w", op, store.ErrNotFound)
}

// messageCursor is a position in a conversation's message index.
type messageCursor struct {
	bucket int
	at     int64
	id     uuid.UUID
}

func (c messageCursor) String() string {
	return strconv.Itoa(c.bucket) + "_" + strconv.FormatInt(c.at, 10) + "_" + c.id.String()
}

func parseMessageCursor(s string) (messageCursor, error) {
	parts := strings.SplitN(s, "_", 3)
	if len(parts) != 3 {
		return messageCursor{}, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
	}
	b, err1 := strconv.Atoi(parts[0])
	at, err2 := strconv.ParseInt(parts[1], 10, 64)
	id, err3 := uuid.Parse(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return messageCursor{}, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
	}
	return messageCursor{b, at, id}, nil
}

// ListMessages walks the conversation's buckets newest first, reading index
// rows after the cursor, and fetches the messages they name.
func (st *Store) ListMessages(ctx context.Context, userID, conversationID uuid.UUID, p store.Page) ([]store.Message, string, error) {
	const op = "list messages"
	limit := p.ClampLimit()
	var pos *messageCursor
	if p.Cursor != "" {
		c, err := parseMessageCursor(p.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", op, err)
		}
		pos = &c
	}
	// The conversation must be the user's: another user's ID is not found.
	var key string
	if err := st.q(ctx, `SELECT conv_key FROM conversations WHERE user_id = ? AND id = ?`, gu(userID), gu(conversationID)).Scan(&key); err != nil || key == "" {
		if err == nil {
			err = store.ErrNotFound
		}
		return nil, "", wrap(op, err)
	}
	buckets, err := st.buckets(ctx, userID, conversationID)
	if err != nil {
		return nil, "", wrap(op, err)
	}
	var (
		out    []store.Message
		posOut []messageCursor
	)
	for _, bucket := range buckets {
		if pos != nil && bucket > pos.bucket {
			continue
		}
		for len(out) <= limit {
			want := limit + 1 - len(out)
			var q *gocql.Query
			if pos != nil && pos.bucket == bucket {
				q = st.q(ctx, `SELECT received_at, id FROM conversation_messages WHERE user_id = ? AND conversation_id = ? AND bucket = ? AND (received_at, id) < (?, ?) LIMIT ?`,
					gu(userID), gu(conversationID), bucket, pos.at, gu(pos.id), want)
			} else {
				q = st.q(ctx, `SELECT received_at, id FROM conversation_messages WHERE user_id = ? AND conversation_id = ? AND bucket = ? LIMIT ?`,
					gu(userID), gu(conversationID), bucket, want)
			}
			iter := q.Iter()
			var (
				rows []messageCursor
				at   int64
				id   gocql.UUID
			)
			for iter.Scan(&at, &id) {
				rows = append(rows, messageCursor{bucket, at, ug(id)})
			}
			if err := iter.Close(); err != nil {
				return nil, "", wrap(op, err)
			}
			msgs, err := parallel(ctx, len(rows), func(ctx context.Context, i int) (store.Message, bool, error) {
				m, err := st.GetMessage(ctx, userID, rows[i].id)
				if isNotFound(err) {
					return m, false, nil // index row of a message being deleted
				}
				return m, err == nil, err
			})
			if err != nil {
				return nil, "", wrap(op, err)
			}
			for i, m := range msgs {
				if m != nil {
					out = append(out, *m)
					posOut = append(posOut, rows[i])
				}
			}
			if len(rows) < want {
				break
			}
			pos = &rows[len(rows)-1]
		}
		if len(out) > limit {
			break
		}
	}
	if len(out) > limit {
		return out[:limit], posOut[limit-1].String(), nil
	}
	return out, "", nil
}

// SetFlags changes the flags; the read flag moves with a lightweight
// transaction so that concurrent changes adjust the unread count once.
func (st *Store) SetFlags(ctx context.Context, userID, id uuid.UUID, f store.Flags) error {
	op := "set flags " + id.String()
	for range 10 {
		m, err := st.GetMessage(ctx, userID, id)
		if err != nil {
			return err
		}
		ok, _, err := casScan(st.q(ctx, `UPDATE messages SET read = ?, starred = ?, tags = ? WHERE user_id = ? AND id = ? IF read = ?`,
			f.Read, f.Starred, f.Tags, gu(userID), gu(id), m.Flags.Read))
		if err != nil {
			return wrap(op, err)
		}
		if !ok {
			continue // read flag changed under us (or the message went): look again
		}
		d := store.FlagsDelta(m.Flags, f)
		if d.Unread == 0 {
			return nil
		}
		return wrap(op, st.addCounts(ctx, userID, m.ConversationID, d))
	}
	return fmt.Errorf("%s: %w: too much contention on the message", op, store.ErrUnavailable)
}

func (st *Store) SetSecurity(ctx context.Context, userID, id uuid.UUID, security []byte, pi store.PI) error {
	op := "set security " + id.String()
	m, err := st.GetMessage(ctx, userID, id)
	if err != nil {
		return err
	}
	// Conditional so that it cannot resurrect a message deleted meanwhile as a
	// partial row (UPDATE … IF EXISTS needs Cassandra 2.1.3+, this works on 2.1.0).
	ok, _, err := casScan(st.q(ctx, `UPDATE messages SET security = ?, pi_version = ?, pi_score = ?, pi_band = ?, pi_warning = ?, pi_details = ? WHERE user_id = ? AND id = ? IF conversation_id = ?`,
		security, pi.Version, pi.Score, pi.Band, pi.Warning, pi.Details, gu(userID), gu(id), gu(m.ConversationID)))
	if err != nil {
		return wrap(op, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return nil
}

// DeleteMessage removes the message, its index rows and its dedup key (a
// later redelivery stores it anew), and keeps the conversation summary right.
func (st *Store) DeleteMessage(ctx context.Context, userID, id uuid.UUID) error {
	op := "delete message " + id.String()
	m, err := st.GetMessage(ctx, userID, id)
	if err != nil {
		return err
	}
	if err := st.dropMessage(ctx, m); err != nil {
		return err
	}
	conv, err := st.GetConversation(ctx, userID, m.ConversationID)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	if conv.LastMessageID != id {
		return nil
	}
	// It was the newest: LastMessageID and Excerpt fall back to the newest
	// remaining message (LastActivity only moves forward, so it stays). The
	// write goes just above the deleted message's timestamp so it wins over it.
	prev, err := st.latestMessage(ctx, userID, m.ConversationID)
	if err != nil {
		return wrap(op, err)
	}
	var (
		lastID  *gocql.UUID
		excerpt *string
	)
	if prev != nil {
		id, ex := store.LatestOf(prev)
		g := gu(id)
		lastID, excerpt = &g, &ex
	}
	return wrap(op, st.q(ctx, `UPDATE conversations USING TIMESTAMP ? SET last_message_id = ?, excerpt = ? WHERE user_id = ? AND id = ?`,
		micros(m.ReceivedAt)+1, lastID, excerpt, gu(userID), gu(m.ConversationID)).Exec())
}

// dropMessage deletes the message row with a lightweight transaction, so of
// concurrent deletes exactly one adjusts the counters, then its lookups.
// ErrNotFound when someone else deleted it first.
func (st *Store) dropMessage(ctx context.Context, m store.Message) error {
	op := "delete message " + m.ID.String()
	userID, id := m.UserID, m.ID
	ok, _, err := casScan(st.q(ctx, `DELETE FROM messages WHERE user_id = ? AND id = ? IF EXISTS`, gu(userID), gu(id)))
	if err != nil {
		return wrap(op, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	// Unindexed before uncounted: the count repair relies on it (counts.go).
	if err := st.q(ctx, `DELETE FROM conversation_messages WHERE user_id = ? AND conversation_id = ? AND bucket = ? AND received_at = ? AND id = ?`,
		gu(userID), gu(m.ConversationID), bucketOf(m.ReceivedAt), sortNanos(m.ReceivedAt), gu(id)).Exec(); err != nil {
		return wrap(op, err)
	}
	if err := st.addCounts(ctx, userID, m.ConversationID, store.DeleteDelta(m)); err != nil {
		return wrap(op, err)
	}
	if err := st.messageGone(ctx, m); err != nil {
		return wrap(op, err)
	}
	if _, _, err := casScan(st.q(ctx, `DELETE FROM message_dedup WHERE user_id = ? AND dedup_key = ? IF id = ?`,
		gu(userID), m.DedupKey, gu(id))); err != nil {
		return wrap(op, err)
	}
	if m.MessageID != "" {
		if err := st.q(ctx, `DELETE FROM messages_by_message_id WHERE user_id = ? AND message_id = ? AND id = ?`,
			gu(userID), m.MessageID, gu(id)).Exec(); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}

// latestMessage is the conversation's newest remaining message, nil if none.
func (st *Store) latestMessage(ctx context.Context, userID, convID uuid.UUID) (*store.Message, error) {
	msgs, _, err := st.ListMessages(ctx, userID, convID, store.Page{Limit: 1})
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	return &msgs[0], nil
}
