package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/internal/password"
	"github.com/caliopen/caliopen/privacyindex"
)

type meView struct {
	ID          uuid.UUID                  `json:"id"`
	Name        string                     `json:"name"`
	DisplayName string                     `json:"display_name"`
	CreatedAt   time.Time                  `json:"created_at"`
	Addresses   []string                   `json:"addresses"`
	Setup       setupView                  `json:"setup"`
	Privacy     privacyindex.AccountResult `json:"privacy"`
}

// setupView is the account set-up without the private key.
type setupView struct {
	HasKeyPair       bool   `json:"has_key_pair"`
	KeyCustody       string `json:"key_custody"`
	KeyPublished     bool   `json:"key_published"`
	SecondFactor     bool   `json:"second_factor"`
	PasswordStrength int    `json:"password_strength"`
	PublicKey        string `json:"public_key,omitempty"`
}

func (s *Server) getMe(c echo.Context) error {
	ctx := c.Request().Context()
	uid := userID(c)
	u, err := s.st.GetUser(ctx, uid)
	if err != nil {
		return fmt.Errorf("me: get user: %w", err)
	}
	addrs, err := s.st.ListAddresses(ctx, uid)
	if err != nil {
		return fmt.Errorf("me: list addresses: %w", err)
	}
	pi, err := s.accountPI(ctx, u, addrs, s.now())
	if err != nil {
		return err
	}
	v := meView{ID: u.ID, Name: u.Name, DisplayName: u.DisplayName, CreatedAt: u.CreatedAt,
		Addresses: make([]string, 0, len(addrs)), Privacy: pi,
		Setup: setupView{HasKeyPair: u.Setup.HasKeyPair, KeyCustody: u.Setup.KeyCustody, KeyPublished: u.Setup.KeyPublished,
			SecondFactor: u.Setup.SecondFactor, PasswordStrength: u.Setup.PasswordStrength, PublicKey: u.Setup.PublicKey}}
	for _, a := range addrs {
		v.Addresses = append(v.Addresses, a.Address)
	}
	return c.JSON(http.StatusOK, v)
}

type passwordRequest struct {
	OldPassword string `json:"old_password"`
	NewPassword string `json:"new_password"`
}

// minStrength refuses trivial passwords; the account PI rewards stronger ones.
const minStrength = 1

func (s *Server) changePassword(c echo.Context) error {
	var req passwordRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	switch {
	case req.OldPassword == "":
		return badRequest("old_password", "old_password is required")
	case len(req.OldPassword) > password.MaxLength:
		return badRequest("old_password", "at most %d bytes", password.MaxLength)
	case req.NewPassword == "":
		return badRequest("new_password", "new_password is required")
	case len(req.NewPassword) > password.MaxLength:
		return badRequest("new_password", "at most %d bytes", password.MaxLength)
	}
	strength := password.Strength(req.NewPassword)
	if strength < minStrength {
		return badRequest("new_password", "this password is too easy to guess: use a longer passphrase")
	}
	ctx := c.Request().Context()
	uid := userID(c)
	u, err := s.st.GetUser(ctx, uid)
	if err != nil {
		return fmt.Errorf("password: get user: %w", err)
	}
	// A stolen token must not become a way to guess the password quickly;
	// as for login, only a wrong password counts.
	if ok, wait := s.userLimiter.allow(u.Name, s.now()); !ok {
		return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
			Message: "too many attempts, try again later", RetryAfter: int(wait/time.Second) + 1}
	}
	failed := false
	defer func() {
		if !failed {
			s.userLimiter.refund(u.Name)
		}
	}()
	select {
	case s.loginSlots <- struct{}{}:
		defer func() { <-s.loginSlots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	ok, err := password.Verify(u.PasswordHash, req.OldPassword)
	if err != nil || !ok {
		failed = true
		return &Error{Status: http.StatusBadRequest, Code: "bad_credentials", Field: "old_password", Message: "the current password is wrong"}
	}
	h, err := password.Hash(req.NewPassword)
	if err != nil {
		return badRequest("new_password", "unusable password")
	}
	u.PasswordHash = h
	u.Setup.PasswordStrength = strength
	if err := s.st.UpdateUser(ctx, u); err != nil {
		return fmt.Errorf("password: update user: %w", err)
	}
	// Whoever knew the old password may hold a session: end every one but
	// this. Open event streams of those tokens end at their next heartbeat.
	current, _ := c.Get(userKey + ".token").(string)
	if current == "" {
		return fmt.Errorf("password: no current token")
	}
	s.revoked.user(uid, current, s.now())
	if err := s.st.DeleteUserTokens(ctx, uid, current); err != nil {
		return fmt.Errorf("password: end other sessions: %w", err)
	}
	s.revoked.user(uid, current, s.now())
	s.log.InfoContext(ctx, "password changed", "user", u.Name)
	return c.JSON(http.StatusOK, map[string]int{"password_strength": strength})
}
