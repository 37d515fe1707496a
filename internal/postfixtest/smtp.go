package postfixtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// Reply is one SMTP reply: its code and its text (multi-line replies
// joined with "\n", enhanced status code included, e.g. "4.3.0 ...").
type Reply struct {
	Code int
	Text string
}

func (r Reply) String() string { return fmt.Sprintf("%d %s", r.Code, r.Text) }

// OK reports a 2xx or 3xx reply.
func (r Reply) OK() bool { return r.Code >= 200 && r.Code < 400 }

// Client is a minimal SMTP client for tests. Unlike net/smtp it hands back
// every reply, successes included (the final reply carries the queue id),
// and it sends message bytes exactly as given, only dot-stuffed.
//
// Protocol-level refusals are Replies, not errors; errors are I/O failures.
type Client struct {
	conn net.Conn
	text *textproto.Conn
	// Greeting is the server's first reply.
	Greeting Reply
	// TLS is the connection state after StartTLS, nil before.
	TLS *tls.ConnectionState
}

// Dial connects to addr and reads the greeting. The context bounds the
// dial; every later command has its own deadline (see Client.timeout).
func Dial(ctx context.Context, addr string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("smtp dial: %w", err)
	}
	c := &Client{conn: conn, text: textproto.NewConn(conn)}
	if c.Greeting, err = c.read(); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// timeout bounds each round trip: long enough for a milter's end-of-data
// work on a large message, short enough that a hung test fails.
const timeout = 2 * time.Minute

func (c *Client) read() (Reply, error) {
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	code, msg, err := c.text.ReadResponse(0)
	var perr *textproto.Error
	if errors.As(err, &perr) {
		// ReadResponse reports non-matching codes as errors; for us they are replies.
		return Reply{Code: perr.Code, Text: perr.Msg}, nil
	}
	if err != nil {
		return Reply{}, fmt.Errorf("smtp read: %w", err)
	}
	return Reply{Code: code, Text: msg}, nil
}

// Cmd sends one command line and returns the reply.
func (c *Client) Cmd(format string, args ...any) (Reply, error) {
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	if err := c.text.PrintfLine(format, args...); err != nil {
		return Reply{}, fmt.Errorf("smtp write: %w", err)
	}
	return c.read()
}

// Hello sends EHLO.
func (c *Client) Hello(name string) (Reply, error) {
	return c.Cmd("EHLO %s", name)
}

// StartTLS upgrades the connection; on success the caller must send EHLO
// again (RFC 3207). A refused STARTTLS is returned as a Reply with a nil error.
func (c *Client) StartTLS(cfg *tls.Config) (Reply, error) {
	r, err := c.Cmd("STARTTLS")
	if err != nil || r.Code != 220 {
		return r, err
	}
	tc := tls.Client(c.conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		return r, fmt.Errorf("tls handshake: %w", err)
	}
	st := tc.ConnectionState()
	c.TLS = &st
	c.conn = tc
	c.text = textproto.NewConn(tc)
	return r, nil
}

// Transaction holds the replies of one mail transaction. A stage that was
// not reached has a zero Reply.
type Transaction struct {
	Mail  Reply
	Rcpt  []Reply
	Data  Reply // reply to DATA (354 when the server wants the message)
	Final Reply // reply after the final dot: the server's verdict on the message
	// Took is how long the sender waited, from MAIL to the last reply.
	Took time.Duration
}

// Accepted reports whether the server took the message.
func (t Transaction) Accepted() bool { return t.Final.Code == 250 }

// QueueID extracts Postfix's queue id from "250 2.0.0 Ok: queued as ID".
func (t Transaction) QueueID() string {
	_, id, ok := strings.Cut(t.Final.Text, "queued as ")
	if !ok {
		return ""
	}
	return strings.Fields(id)[0]
}

