package milter

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/textproto"
	"runtime/debug"
	"strconv"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/caliopen/caliopen/ingest"
)

// Answers the sender sees. Postfix passes the text through; enhanced status
// codes per RFC 3463.
var (
	// noReply is what callbacks before end of message return: the
	// negotiated protocol (SMFIP_NR_*) tells Postfix not to wait for one.
	noReply gomilter.Response

	replyTooBig   = gomilter.NewResponseStr('y', "552 5.3.4 Message too big for this system")
	replyTempFail = gomilter.NewResponseStr('y', "451 4.3.0 Temporary failure storing the message, please try again later")
	// The memory budget (Config.MaxBytesInFlight) is taken by other
	// messages: RFC 3463's 4.3.2, system not accepting network messages.
	replyBusy = gomilter.NewResponseStr('y', "451 4.3.2 Too many messages in progress, please try again later")
)

// session is go-milter's handler for one connection. Message state lives
// here (go-milter may replace the handler between messages, which is fine
// for it); connection facts live in c, shared by every handler of the
// connection.
type session struct {
	c *conn

	from    string
	rcpts   []string
	queueID string
	header  []byte
	// body keeps go-milter's chunk buffers as they come (it allocates a
	// fresh one per packet), so a message is copied once, at the end, into
	// a slice of its exact size.
	body   [][]byte
	size   int64
	tooBig bool
	// overBudget: the memory budget had no room for this message; it is
	// no longer buffered, only counted, and gets 451 4.3.2.
	overBudget bool
}

var _ gomilter.Milter = (*session)(nil)

func (s *session) reset() {
	s.from, s.rcpts, s.queueID = "", nil, ""
	s.header, s.body, s.size, s.tooBig, s.overBudget = nil, nil, 0, false, false
	s.c.giveBack()
}

func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	f := &s.c.facts
	if port == 0 {
		// Postfix's non_smtpd_milters (sendmail, pickup, its own bounces)
		// get a made-up "localhost [127.0.0.1]" on port 0, and HELO
		// "localhost": there is no SMTP client, so record none.
		*f = facts{local: true}
		return noReply, nil
	}
	*f = facts{clientName: host}
	if (family == "tcp4" || family == "tcp6") && addr != nil {
		f.clientAddr = addr.String()
	}
	// {client_name} is the verified name, "unknown" when there is none;
	// the connect argument is then "[ip]".
	if v := m.Macros["{client_name}"]; v != "" {
		f.clientName = v
	}
	return noReply, nil
}

// Helo runs for every HELO/EHLO, including the one after STARTTLS, which is
// the first to carry the TLS macros.
func (s *session) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	if s.c.facts.local {
		return noReply, nil
	}
	s.c.facts.helo = name
	s.c.facts.takeTLS(m.Macros)
	return noReply, nil
}

func (f *facts) takeTLS(macros map[string]string) {
	v := macros["{tls_version}"]
	if v == "" {
		// Absent, not "downgraded": TLS cannot end within an SMTP session.
		return
	}
	f.tlsVersion = v
	f.tlsCipher = macros["{cipher}"]
	f.tlsBits, _ = strconv.Atoi(macros["{cipher_bits}"])
}

func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.reset()
	s.from = from
	s.queueID = m.Macros["i"]
	f := &s.c.facts
	f.takeTLS(m.Macros)
	// AUTH happens between EHLO and MAIL, so MAIL is where it shows.
	if v := m.Macros["{auth_authen}"]; v != "" {
		f.authUser = v
	}
	return noReply, nil
}

func (s *session) RcptTo(rcpt string, _ *gomilter.Modifier) (gomilter.Response, error) {
	s.rcpts = append(s.rcpts, rcpt)
	return noReply, nil
}

// Header rebuilds one header line as received. With SMFIP_HDR_LEADSPC
// Postfix sends the value exactly as after the colon, folded lines joined
// by LF; the message on the wire had CRLF.
func (s *session) Header(name, value string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if s.tooBig || s.overBudget {
		s.grow(int64(len(name) + len(value) + 3))
		return noReply, nil
	}
	start := len(s.header)
	s.header = append(s.header, name...)
	s.header = append(s.header, ':')
	for i := 0; i < len(value); i++ {
		if value[i] == '\n' && (i == 0 || value[i-1] != '\r') {
			s.header = append(s.header, '\r')
		}
		s.header = append(s.header, value[i])
	}
	s.header = append(s.header, '\r', '\n')
	s.grow(int64(len(s.header) - start))
	return noReply, nil
}

// Headers marks the end of the header: the empty line.
func (s *session) Headers(_ textproto.MIMEHeader, _ *gomilter.Modifier) (gomilter.Response, error) {
	if s.grow(2) {
		s.header = append(s.header, '\r', '\n')
	}
	return noReply, nil
}

