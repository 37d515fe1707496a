package cassandra

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// Counting messages exactly under faults.
//
// Counter updates are not idempotent, so only the winner of a message's
// dedup claim counts it. If the winner failed after its claim (a node
// killed, a time-out), its caller retried, the retry found the claim taken,
// and nothing counted the message again: each such fault left a
// conversation one short. Retries now repair the count from the
// conversation's message index, which every write keeps idempotently.
//
// The repair never counts a message twice because of one ordering rule: a
// message is counted before it is indexed, and unindexed before it is
// uncounted, so a message indexed at two instants was counted all along
// in between, unless it is one whose count was lost. The repair reads the
// index's IDs, then the counter, then the IDs again: the messages in both
// ID reads beyond the counter are lost counts, never too many. Writers in
// flight can only hide a lost count from one sample, so up to three are
// taken. A counter update whose answer was lost but which was applied is
// seen as applied and not redone. Repairs of one conversation take turns on
// a lock row, so two retries never add the same missing message twice.

// repairLockTTL bounds how long a dead repairer's lock blocks others (s).
const repairLockTTL = 30

// repairCount adds to the conversation's message count the messages its
// index holds that the counter missed. m is the message being retried: the
// missing ones count as unread when it is (inbound mail is unread until
// read, and a retry comes soon after the fault).
func (st *Store) repairCount(ctx context.Context, m store.Message) error {
	var missing int64
	for i := range 3 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		var err error
		if missing, err = st.uncounted(ctx, m.UserID, m.ConversationID); err != nil || missing > 0 {
			if err != nil {
				return err
			}
			break
		}
	}
	if missing <= 0 {
		return nil // the common case: nothing missing, and no lock taken
	}
	owner := gocql.UUID(uuid.New())
	for {
		ok, _, err := casScan(st.q(ctx, `INSERT INTO conversation_count_repairs (user_id, conversation_id, owner) VALUES (?, ?, ?) IF NOT EXISTS USING TTL `+strconv.Itoa(repairLockTTL),
			gu(m.UserID), gu(m.ConversationID), owner))
		if err != nil {
			return err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer func() {
		// A fresh context: ctx may be what ended the repair. A failure
		// leaves the lock to expire.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _, _ = casScan(st.q(rctx, `DELETE FROM conversation_count_repairs WHERE user_id = ? AND conversation_id = ? IF owner = ?`,
			gu(m.UserID), gu(m.ConversationID), owner))
	}()
	// Under the lock, look again: another retry may have repaired it.
	missing, err := st.uncounted(ctx, m.UserID, m.ConversationID)
	if err != nil || missing <= 0 {
		return err
	}
	unread := int64(0)
	if !m.Flags.Read {
		unread = missing
	}
	st.log.WarnContext(ctx, "cassandra: repairing a message count a failed write left short",
		"user", m.UserID, "conversation", m.ConversationID, "missing", missing)
	return st.q(ctx, `UPDATE conversation_counters SET messages = messages + ?, unread = unread + ? WHERE user_id = ? AND conversation_id = ?`,
		missing, unread, gu(m.UserID), gu(m.ConversationID)).Exec()
}

// uncounted is how many messages the conversation's index held throughout
// a read of its counter, beyond that counter (see the ordering rule above).
func (st *Store) uncounted(ctx context.Context, userID, convID uuid.UUID) (int64, error) {
	before, err := st.indexedIDs(ctx, userID, convID)
	if err != nil {
		return 0, err
	}
	var counted int64
	err = st.q(ctx, `SELECT messages FROM conversation_counters WHERE user_id = ? AND conversation_id = ?`,
		gu(userID), gu(convID)).Scan(&counted)
	if err != nil && !errors.Is(err, gocql.ErrNotFound) {
		return 0, err
	}
	after, err := st.indexedIDs(ctx, userID, convID)
	if err != nil {
		return 0, err
	}
	var both int64
	for id := range after {
		if before[id] {
			both++
		}
	}
	return both - counted, nil
}

// indexedIDs are the IDs in the conversation's message index.
func (st *Store) indexedIDs(ctx context.Context, userID, convID uuid.UUID) (map[gocql.UUID]bool, error) {
	buckets, err := st.buckets(ctx, userID, convID)
	if err != nil {
		return nil, err
	}
	out := map[gocql.UUID]bool{}
	for _, b := range buckets {
		iter := st.q(ctx, `SELECT id FROM conversation_messages WHERE user_id = ? AND conversation_id = ? AND bucket = ?`,
			gu(userID), gu(convID), b).Iter()
		var id gocql.UUID
		for iter.Scan(&id) {
			out[id] = true
		}
		if err := iter.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// faultKey carries a fault point into PutMessage, for tests only (see
// export_test.go): the write stops there as if the node had died.
type faultKey struct{}

// errInjected is the failure a test's fault point returns.
var errInjected = fmt.Errorf("%w: injected fault", store.ErrUnavailable)

func faultAt(ctx context.Context, point string) error {
	if p, _ := ctx.Value(faultKey{}).(string); p == point {
		return errInjected
	}
	return nil
}
