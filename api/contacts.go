package api

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/internal/usertext"
	"github.com/caliopen/caliopen/store"
)

// protocols are the channel protocols a contact may have, each with the
// check and normalisation of its address.
var protocols = map[string]func(string) (string, error){
	"email":     normEmail,
	"xmpp":      normXMPP,
	"phone":     normPhone,
	"sms":       normPhone,
	"matrix":    normMatrix,
	"fediverse": normFediverse,
}

func normEmail(a string) (string, error) {
	n, err := store.NormalizeAddress(a, false)
	if err != nil {
		return "", errors.New("not a valid email address")
	}
	return n, nil
}

// normXMPP accepts a bare JID, local@domain (RFC 7622, lowercased: we do not
// implement full PRECIS; a resource part is not a channel).
func normXMPP(a string) (string, error) {
	a = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(a, "xmpp:")))
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" || len(local) > 1023 || strings.ContainsAny(local, "\"&'/:<>@ ") || strings.Contains(domain, "/") {
		return "", errors.New("not a valid bare XMPP address (local@domain)")
	}
	d, err := store.NormalizeDomain(domain)
	if err != nil {
		return "", errors.New("not a valid XMPP domain")
	}
	return local + "@" + d, nil
}

var phoneRE = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// normPhone accepts an E.164 number, ignoring spaces, dots, dashes and
// parentheses people write in numbers.
func normPhone(a string) (string, error) {
	n := strings.Map(func(r rune) rune {
		if strings.ContainsRune(" .-()", r) {
			return -1
		}
		return r
	}, a)
	if !phoneRE.MatchString(n) {
		return "", errors.New("not an E.164 phone number (+ and 7 to 15 digits)")
	}
	return n, nil
}

var matrixLocalRE = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

// normMatrix accepts a Matrix user ID, @localpart:server.
func normMatrix(a string) (string, error) {
	a = strings.TrimSpace(a)
	local, server, ok := strings.Cut(strings.TrimPrefix(a, "@"), ":")
	if !strings.HasPrefix(a, "@") || !ok || !matrixLocalRE.MatchString(local) || len(a) > 255 {
		return "", errors.New("not a Matrix user ID (@user:server)")
	}
	host := server
	if h, port, found := strings.Cut(server, ":"); found {
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return "", errors.New("not a Matrix user ID (@user:server)")
		}
		host = h
	}
	if _, err := store.NormalizeDomain(host); err != nil {
		return "", errors.New("not a Matrix user ID (@user:server)")
	}
	return "@" + local + ":" + strings.ToLower(server), nil
}

// normFediverse accepts @user@instance.
func normFediverse(a string) (string, error) {
	n, err := store.NormalizeAddress(strings.TrimPrefix(strings.TrimSpace(a), "@"), false)
	if err != nil {
		return "", errors.New("not a fediverse handle (@user@instance)")
	}
	return "@" + n, nil
}

type channelInput struct {
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
}

type contactRequest struct {
	Name     *string         `json:"name"`
	Channels *[]channelInput `json:"channels"`
}

const (
	maxContactName = 200
	maxChannels    = 50
)

// apply validates req and writes it into c.
func (req contactRequest) apply(c *store.Contact) error {
	if req.Name != nil {
		n := strings.TrimSpace(*req.Name)
		if len(n) > maxContactName {
			return badRequest("name", "name must be at most %d bytes", maxContactName)
		}
		if err := usertext.Check(n); err != nil {
			return badRequest("name", "name %v", err)
		}
		c.Name = n
	}
	if req.Channels != nil {
		in := *req.Channels
		if len(in) > maxChannels {
			return badRequest("channels", "at most %d channels", maxChannels)
		}
		old := c.Channels
		c.Channels = make([]store.Channel, 0, len(in))
		for i, ch := range in {
			proto := strings.ToLower(strings.TrimSpace(ch.Protocol))
			norm, ok := protocols[proto]
			if !ok {
				return badRequest(fmt.Sprintf("channels[%d].protocol", i), "unknown protocol %q", ch.Protocol)
			}
			if err := usertext.Check(ch.Address); err != nil {
				return badRequest(fmt.Sprintf("channels[%d].address", i), "address %v", err)
			}
			addr, err := norm(ch.Address)
			if err != nil {
				return badRequest(fmt.Sprintf("channels[%d].address", i), "%v", err)
			}
			if slices.ContainsFunc(c.Channels, func(x store.Channel) bool { return x.Protocol == proto && x.Address == addr }) {
				return badRequest(fmt.Sprintf("channels[%d]", i), "duplicate channel")
			}
			nc := store.Channel{Protocol: proto, Address: addr}
			// Keep what we learnt of a channel the client sends back unchanged.
			if j := slices.IndexFunc(old, func(x store.Channel) bool { return x.Protocol == proto && x.Address == addr }); j >= 0 {
				nc.LastUsed = old[j].LastUsed
			}
			c.Channels = append(c.Channels, nc)
		}
	}
	if c.Name == "" && len(c.Channels) == 0 {
		return badRequest("name", "a contact needs a name or a channel")
	}
	return nil
}