func (s *session) BodyChunk(chunk []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	if s.grow(int64(len(chunk))) {
		s.body = append(s.body, chunk)
	}
	return noReply, nil
}

// grow accounts n more bytes and reports whether the message is still
// within the limit. Past it, it drops what was buffered and keeps only
// counting; the answer (552) waits for end of message, the only stage where
// the milter replies.
//
// Each byte kept takes two of the memory budget (see
// Config.MaxBytesInFlight); when the budget has no room, the message is
// dropped the same way and gets 451 4.3.2.
func (s *session) grow(n int64) bool {
	s.size += n
	if !s.tooBig && s.size > s.c.run.max {
		s.tooBig = true
		s.drop()
	}
	if s.tooBig || s.overBudget {
		return false
	}
	if !s.c.take(2 * n) {
		s.overBudget = true
		s.drop()
		return false
	}
	return true
}

// drop forgets the message's bytes and gives back their budget.
func (s *session) drop() {
	s.header, s.body = nil, nil
	s.c.giveBack()
}

// Body is the end of the message: store it, then answer. Success answers
// CONTINUE (Postfix delivers what is left: hosted recipients to discard:,
// others as usual) or, with Config.DiscardStored and every recipient
// stored, DISCARD. Never ACCEPT, which would skip later milters. go-milter
// replaces the handler after DISCARD; the connection's facts live in conn
// and survive it.
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	r := s.c.run
	if s.tooBig {
		r.metrics.rejected.Inc()
		r.log.Info("milter: message too big, answered 552", "queue_id", m.Macros["i"], "from", s.from,
			"size", s.size, "limit", r.max)
		return replyTooBig, nil
	}
	if s.overBudget {
		r.metrics.overBudget.Inc()
		r.log.Warn("milter: memory budget full, answered 451 4.3.2", "queue_id", m.Macros["i"], "from", s.from,
			"size", s.size, "max_bytes_in_flight", r.srv.cfg.MaxBytesInFlight)
		return replyBusy, nil
	}
	if id := m.Macros["i"]; id != "" {
		s.queueID = id
	}
	raw := make([]byte, 0, s.size)
	raw = append(raw, s.header...)
	for _, b := range s.body {
		raw = append(raw, b...)
	}
	s.header, s.body = nil, nil

	f := s.c.facts
	env := ingest.Envelope{
		MailFrom:   s.from,
		Recipients: s.rcpts,
		ClientAddr: f.clientAddr,
		ClientName: f.clientName,
		Helo:       f.helo,
		TLSVersion: f.tlsVersion,
		TLSCipher:  f.tlsCipher,
		TLSBits:    f.tlsBits,
		AuthUser:   f.authUser,
		QueueID:    s.queueID,
		ReceivedAt: time.Now(),
		Protocol:   "email",
	}
	// From here until go-milter has written our answer, a shutdown waits.
	s.c.beginAnswer()
	log := r.log.With("queue_id", env.QueueID, "from", env.MailFrom, "rcpts", len(env.Recipients),
		"size", len(raw), "client", env.ClientAddr)
	start := time.Now()
	res, err := s.ingest(env, raw)
	// raw is dead from here (the Ingester keeps no reference): its budget
	// is free for the next message.
	s.c.giveBack()
	elapsed := time.Since(start)
	r.metrics.ingestSeconds.Observe(elapsed.Seconds())
	if err != nil {
		r.metrics.tempfailed.Inc()
		reply, code := failureReply(err)
		log.Error("milter: message not stored, answered "+code, "err", err, "duration", elapsed)
		return reply, nil
	}
	r.metrics.accepted.Inc()
	r.metrics.bytes.Add(float64(len(raw)))
	discard := r.srv.cfg.DiscardStored && res.Complete
	log.Info("milter: message stored", "deliveries", len(res.Deliveries), "discard", discard, "duration", elapsed)
	if discard {
		r.metrics.discarded.Inc()
		return gomilter.RespDiscard, nil
	}
	return gomilter.RespContinue, nil
}

// ingest calls the Ingester under the ingest timeout; a panic there is an
// error like any other, answered 451 rather than dropping the connection.
func (s *session) ingest(env ingest.Envelope, raw []byte) (res ingest.Result, err error) {
	r := s.c.run
	ctx, cancel := context.WithTimeout(r.ingestCtx, r.timeout)
	defer cancel()
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("ingest panicked: %v\n%s", v, bytes.TrimSpace(debug.Stack()))
		}
	}()
	return r.srv.cfg.Ingester.Ingest(ctx, env, raw)
}

// Abort ends the transaction (Postfix sends it after every message, not
// only on errors): forget the message, keep the connection's facts.
func (s *session) Abort(_ *gomilter.Modifier) error {
	s.reset()
	return nil
}
