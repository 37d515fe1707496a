package milter

import (
	"errors"

	gomilter "github.com/emersion/go-milter"

	"github.com/caliopen/caliopen/store"
)

// replyOverQuota defers a message for a mailbox that is full (RFC 3463
// 4.2.2): the sender retries, and the mail goes through once the user has
// deleted some. lookupd's quota map gives the same answer at RCPT.
var replyOverQuota = gomilter.NewResponseStr('y', "452 4.2.2 Mailbox full, please try again later")

// failureReply is the answer to a message ingest did not store, and its
// code for the log.
func failureReply(err error) (gomilter.Response, string) {
	if errors.Is(err, store.ErrOverQuota) {
		return replyOverQuota, "452"
	}
	return replyTempFail, "451"
}