// contactView is a contact without the user id and with keys summarised.
type contactView struct {
	ID        uuid.UUID       `json:"id"`
	Name      string          `json:"name"`
	Channels  []store.Channel `json:"channels"`
	Keys      []keyView       `json:"keys"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

func viewContact(c store.Contact) contactView {
	v := contactView{ID: c.ID, Name: c.Name, Channels: nonNil(c.Channels), Keys: make([]keyView, 0, len(c.Keys)),
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
	for _, k := range c.Keys {
		v.Keys = append(v.Keys, viewKey(k))
	}
	return v
}

func (s *Server) putContact(c echo.Context, ct store.Contact, status int) error {
	defer s.names.remove(ownedID{ct.UserID, ct.ID})
	if err := s.st.PutContact(c.Request().Context(), ct); err != nil {
		if errors.Is(err, store.ErrExists) {
			return &Error{Status: http.StatusConflict, Code: "channel_taken", Field: "channels",
				Message: "one of these channels already belongs to another contact"}
		}
		if errors.Is(err, store.ErrInvalid) {
			return badRequest("", "the contact was refused as invalid")
		}
		return fmt.Errorf("put contact: %w", err)
	}
	return c.JSON(status, viewContact(ct))
}

func (s *Server) createContact(c echo.Context) error {
	var req contactRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	now := s.now().UTC()
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("new contact id: %w", err)
	}
	ct := store.Contact{ID: id, UserID: userID(c), CreatedAt: now, UpdatedAt: now, Channels: []store.Channel{}, Keys: []store.PublicKey{}}
	if err := req.apply(&ct); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, Prefix+"/contacts/"+id.String())
	return s.putContact(c, ct, http.StatusCreated)
}

func (s *Server) loadContact(c echo.Context) (store.Contact, error) {
	id, err := pathID(c, "id")
	if err != nil {
		return store.Contact{}, err
	}
	return s.st.GetContact(c.Request().Context(), userID(c), id)
}

func (s *Server) getContact(c echo.Context) error {
	ct, err := s.loadContact(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewContact(ct))
}

// listContacts answers the user's contacts a page at a time, in ID order
// (creation order: IDs are UUIDv7). The cursor is the last ID returned,
// base64url-encoded: stable while contacts are added or deleted.
func (s *Server) listContacts(c echo.Context) error {
	limit, err := limitParam(c)
	if err != nil {
		return err
	}
	var after uuid.UUID
	if v := c.QueryParam("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || len(b) != len(after) {
			return badRequest("cursor", "malformed cursor")
		}
		copy(after[:], b)
	}
	cs, err := s.st.ListContacts(c.Request().Context(), userID(c))
	if err != nil {
		return err
	}
	slices.SortFunc(cs, func(a, b store.Contact) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	start := 0
	if after != uuid.Nil {
		start, _ = slices.BinarySearchFunc(cs, after, func(ct store.Contact, id uuid.UUID) int {
			return bytes.Compare(ct.ID[:], id[:])
		})
		if start < len(cs) && cs[start].ID == after {
			start++
		}
	}
	end := min(start+limit, len(cs))
	out := page[contactView]{Items: make([]contactView, 0, end-start)}
	for _, ct := range cs[start:end] {
		out.Items = append(out.Items, viewContact(ct))
	}
	if end < len(cs) {
		last := cs[end-1].ID
		out.NextCursor = base64.RawURLEncoding.EncodeToString(last[:])
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) patchContact(c echo.Context) error {
	// Validate the body before touching the store: a bad id or body is a
	// 400 whoever owns the contact.
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	var req contactRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ct, err := s.st.GetContact(c.Request().Context(), userID(c), id)
	if err != nil {
		return err
	}
	if err := req.apply(&ct); err != nil {
		return err
	}
	ct.UpdatedAt = s.now().UTC()
	return s.putContact(c, ct, http.StatusOK)
}

func (s *Server) deleteContact(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	defer s.names.remove(ownedID{userID(c), id})
	if err := s.st.DeleteContact(c.Request().Context(), userID(c), id); err != nil {
		return err
	}
	return noContent(c)
}
