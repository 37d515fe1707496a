package cassandra

import "context"

// WithFault makes PutMessage stop at point ("claimed": the dedup key won,
// nothing counted; "counted": counted, not indexed) and fail, as a write
// cut by a node's death would.
func WithFault(ctx context.Context, point string) context.Context {
	return context.WithValue(ctx, faultKey{}, point)
}
