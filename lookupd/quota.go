package lookupd

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// MapQuota is for check_recipient_access: a recipient that reaches a full
// mailbox is found, with the access(5) action QuotaAction, so smtpd defers
// it at RCPT; any other key is not found (no action). Served only when
// Config.Quota is set.
//
//	smtpd_recipient_restrictions = ..., check_recipient_access socketmap:inet:127.0.0.1:2525:quota
const MapQuota = "quota"

// QuotaAction is what MapQuota answers for a full mailbox: the same
// temporary refusal the milter gives at end of data.
const QuotaAction = "452 4.2.2 Mailbox full, please try again later"

// Quota tells whether a user's mailbox can take adding more bytes (an
// error wrapping store.ErrOverQuota if not). *quota.Checker implements it.
type Quota interface {
	Check(ctx context.Context, userID uuid.UUID, adding int64) error
}

// quotaLookup answers MapQuota: every user the address reaches is checked,
// as ingest checks them all at end of data.
func (s *Server) quotaLookup(ctx context.Context, key string) (string, error) {
	if s.cfg.Quota == nil {
		return "", store.ErrNotFound
	}
	users, err := s.res.Users(ctx, key)
	if err != nil {
		return "", err
	}
	for _, u := range users {
		switch err := s.cfg.Quota.Check(ctx, u.UserID, 0); {
		case errors.Is(err, store.ErrOverQuota):
			return QuotaAction, nil
		case err != nil:
			return "", err
		}
	}
	return "", store.ErrNotFound
}
