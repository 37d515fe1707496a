package main

import (
	"context"
	"fmt"

	"github.com/caliopen/caliopen/internal/config"
	"github.com/caliopen/caliopen/quota"
	"github.com/caliopen/caliopen/store"
)

// quotaChecker is the one quota rule for ingest and lookupd: the user's own
// quota, else store.default_quota.
func (a *app) quotaChecker(st quota.Store) (*quota.Checker, error) {
	return quota.New(quota.Config{Store: st, Default: int64(a.cfg.Store.DefaultQuota)})
}

// userQuota shows a user's usage and quota, or sets their own quota:
// a size ("2GB"), "default" (store.default_quota) or "unlimited".
func (a *app) userQuota(ctx context.Context, args []string) error {
	const usage = "user quota LOGIN [SIZE|default|unlimited]"
	if len(args) != 1 && len(args) != 2 {
		return fmt.Errorf("usage: caliopen %s", usage)
	}
	return a.withStore(ctx, func(st store.Store) error {
		u, err := st.GetUserByName(ctx, args[0])
		if err != nil {
			return fmt.Errorf("user %s: %w", args[0], err)
		}
		if len(args) == 2 {
			switch args[1] {
			case "default":
				u.Quota = 0
			case "unlimited":
				u.Quota = -1
			default:
				var s config.Size
				if err := s.UnmarshalText([]byte(args[1])); err != nil || s == 0 {
					return fmt.Errorf("usage: caliopen %s (a size above 0, like 2GB)", usage)
				}
				u.Quota = int64(s)
			}
			if err := st.UpdateUser(ctx, u); err != nil {
				return err
			}
		}
		q, err := a.quotaChecker(st)
		if err != nil {
			return err
		}
		used, err := st.Usage(ctx, u.ID)
		if err != nil {
			return err
		}
		limit := "unlimited"
		if n := q.Limit(u); n > 0 {
			limit = fmt.Sprintf("%d bytes", n)
		}
		own := " (default)"
		if u.Quota != 0 {
			own = ""
		}
		fmt.Fprintf(a.stdout, "%s: %d bytes used, quota %s%s\n", u.Name, used, limit, own)
		return nil
	})
}
