package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/internal/password"
	"github.com/caliopen/caliopen/store"
)

const userKey = "caliopen.user"

// maxUsernameLen bounds a login name: an address is at most 320 bytes.
const maxUsernameLen = 320

// nameHash is a short, stable digest of a typed user name, for logs.
func nameHash(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:6])
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type loginResponse struct {
	Token     string    `json:"token"`
	TokenType string    `json:"token_type"`
	ExpiresAt time.Time `json:"expires_at"`
	UserID    uuid.UUID `json:"user_id"`
}

// newDummyHash returns a lazily computed hash of a random password, verified
// when the user does not exist so that an unknown name costs as much as a
// wrong password and timing does not reveal which names exist.
func newDummyHash() func() string {
	return sync.OnceValue(func() string {
		var pw [16]byte
		_, _ = rand.Read(pw[:])
		h, err := password.Hash(hex.EncodeToString(pw[:]))
		if err != nil {
			// Hash fails only on an empty or oversized password, not this one.
			panic(fmt.Sprintf("api: dummy password hash: %v", err))
		}
		return h
	})
}

func (s *Server) login(c echo.Context) error {
	var req loginRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	// Refused before any limiter or log sees them: an oversized name would
	// otherwise fill the limiter tables and the log.
	switch {
	case len(req.Username) > maxUsernameLen:
		return badRequest("username", "at most %d bytes", maxUsernameLen)
	case !utf8.ValidString(req.Username), strings.ContainsRune(req.Username, utf8.RuneError):
		// encoding/json turns invalid UTF-8 into U+FFFD: refuse both.
		return badRequest("username", "username must be valid UTF-8")
	case len(req.Password) > password.MaxLength:
		return badRequest("password", "at most %d bytes", password.MaxLength)
	}
	name := strings.ToLower(strings.TrimSpace(req.Username))
	if name == "" {
		return badRequest("username", "username is required")
	}
	if req.Password == "" {
		return badRequest("password", "password is required")
	}
	now := s.now()
	// The address limit slows one client guessing many accounts, the user
	// limit many clients guessing one. Only failures count: every attempt
	// reserves one try of each limit, and any outcome but wrong credentials
	// gives them back. An attempt refused by one limit spends none.
	ip := c.RealIP()
	keys := s.loginKeys(ip, name)
	if ok, wait := reserve(keys, now); !ok {
		s.log.InfoContext(c.Request().Context(), "login rate limited", "user_hash", nameHash(name), "client", ip)
		return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
			Message: "too many login attempts, try again later", RetryAfter: int(math.Ceil(wait.Seconds()))}
	}
	failed := false
	defer func() {
		if !failed {
			refundAll(keys)
		}
	}()

	ctx := c.Request().Context()
	select {
	case s.loginSlots <- struct{}{}:
		defer func() { <-s.loginSlots }()
	case <-ctx.Done():
		return ctx.Err()
	}

	u, err := s.st.GetUserByName(ctx, name)
	hash := u.PasswordHash
	switch {
	case errors.Is(err, store.ErrNotFound):
		hash = s.dummyHash()
	case err != nil:
		return fmt.Errorf("login: get user: %w", err)
	}
	ok, verr := password.Verify(hash, req.Password)
	if verr != nil {
		s.log.ErrorContext(ctx, "stored password hash unusable", "user", name, "err", verr)
	}
	if err != nil || verr != nil || !ok {
		failed = true
		if err != nil {
			// No such user: what was typed may be a password in the wrong
			// field; log only a hash that correlates repeated attempts.
			s.log.InfoContext(ctx, "login failed", "user_hash", nameHash(name), "client", ip)
		} else {
			s.log.InfoContext(ctx, "login failed", "user", name, "client", ip)
		}
		return &Error{Status: http.StatusUnauthorized, Code: "bad_credentials", Message: "wrong user name or password"}
	}

	token, t, err := newToken(u.ID, now, min(s.cfg.TokenTTL, s.cfg.TokenIdle))
	if err != nil {
		return err
	}
	if err := s.st.PutToken(ctx, t); err != nil {
		return fmt.Errorf("login: put token: %w", err)
	}
	s.log.InfoContext(ctx, "login", "user", name, "client", ip)
	return c.JSON(http.StatusOK, loginResponse{Token: token, TokenType: "Bearer", ExpiresAt: t.ExpiresAt, UserID: u.ID})
}

// newToken makes a bearer token: 32 random bytes, base64url. Only its
// SHA-256 is stored, so a copy of the store does not yield usable tokens.
func newToken(userID uuid.UUID, now time.Time, ttl time.Duration) (string, store.Token, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", store.Token{}, fmt.Errorf("token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	return tok, store.Token{Hash: tokenHash(tok), UserID: userID, CreatedAt: now, ExpiresAt: now.Add(ttl)}, nil
}

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func bearer(c echo.Context) (string, bool) {
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	// 32 bytes in unpadded base64url are 43 characters.
	if len(tok) != 43 {
		return "", false
	}
	return tok, true
}

// authenticate resolves the bearer token to its user; every handler behind
// it reads the user with userID and passes it to the store.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		tok, ok := bearer(c)
		if !ok {
			return errUnauthorized
		}
		h := tokenHash(tok)
		ctx := c.Request().Context()
		seq := s.revoked.current()
		t, err := s.st.GetToken(ctx, h)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return errUnauthorized
		case err != nil:
			return fmt.Errorf("authenticate: %w", err)
		}
		// The store drops expired tokens by its own clock; check ours too.
		now := s.now()
		if !s.tokenLive(t, now) {
			return errUnauthorized
		}
		if err := s.slide(ctx, t, now, seq); err != nil {
			return err
		}
		c.Set(userKey, t.UserID)
		c.Set(userKey+".token", h)
		return next(c)
	}
}

func userID(c echo.Context) uuid.UUID {
	id, _ := c.Get(userKey).(uuid.UUID)
	return id
}

func (s *Server) logout(c echo.Context) error {
	h, _ := c.Get(userKey + ".token").(string)
	s.revoked.token(h, s.now())
	if err := s.st.DeleteToken(c.Request().Context(), h); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("logout: %w", err)
	}
	s.revoked.token(h, s.now())
	return noContent(c)
}
