package lookupd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// ServeSocketmap answers Postfix socketmap requests on ln until ctx is done;
// then it closes ln, lets each connection finish the request it is
// answering, and returns nil. Requests are netstrings "name SP key"; replies
// are netstrings "OK value", "NOTFOUND ", "TEMP reason" or "PERM reason".
// Connections are persistent: Postfix sends any number of requests, one at a
// time, on each.
func (s *Server) ServeSocketmap(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln, protoSocketmap, s.handleSocketmap)
}

// errFraming is a request whose framing is broken: the server answers PERM
// and closes the connection, since the next request cannot be found in the
// stream.
type errFraming struct{ msg string }

func (e *errFraming) Error() string { return e.msg }

func (s *Server) handleSocketmap(ctx context.Context, c *conn) {
	br := bufio.NewReaderSize(c.nc, 4096)
	req := make([]byte, s.cfg.MaxRequestSize)
	out := make([]byte, 0, 512)
	for c.waitRequest(s.cfg.IdleTimeout) {
		payload, started, err := readNetstring(br, req)
		var bad *errFraming
		if errors.As(err, &bad) {
			s.protocolError(protoSocketmap, c, bad.msg)
			_ = c.write(appendNetstring(out[:0], "PERM ", bad.msg), s.cfg.WriteTimeout)
			return
		}
		if err != nil {
			s.readFailed(ctx, protoSocketmap, c, err, started)
			return
		}
		out, err = s.socketmapRequest(ctx, out[:0], payload)
		if err != nil {
			s.protocolError(protoSocketmap, c, err.Error())
		}
		if err := c.write(out, s.cfg.WriteTimeout); err != nil {
			s.log.Warn("writing reply failed", "protocol", "socketmap",
				"client", c.nc.RemoteAddr().String(), "err", err)
			return
		}
	}
}

// socketmapRequest answers one request payload, appending the reply
// netstring to out. The error reports a malformed request (answered PERM).
func (s *Server) socketmapRequest(ctx context.Context, out, payload []byte) ([]byte, error) {
	sp := -1
	for i, b := range payload {
		if b == ' ' {
			sp = i
			break
		}
	}
	if sp < 0 {
		return appendNetstring(out, "PERM ", "malformed request: want \"name key\""),
			errors.New("no space between map name and key")
	}
	m, ok := parseMap(string(payload[:sp]))
	if !ok {
		msg := fmt.Sprintf("unknown map %q", sanitize(string(payload[:sp])))
		return appendNetstring(out, "PERM ", msg), errors.New(msg)
	}
	key := string(payload[sp+1:])
	start := time.Now()
	value, res, err := s.lookup(ctx, m, key)
	if res == found && len("OK ")+len(value) > SocketmapMaxReply {
		// Postfix would drop the connection on a longer reply; retrying
		// cannot help, but PERM still only defers (4xx) the mail.
		res, err = permFail, fmt.Errorf("reply of %d bytes exceeds the socketmap limit of %d", len(value)+3, SocketmapMaxReply)
	}
	s.observe(ctx, protoSocketmap, m, key, res, err, time.Since(start))
	switch res {
	case found:
		return appendNetstring(out, "OK ", value), nil
	case notFound:
		return appendNetstring(out, "NOTFOUND ", ""), nil
	case permFail:
		return appendNetstring(out, "PERM ", sanitize(err.Error())), nil
	}
	// The reason reaches Postfix's log; keep internals (paths, hosts) in ours.
	return appendNetstring(out, "TEMP ", "lookup failed, try again later"), nil
}

// readNetstring reads one netstring "len:payload," into buf (its capacity
// is the size limit) and returns the payload, valid until the next call.
// started reports whether any byte was read, to tell a client that closed
// or idled between requests from one that stopped mid-request.
func readNetstring(br *bufio.Reader, buf []byte) (payload []byte, started bool, err error) {
	limit := len(buf)
	maxDigits := len(strconv.Itoa(limit)) // leading zeros beyond that are abuse
	n := 0
	for digits := 0; ; digits++ {
		b, err := br.ReadByte()
		if err != nil {
			if digits > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, digits > 0, err
		}
		if b == ':' && digits > 0 {
			break
		}
		if b < '0' || b > '9' {
			return nil, true, &errFraming{fmt.Sprintf("malformed netstring: unexpected %q in length", b)}
		}
		n = n*10 + int(b-'0')
		if n > limit || digits >= maxDigits {
			return nil, true, &errFraming{fmt.Sprintf("request too large (limit %d bytes)", limit)}
		}
	}
	if _, err := io.ReadFull(br, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, true, err
	}
	b, err := br.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, true, err
	}
	if b != ',' {
		return nil, true, &errFraming{fmt.Sprintf("malformed netstring: %q instead of ',' after payload", b)}
	}
	return buf[:n], true, nil
}

// appendNetstring appends the netstring of prefix+text to out.
func appendNetstring(out []byte, prefix, text string) []byte {
	out = strconv.AppendInt(out, int64(len(prefix)+len(text)), 10)
	out = append(out, ':')
	out = append(out, prefix...)
	out = append(out, text...)
	return append(out, ',')
}
