package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// SMTPConfig is the relay the API submits outgoing mail to (Postfix's
// submission service in production).
type SMTPConfig struct {
	Addr      string // host:port
	LocalName string // EHLO name; default "localhost"
	// Username and Password enable SASL PLAIN. The password is only sent
	// over TLS, or in clear to a loopback relay (net/smtp's rule).
	Username, Password string
	// TLSConfig is used for STARTTLS, attempted whenever the relay offers it;
	// nil verifies the relay's certificate against the host name of Addr.
	TLSConfig *tls.Config
	// RequireTLS refuses to submit when the relay does not offer STARTTLS.
	RequireTLS bool
	// NoTLS never attempts STARTTLS: for a relay on loopback, whose
	// certificate (often Debian's snakeoil) would not verify anyway.
	NoTLS bool
	// Timeout bounds one submission (default 60s).
	Timeout time.Duration
}

// SubmissionError is the relay refusing a message: its SMTP reply.
type SubmissionError struct {
	Code    int
	Message string
}

func (e *SubmissionError) Error() string {
	return fmt.Sprintf("relay refused: %d %s", e.Code, e.Message)
}

// Temporary reports a 4xx reply: the same message may be accepted later.
func (e *SubmissionError) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// SMTPSender submits messages to a relay over SMTP.
type SMTPSender struct {
	cfg SMTPConfig
}

// NewSMTPSender returns a Sender for cfg; Addr is required.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("smtp: relay address %q: %w", cfg.Addr, err)
	}
	if cfg.RequireTLS && cfg.NoTLS {
		return nil, errors.New("smtp: RequireTLS and NoTLS contradict each other")
	}
	if cfg.LocalName == "" {
		cfg.LocalName = "localhost"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	return &SMTPSender{cfg: cfg}, nil
}

// Send submits msg from the envelope sender to the recipients in one
// transaction. A relay reply of 4xx or 5xx comes back as *SubmissionError.
func (s *SMTPSender) Send(ctx context.Context, from string, to []string, msg []byte) (err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	host, _, err := net.SplitHostPort(s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("smtp: relay address %q: %w", s.cfg.Addr, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("smtp: dial %s: %w", s.cfg.Addr, err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// Cancelling the request aborts the exchange at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	c, err := smtp.NewClient(conn, host)
	if err != nil {
		_ = conn.Close()
		return smtpErr("greeting", err)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if err := c.Hello(s.cfg.LocalName); err != nil {
		return smtpErr("EHLO", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok && !s.cfg.NoTLS {
		tc := s.cfg.TLSConfig
		if tc == nil {
			tc = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		if err := c.StartTLS(tc); err != nil {
			return smtpErr("STARTTLS", err)
		}
	} else if s.cfg.RequireTLS {
		return fmt.Errorf("smtp: relay %s does not offer STARTTLS", s.cfg.Addr)
	}
	if s.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, s.cfg.Password, host)); err != nil {
			return smtpErr("AUTH", err)
		}
	}
	if err := c.Mail(from); err != nil {
		return smtpErr("MAIL FROM", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return smtpErr("RCPT TO", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return smtpErr("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return smtpErr("DATA", err)
	}
	if err := w.Close(); err != nil {
		return smtpErr("end of DATA", err)
	}
	// The message is accepted once the final dot is answered; a failing
	// QUIT changes nothing.
	_ = c.Quit()
	return nil
}

func smtpErr(stage string, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		return &SubmissionError{Code: te.Code, Message: strings.TrimSpace(te.Msg)}
	}
	return fmt.Errorf("smtp: %s: %w", stage, err)
}
