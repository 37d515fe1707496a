// Package quota decides whether a user may receive more mail: the bytes of
// their messages (store Usage, kept exact by the store: a redelivery adds
// nothing, a delete gives back) against their quota, which is their own
// (store.User.Quota) or else the operator's default.
//
// ingest checks it at end of data, with the message's size; lookupd answers
// Postfix's check_recipient_access with it at RCPT, so an over-quota mailbox
// gets 452 4.2.2 before the sender transmits anything.
package quota

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// Store is what a Checker reads.
type Store interface {
	GetUser(ctx context.Context, id uuid.UUID) (store.User, error)
	Usage(ctx context.Context, userID uuid.UUID) (int64, error)
}

// Config is what a Checker is built from.
type Config struct {
	// Store is required.
	Store Store
	// Default is the quota in bytes of a user without one of their own;
	// 0 means unlimited.
	Default int64
}

// Checker tells whether users are over quota. Safe for concurrent use.
type Checker struct {
	st  Store
	def int64
}

// New returns a Checker built from cfg.
func New(cfg Config) (*Checker, error) {
	if cfg.Store == nil {
		return nil, errors.New("quota: Config.Store is required")
	}
	if cfg.Default < 0 {
		return nil, fmt.Errorf("quota: Config.Default %d is negative", cfg.Default)
	}
	return &Checker{st: cfg.Store, def: cfg.Default}, nil
}

// Limit is the user's quota in bytes; 0 means unlimited.
func (c *Checker) Limit(u store.User) int64 {
	switch {
	case u.Quota > 0:
		return u.Quota
	case u.Quota < 0:
		return 0
	}
	return c.def
}

// Check returns an error wrapping store.ErrOverQuota when adding bytes to
// the user's mailbox would take it over its quota (with adding = 0: when it
// is full already). Other errors are the store's.
func (c *Checker) Check(ctx context.Context, userID uuid.UUID, adding int64) error {
	u, err := c.st.GetUser(ctx, userID)
	if err != nil {
		return fmt.Errorf("quota: %w", err)
	}
	limit := c.Limit(u)
	if limit == 0 {
		return nil
	}
	used, err := c.st.Usage(ctx, userID)
	if err != nil {
		return fmt.Errorf("quota: %w", err)
	}
	if used+adding > limit || (adding == 0 && used >= limit) {
		return fmt.Errorf("user %s uses %d of %d bytes, %d more do not fit: %w", u.Name, used, limit, adding, store.ErrOverQuota)
	}
	return nil
}
