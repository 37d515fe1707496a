package api

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// slideStep is how far behind a token's expiry may fall before a request
// rewrites it: a request costs no store write, a minute of use costs one.
const slideStep = time.Minute

// tokenLive reports whether t is within both its idle expiry and the
// absolute lifetime from its login (which a shorter api.token_ttl shortens
// for tokens already issued).
func (s *Server) tokenLive(t store.Token, now time.Time) bool {
	return now.Before(t.ExpiresAt) && now.Before(t.CreatedAt.Add(s.cfg.TokenTTL))
}

// slide pushes the token's expiry to api.token_idle from now, never past its
// lifetime, when it has fallen a slideStep behind (or when a shorter setting
// makes it earlier). seq is s.revoked's sequence read before the token was:
// a session ended meanwhile is deleted again rather than written back.
func (s *Server) slide(ctx context.Context, t store.Token, now time.Time, seq uint64) error {
	exp := now.Add(s.cfg.TokenIdle)
	if end := t.CreatedAt.Add(s.cfg.TokenTTL); end.Before(exp) {
		exp = end
	}
	if !exp.Before(t.ExpiresAt) && exp.Sub(t.ExpiresAt) < slideStep {
		return nil
	}
	t.ExpiresAt = exp
	if err := s.st.PutToken(ctx, t); err != nil {
		// The token stays valid until its current expiry: serve the request.
		s.log.WarnContext(ctx, "token expiry not extended", "err", err)
		return nil
	}
	if s.revoked.since(seq, t.UserID, t.Hash) {
		if err := s.st.DeleteToken(ctx, t.Hash); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return errUnauthorized
	}
	return nil
}

// revocations remembers the sessions this process ended in the last
// revocationMemory, so that a request that read its token before the end
// and slides it after does not bring it back. (Ended by another process,
// `caliopen user logout` or `passwd`, a session is swept twice instead.)
type revocations struct {
	mu     sync.Mutex
	seq    uint64
	users  map[uuid.UUID]revocation // every token of the user but keep
	tokens map[string]revocation    // one token
}

type revocation struct {
	seq  uint64
	at   time.Time
	keep string
}

// revocationMemory outlasts a request's read-then-write of its token.
const revocationMemory = 5 * time.Minute

func newRevocations() *revocations {
	return &revocations{users: map[uuid.UUID]revocation{}, tokens: map[string]revocation{}}
}

// current is the sequence to compare with since later.
func (r *revocations) current() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq
}

// user records that every session of uid but keep ends now; token that one
// session does. Call them before deleting from the store and again after:
// a request that read the sequence after the first mark and its token before
// the delete, and slides it after the delete, sees the second mark.
func (r *revocations) user(uid uuid.UUID, keep string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.users[uid] = revocation{seq: r.seq, at: now, keep: keep}
	r.prune(now)
}

func (r *revocations) token(hash string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.tokens[hash] = revocation{seq: r.seq, at: now}
	r.prune(now)
}

func (r *revocations) prune(now time.Time) {
	for k, v := range r.users {
		if now.Sub(v.at) > revocationMemory {
			delete(r.users, k)
		}
	}
	for k, v := range r.tokens {
		if now.Sub(v.at) > revocationMemory {
			delete(r.tokens, k)
		}
	}
}

// since reports whether the session hash of uid was ended after seq.
func (r *revocations) since(seq uint64, uid uuid.UUID, hash string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.users[uid]; ok && v.seq > seq && v.keep != hash {
		return true
	}
	v, ok := r.tokens[hash]
	return ok && v.seq > seq
}
