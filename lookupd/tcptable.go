package lookupd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// ServeTCPTable answers Postfix tcp_table requests for the map mapName on
// ln until ctx is done; then it closes ln, lets each connection finish the
// request it is answering, and returns nil. A tcp_table request carries no
// map name, so each map needs its own listener:
//
//	virtual_mailbox_maps = tcp:127.0.0.1:2526
//
// Requests are "get KEY\n" with %XX-encoded KEY; replies are "200 VALUE\n"
// (VALUE %XX-encoded), "500 text\n" (not found) and "400 text\n" (try
// again). tcp_table has no permanent-error reply besides "not found", which
// makes Postfix reject the address for good, so malformed requests and
// unrepresentable answers get 400: mail is deferred and the problem logged.
func (s *Server) ServeTCPTable(ctx context.Context, ln net.Listener, mapName string) error {
	m, ok := parseMap(mapName)
	if !ok {
		ln.Close()
		return fmt.Errorf("lookupd: tcp_table: unknown map %q", mapName)
	}
	return s.serve(ctx, ln, protoTCPTable, func(ctx context.Context, c *conn) {
		s.handleTCPTable(ctx, c, m)
	})
}

func (s *Server) handleTCPTable(ctx context.Context, c *conn, m mapKind) {
	// The buffer is the line limit: ReadSlice fails with ErrBufferFull on
	// a longer line instead of growing.
	br := bufio.NewReaderSize(c.nc, s.cfg.MaxRequestSize)
	out := make([]byte, 0, 512)
	for c.waitRequest(s.cfg.IdleTimeout) {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			msg := fmt.Sprintf("request too large (limit %d bytes)", s.cfg.MaxRequestSize)
			s.protocolError(protoTCPTable, c, msg)
			_ = c.write(append(append(out[:0], "400 "...), msg+"\n"...), s.cfg.WriteTimeout)
			return // the rest of the line cannot be told from the next request
		}
		if err != nil {
			s.readFailed(ctx, protoTCPTable, c, err, len(line) > 0)
			return
		}
		out, err = s.tcpTableRequest(ctx, out[:0], m, line)
		if err != nil {
			s.protocolError(protoTCPTable, c, err.Error())
		}
		if err := c.write(out, s.cfg.WriteTimeout); err != nil {
			s.log.Warn("writing reply failed", "protocol", "tcp_table",
				"client", c.nc.RemoteAddr().String(), "err", err)
			return
		}
	}
}

// tcpTableRequest answers one request line (with its newline), appending the
// reply line to out. The error reports a malformed request (answered 400).
func (s *Server) tcpTableRequest(ctx context.Context, out []byte, m mapKind, line []byte) ([]byte, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r")) // tolerate a human with telnet
	rest, ok := bytes.CutPrefix(line, []byte("get "))
	if !ok {
		return append(out, "400 malformed request: want \"get key\"\n"...),
			fmt.Errorf("unsupported request %q", sanitize(string(line[:min(len(line), 32)])))
	}
	key, ok := decodeTCPTable(rest)
	if !ok {
		return append(out, "400 malformed %XX encoding in key\n"...),
			fmt.Errorf("malformed %%XX encoding in %q", sanitize(string(rest)))
	}
	start := time.Now()
	value, res, err := s.lookup(ctx, m, key)
	if res == found {
		base := len(out)
		out = append(out, "200 "...)
		out = appendTCPTableEncoded(out, value)
		out = append(out, '\n')
		if len(out)-base <= TCPTableMaxReply {
			s.observe(ctx, protoTCPTable, m, key, res, nil, time.Since(start))
			return out, nil
		}
		res, err = permFail, fmt.Errorf("reply of %d bytes exceeds the tcp_table limit of %d", len(out)-base, TCPTableMaxReply)
		out = out[:base]
	}
	s.observe(ctx, protoTCPTable, m, key, res, err, time.Since(start))
	switch res {
	case notFound:
		return append(out, "500 not found\n"...), nil
	case permFail:
		return append(append(append(out, "400 "...), sanitize(err.Error())...), '\n'), nil
	}
	return append(out, "400 lookup failed, try again later\n"...), nil
}

// decodeTCPTable undoes tcp_table's %XX encoding (hex digits in any case).
func decodeTCPTable(b []byte) (string, bool) {
	if bytes.IndexByte(b, '%') < 0 {
		return string(b), true
	}
	dec := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '%' {
			dec = append(dec, b[i])
			continue
		}
		if i+2 >= len(b) {
			return "", false
		}
		hi, ok1 := unhex(b[i+1])
		lo, ok2 := unhex(b[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		dec = append(dec, hi<<4|lo)
		i += 2
	}
	return string(dec), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// appendTCPTableEncoded appends v with '%', whitespace and every
// non-printing byte (controls, DEL, and bytes of non-ASCII characters)
// encoded as %XX, as tcp_table(5) requires.
func appendTCPTableEncoded(out []byte, v string) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c == '%' || c >= 0x7f {
			out = append(out, '%', hexDigits[c>>4], hexDigits[c&0xf])
			continue
		}
		out = append(out, c)
	}
	return out
}
