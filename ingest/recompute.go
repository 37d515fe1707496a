package ingest

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// RecomputeStats counts what Recompute did.
type RecomputeStats struct {
	Messages int // messages examined
	Changed  int // messages whose stored PI changed
}

// Recompute re-scores every stored message of one user from its stored
// features with the current model, as needed after a model change. Scores
// that are already current are left alone, so a second run changes nothing
// and an interrupted run can simply be started again.
func Recompute(ctx context.Context, st store.Mailbox, userID uuid.UUID) (RecomputeStats, error) {
	var stats RecomputeStats
	err := EachMessage(ctx, st, userID, func(m store.Message) error {
		stats.Messages++
		sec, err := DecodeSecurity(m.Security)
		if err != nil {
			return fmt.Errorf("recompute: message %s: %w", m.ID, err)
		}
		pi, err := messagePI(sec.Features)
		if err != nil {
			return fmt.Errorf("recompute: message %s: %w", m.ID, err)
		}
		if m.PI.Version == pi.Version && m.PI.Score == pi.Score && m.PI.Band == pi.Band &&
			m.PI.Warning == pi.Warning && string(m.PI.Details) == string(pi.Details) {
			return nil
		}
		if err := st.SetSecurity(ctx, userID, m.ID, m.Security, pi); err != nil {
			return fmt.Errorf("recompute: message %s: %w", m.ID, err)
		}
		stats.Changed++
		return nil
	})
	return stats, err
}

// EachMessage calls fn for every stored message of userID, conversation by
// conversation; it stops at the first error.
func EachMessage(ctx context.Context, st store.Mailbox, userID uuid.UUID, fn func(store.Message) error) error {
	for convCursor := ""; ; {
		convs, next, err := st.ListConversations(ctx, userID, store.Page{Limit: store.MaxLimit, Cursor: convCursor})
		if err != nil {
			return fmt.Errorf("list conversations: %w", err)
		}
		for _, c := range convs {
			for cursor := ""; ; {
				msgs, more, err := st.ListMessages(ctx, userID, c.ID, store.Page{Limit: store.MaxLimit, Cursor: cursor})
				if err != nil {
					return fmt.Errorf("list messages: %w", err)
				}
				for _, m := range msgs {
					if err := fn(m); err != nil {
						return err
					}
				}
				if more == "" {
					break
				}
				cursor = more
			}
		}
		if next == "" {
			return nil
		}
		convCursor = next
	}
}
