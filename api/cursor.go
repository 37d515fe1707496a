package api

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/store"
)

// cursor is the API's page position: a store cursor (the start of a store
// page), how many items of that page were already returned, and the store
// page size it was taken with (the offset only means something with the same
// size). It is opaque to clients: base64url of JSON.
type cursor struct {
	Store  string `json:"c,omitempty"`
	Offset int    `json:"o,omitempty"`
	Size   int    `json:"n"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c) // a struct of strings and ints always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	if s == "" {
		return c, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 4096 {
		return c, badRequest("cursor", "malformed cursor")
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Offset < 0 || c.Size < 1 || c.Size > store.MaxLimit || c.Offset >= c.Size {
		return cursor{}, badRequest("cursor", "malformed cursor")
	}
	return c, nil
}

// pageParams reads ?limit= and ?cursor=.
func pageParams(c echo.Context) (limit int, cur cursor, err error) {
	if limit, err = limitParam(c); err != nil {
		return 0, cursor{}, err
	}
	cur, err = decodeCursor(c.QueryParam("cursor"))
	return limit, cur, err
}

// limitParam reads ?limit= (default store.DefaultLimit, 1..store.MaxLimit).
func limitParam(c echo.Context) (int, error) {
	v := c.QueryParam("limit")
	if v == "" {
		return store.DefaultLimit, nil
	}
	limit, err := strconv.Atoi(v)
	if err != nil || limit < 1 || limit > store.MaxLimit {
		return 0, badRequest("limit", "limit must be between 1 and %d", store.MaxLimit)
	}
	return limit, nil
}

// page is a list answer.
type page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}
