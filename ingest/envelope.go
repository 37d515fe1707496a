package ingest

import "time"

// Envelope is what an adapter (milter, deliver, import) knows about a message
// besides its bytes. Adapters fill what they have; zero values mean unknown.
type Envelope struct {
	// MailFrom is the envelope sender (SMTP MAIL FROM) without <>; "" for the null sender.
	MailFrom string
	// Recipients are envelope recipients as given by the sender (RCPT TO). Ingest
	// resolves each (lowercase, +extension, aliases, catch-all) to hosted users;
	// recipients that are not hosted are ignored.
	Recipients []string

	ClientAddr string // connecting client IP, "" if local
	ClientName string // its verified reverse name, "unknown" if none
	Helo       string

	TLSVersion string // e.g. "TLSv1.3", "" when the hop was in clear
	TLSCipher  string
	TLSBits    int

	AuthUser string // SASL login of the client, if it authenticated
	QueueID  string // Postfix queue id (changes on retry: never a dedup key)

	ReceivedAt time.Time // zero means now
	Protocol   string    // "email" when empty
}
