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
	cursor := ""
	for {
		convs, next, err := st.ListConversations(ctx, userID, store.Page{Limit: store.MaxLimit, Cursor: cursor})
		if err != nil {
			return stats, fmt.Errorf("recompute: list conversations: %w", err)
		}
		for _, c := range convs {
			if err := recomputeConversation(ctx, st, userID, c.ID, &stats); err != nil {
				return stats, err
			}
		}
		if next == "" {
			return stats, nil
		}
		cursor = next
	}
}

func recomputeConversation(ctx context.Context, st store.Mailbox, userID, convID uuid.UUID, stats *RecomputeStats) error {
	cursor := ""
	for {
		msgs, next, err := st.ListMessages(ctx, userID, convID, store.Page{Limit: store.MaxLimit, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("recompute: list messages: %w", err)
		}
		for _, m := range msgs {
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
				continue
			}
			if err := st.SetSecurity(ctx, userID, m.ID, m.Security, pi); err != nil {
				return fmt.Errorf("recompute: message %s: %w", m.ID, err)
			}
			stats.Changed++
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}
