package cassandra

import (
	"context"

	"github.com/google/uuid"
)

// WithFault makes PutMessage stop at point ("claimed": the dedup key won,
// nothing counted; "counted": counted, not indexed) and fail, as a write
// cut by a node's death would.
func WithFault(ctx context.Context, point string) context.Context {
	return context.WithValue(ctx, faultKey{}, point)
}

// UpdateHistoryColumn is SetContactHistory's UPDATE without its existence
// check: what lands when a DeleteContact runs between the two.
func (st *Store) UpdateHistoryColumn(ctx context.Context, userID, id uuid.UUID, history []byte) error {
	return st.q(ctx, `UPDATE contacts SET history = ? WHERE user_id = ? AND id = ?`, history, gu(userID), gu(id)).Exec()
}
