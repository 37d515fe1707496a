package api

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"unicode"

	"github.com/labstack/echo/v4"

	"github.com/caliopen/caliopen/message"
)

// maxPartDepth bounds the part paths accepted.
const maxPartDepth = message.MaxDepth

// errNoPart: the path names no part of the message.
var errNoPart = errors.New("no such part")

// parsePartPath checks an IMAP-style part path ("2", "1.2").
func parsePartPath(p string) ([]int, error) {
	if p == "" || len(p) > 4*maxPartDepth {
		return nil, errNoPart
	}
	fields := strings.Split(p, ".")
	if len(fields) > maxPartDepth {
		return nil, errNoPart
	}
	idx := make([]int, len(fields))
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 10000 {
			return nil, errNoPart
		}
		idx[i] = n
	}
	return idx, nil
}

// safeTypes are served with their own type: browsers render them without
// running anything. Everything else (HTML, SVG, scripts…) is octet-stream.
var safeTypes = map[string]bool{
	"text/plain": true, "text/csv": true, "application/pdf": true,
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true,
	"audio/mpeg": true, "audio/ogg": true, "video/mp4": true, "video/webm": true,
	"application/zip": true, "application/pgp-keys": true, "application/pgp-signature": true,
}

func (s *Server) getAttachment(c echo.Context) error {
	m, err := s.loadMessage(c)
	if err != nil {
		return err
	}
	p := c.Param("part")
	if _, err := parsePartPath(p); err != nil {
		return badRequest("part", "part must be a MIME part path such as 2 or 1.2")
	}
	raw, err := s.st.GetBlob(c.Request().Context(), m.RawHash)
	if err != nil {
		return fmt.Errorf("get raw of %s: %w", m.ID, err)
	}
	// The same parse ingest made, so part paths mean the same thing.
	part := message.Parse(raw, message.Options{}).Find(p)
	if part == nil || part.IsMultipart() {
		return errNotFound // no such part, or a container, not an attachment
	}
	body := part.Content()

	ct := part.MediaType
	if !safeTypes[ct] {
		ct = "application/octet-stream"
	}
	if strings.HasPrefix(ct, "text/") {
		// Content converted the text to UTF-8.
		ct = mime.FormatMediaType(ct, map[string]string{"charset": "utf-8"})
		if ct == "" {
			ct = "application/octet-stream"
		}
	}
	name := part.Filename()
	if name == "" {
		name = "part-" + p
	}
	for _, a := range m.Attachments {
		if a.PartPath == p && a.Filename != "" {
			name = a.Filename
		}
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentDisposition, attachmentDisposition(name))
	// Even opened directly, the content runs nothing and loads nothing.
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	return c.Blob(http.StatusOK, ct, body)
}

// attachmentDisposition makes a Content-Disposition that cannot be used to
// write outside the download folder or break the header.
func attachmentDisposition(name string) string {
	name = path.Base(strings.ReplaceAll(name, `\`, "/"))
	name = strings.Map(func(r rune) rune {
		switch {
		case r < ' ' || r == 0x7f || r == '"':
			return '_'
		case unicode.Is(unicode.Bidi_Control, r), r >= 0x200B && r <= 0x200F, r == 0xFEFF:
			// Invisible: bidi overrides make "evil‮fdp.exe" look like
			// "evilexe.pdf"; zero-width characters hide what a name is.
			return -1
		}
		return r
	}, name)
	if name == "" || name == "." || name == "/" || name == ".." {
		name = "attachment"
	}
	if d := mime.FormatMediaType("attachment", map[string]string{"filename": name}); d != "" {
		return d
	}
	return "attachment"
}
