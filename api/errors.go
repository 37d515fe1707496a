package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/store"
)

// Error is an answer the client is meant to read: a status, a stable code,
// a human message and, for 400, the field at fault.
type Error struct {
	Status  int            `json:"-"`
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Field   string         `json:"field,omitempty"`
	Details map[string]any `json:"details,omitempty"`
	// RetryAfter, when set, is sent as a Retry-After header (seconds).
	RetryAfter int `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func badRequest(field, format string, a ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid", Field: field, Message: fmt.Sprintf(format, a...)}
}

var (
	errNotFound     = &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such resource"}
	errUnauthorized = &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing, invalid or expired token"}
)

type errorBody struct {
	Error *Error `json:"error"`
}

// handleError is echo's HTTPErrorHandler: every failure becomes the JSON
// error shape, store errors map to their status, and nothing internal (stack,
// wrapped causes) reaches the client.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	ae := s.classify(err, c)
	if ae.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if ae.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="caliopen"`)
	}
	var werr error
	if c.Request().Method == http.MethodHead {
		werr = c.NoContent(ae.Status)
	} else {
		werr = c.JSON(ae.Status, errorBody{ae})
	}
	if werr != nil {
		s.log.DebugContext(c.Request().Context(), "writing error response", "err", werr)
	}
}

func (s *Server) classify(err error, c echo.Context) *Error {
	ctx := c.Request().Context()
	var ae *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		// The client went away (a store may also call that unavailable);
		// the status is for the access log only.
		return &Error{Status: 499, Code: "canceled", Message: "request canceled"}
	case errors.Is(err, store.ErrUnavailable):
		s.log.WarnContext(ctx, "store unavailable", "path", c.Path(), "err", err)
		return &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "storage is unavailable, try again", RetryAfter: 5}
	case errors.Is(err, store.ErrNotFound):
		return errNotFound
	case errors.Is(err, store.ErrExists):
		return &Error{Status: http.StatusConflict, Code: "conflict", Message: "already exists"}
	case errors.Is(err, store.ErrInvalid):
		return &Error{Status: http.StatusBadRequest, Code: "invalid", Message: "invalid request"}
	case errors.Is(err, context.Canceled):
		return &Error{Status: 499, Code: "canceled", Message: "request canceled"}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusServiceUnavailable, Code: "timeout", Message: "the request timed out, try again", RetryAfter: 1}
	case errors.As(err, &he):
		return fromHTTPError(he)
	}
	// Unknown: a bug or an unexpected failure. Log it (the message of an
	// error never carries a secret here), tell the client nothing more.
	s.log.ErrorContext(ctx, "internal error", "method", c.Request().Method, "path", c.Path(), "err", err)
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
}

func fromHTTPError(he *echo.HTTPError) *Error {
	code := map[int]string{
		http.StatusBadRequest:            "invalid",
		http.StatusUnauthorized:          "unauthorized",
		http.StatusNotFound:              "not_found",
		http.StatusMethodNotAllowed:      "method_not_allowed",
		http.StatusRequestEntityTooLarge: "too_large",
		http.StatusUnsupportedMediaType:  "unsupported_media_type",
		http.StatusTooManyRequests:       "rate_limited",
	}[he.Code]
	if code == "" {
		code = strings.ToLower(strings.ReplaceAll(http.StatusText(he.Code), " ", "_"))
	}
	if he.Code == http.StatusInternalServerError {
		// Echo's recover middleware lands here with the panic as message.
		return &Error{Status: he.Code, Code: "internal", Message: "internal error"}
	}
	msg := map[int]string{
		http.StatusNotFound:              "no such resource",
		http.StatusMethodNotAllowed:      "method not allowed",
		http.StatusRequestEntityTooLarge: "request body too large",
		http.StatusUnsupportedMediaType:  "unsupported media type",
	}[he.Code]
	if m, ok := he.Message.(string); ok && m != "" && m != http.StatusText(he.Code) && he.Code < 500 {
		msg = m
	}
	if msg == "" {
		msg = strings.ToLower(http.StatusText(he.Code))
	}
	return &Error{Status: he.Code, Code: code, Message: msg}
}

// decodeJSON reads the request body strictly into v: unknown fields, trailing
// data and type mismatches are 400s naming the field.
func decodeJSON(c echo.Context, v any) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct != "" && !strings.HasPrefix(strings.ToLower(ct), echo.MIMEApplicationJSON) {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Message: "send application/json"}
	}
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("", "body must hold one JSON object")
	}
	return nil
}

func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		// The body limit middleware's reader, on a body without a length.
		return he
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: "request body too large"}
	case errors.Is(err, io.EOF):
		return badRequest("", "empty body, expected a JSON object")
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("", "malformed JSON")
	case errors.As(err, &typ) && typ.Field == "":
		// The top-level value: never name a Go type to the client.
		return badRequest("", "body must be a JSON object")
	case errors.As(err, &typ):
		return badRequest(typ.Field, "%s must be %s", fieldName(typ.Field), jsonTypeName(typ.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badRequest(f, "unknown field %q", f)
	}
	return badRequest("", "malformed JSON")
}

// jsonTypeName names a Go type the way a JSON client thinks of it.
func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonTypeName(t.Elem())
	}
	return "of another type"
}

func fieldName(f string) string {
	if f == "" {
		return "value"
	}
	return f
}

// pathID parses a UUID path parameter; a malformed one is a 400, never a 500.
func pathID(c echo.Context, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Param(name))
	if err != nil {
		return uuid.Nil, badRequest(name, "%s is not a valid id", name)
	}
	return id, nil
}
