package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"unicode"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
	"github.com/labstack/echo/v4"
)

// wordDecoder decodes RFC 2047 encoded words in any charset go-message knows.
var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// maxPartDepth bounds the nesting we follow into a hostile message.
const maxPartDepth = 32

// errNoPart: the path names no part of the message.
var errNoPart = errors.New("no such part")

// findPart walks raw to the MIME part at p, numbered as in IMAP (RFC 3501
// section 6.4.5): children of a multipart from 1; the body of a single-part
// message is "1"; a message/rfc822 part's path continues into the enclosed
// message. The entity's body is transfer-decoded (and, for text, converted
// to UTF-8 when the charset is known: converted reports it).
func findPart(raw []byte, p string) (e *message.Entity, converted bool, err error) {
	idx, err := parsePartPath(p)
	if err != nil {
		return nil, false, err
	}
	e, err = message.Read(bytes.NewReader(raw))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return nil, false, fmt.Errorf("parse message: %w", err)
	}
	converted = err == nil
	for depth, n := range idx {
		mr := e.MultipartReader()
		if mr == nil {
			if t, _, _ := e.Header.ContentType(); strings.EqualFold(t, "message/rfc822") && depth > 0 {
				inner, ierr := message.Read(e.Body)
				if ierr != nil && !message.IsUnknownCharset(ierr) && !message.IsUnknownEncoding(ierr) {
					return nil, false, errNoPart
				}
				e, converted = inner, ierr == nil
				if mr = e.MultipartReader(); mr == nil {
					if n != 1 {
						return nil, false, errNoPart
					}
					continue
				}
			} else {
				// A single-part entity has one part: itself, as "1".
				if n != 1 || depth != len(idx)-1 {
					return nil, false, errNoPart
				}
				return e, converted, nil
			}
		}
		var part *message.Entity
		for i := 1; i <= n; i++ {
			part, err = mr.NextPart()
			if errors.Is(err, io.EOF) {
				return nil, false, errNoPart
			}
			if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
				return nil, false, errNoPart
			}
		}
		e, converted = part, err == nil
	}
	return e, converted, nil
}

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
	e, converted, err := findPart(raw, p)
	if errors.Is(err, errNoPart) {
		return errNotFound
	}
	if err != nil {
		return err
	}
	if e.MultipartReader() != nil {
		return errNotFound // a container, not an attachment
	}
	body, err := io.ReadAll(e.Body)
	if err != nil {
		// Truncated base64 and the like: serve what decoded, as ingest
		// stored what it could.
		s.log.DebugContext(c.Request().Context(), "attachment decode incomplete", "message", m.ID, "part", p, "err", err)
	}

	ct, params, _ := e.Header.ContentType()
	ct = strings.ToLower(ct)
	if !safeTypes[ct] {
		ct = "application/octet-stream"
	}
	if strings.HasPrefix(ct, "text/") {
		cs := "utf-8"
		if !converted && params["charset"] != "" {
			cs = params["charset"]
		}
		ct = mime.FormatMediaType(ct, map[string]string{"charset": cs})
		if ct == "" {
			ct = "application/octet-stream"
		}
	}
	name := filenameOf(e.Header, p)
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

func filenameOf(h message.Header, part string) string {
	if _, p, err := h.ContentDisposition(); err == nil && p["filename"] != "" {
		return p["filename"]
	}
	if _, p, err := h.ContentType(); err == nil && p["name"] != "" {
		return p["name"]
	}
	return "part-" + part
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