// Send runs MAIL, RCPT (each), DATA and the message. raw is sent as is
// (lines should end in CRLF), dot-stuffed, with a CRLF added if missing. On
// a refusal before the message was sent it resets the transaction so the
// connection can carry the next one.
func (c *Client) Send(from string, to []string, raw []byte) (t Transaction, err error) {
	start := time.Now()
	defer func() { t.Took = time.Since(start) }()
	if t.Mail, err = c.Cmd("MAIL FROM:<%s>", from); err != nil {
		return t, err
	}
	if !t.Mail.OK() {
		return t, c.reset()
	}
	okRcpt := 0
	for _, rcpt := range to {
		r, err := c.Cmd("RCPT TO:<%s>", rcpt)
		if err != nil {
			return t, err
		}
		t.Rcpt = append(t.Rcpt, r)
		if r.OK() {
			okRcpt++
		}
	}
	if okRcpt == 0 {
		return t, c.reset()
	}
	if t.Data, err = c.Cmd("DATA"); err != nil {
		return t, err
	}
	if t.Data.Code != 354 {
		return t, c.reset()
	}
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := c.conn.Write(dotStuff(raw)); err != nil {
		return t, fmt.Errorf("smtp write data: %w", err)
	}
	t.Final, err = c.read()
	return t, err
}

func (c *Client) reset() error {
	_, err := c.Cmd("RSET")
	return err
}

// dotStuff returns raw with a leading dot doubled on every line and the
// end-of-data marker appended.
func dotStuff(raw []byte) []byte {
	out := make([]byte, 0, len(raw)+len(raw)/64+5)
	bol := true
	for _, b := range raw {
		if bol && b == '.' {
			out = append(out, '.')
		}
		out = append(out, b)
		bol = b == '\n'
	}
	if !bol {
		out = append(out, '\r', '\n')
	}
	return append(out, ".\r\n"...)
}

// Quit sends QUIT and closes the connection.
func (c *Client) Quit() error {
	_, err := c.Cmd("QUIT")
	if cerr := c.conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes the connection without QUIT.
func (c *Client) Close() error { return c.conn.Close() }

// SendOptions shape SendMail.
type SendOptions struct {
	Helo string      // "client.postfixtest.invalid" when empty
	TLS  *tls.Config // STARTTLS with this configuration when non-nil
}

// Session is every reply of a SendMail conversation.
type Session struct {
	Greeting Reply
	Ehlo     Reply
	StartTLS Reply
	TLS      *tls.ConnectionState
	// Transactions has one entry per message, in order.
	Transactions []Transaction
}

// Message is one message for SendMail.
type Message struct {
	From string
	To   []string
	Raw  []byte
}

// SendMail sends msgs over one SMTP connection (STARTTLS first when
// opts.TLS is set) and quits. It stops early and returns an error on I/O
// failure or when EHLO or STARTTLS is refused.
func SendMail(ctx context.Context, addr string, opts SendOptions, msgs ...Message) (Session, error) {
	var s Session
	c, err := Dial(ctx, addr)
	if err != nil {
		return s, err
	}
	defer c.Close()
	s.Greeting = c.Greeting
	helo := opts.Helo
	if helo == "" {
		helo = "client.postfixtest.invalid"
	}
	if s.Ehlo, err = c.Hello(helo); err != nil {
		return s, err
	}
	if s.Ehlo.Code != 250 {
		return s, fmt.Errorf("EHLO refused: %v", s.Ehlo)
	}
	if opts.TLS != nil {
		if s.StartTLS, err = c.StartTLS(opts.TLS); err != nil {
			return s, err
		}
		if s.StartTLS.Code != 220 {
			return s, fmt.Errorf("STARTTLS refused: %v", s.StartTLS)
		}
		s.TLS = c.TLS
		if s.Ehlo, err = c.Hello(helo); err != nil {
			return s, err
		}
	}
	for _, m := range msgs {
		t, err := c.Send(m.From, m.To, m.Raw)
		s.Transactions = append(s.Transactions, t)
		if err != nil {
			return s, err
		}
	}
	return s, c.Quit()
}
