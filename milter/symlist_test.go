package milter

import (
	"testing"

	"github.com/caliopen/caliopen/internal/postfixtest"
)

// The milter asks Postfix for its macros itself (SMFIF_SETSYMLIST), so it
// works with a main.cf that lists none; contrib/postfix lists them anyway.
func TestMacrosRequestedBySymList(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	pf := startPostfix(t, startMilter(t, Config{Ingester: rec}),
		"milter_connect_macros =", "milter_helo_macros =", "milter_mail_macros =", "milter_end_of_data_macros =")
	s, err := postfixtest.SendMail(testCtx(t), pf.SMTPAddr, postfixtest.SendOptions{TLS: pf.ClientTLSConfig()},
		postfixtest.Message{From: "zoe@example.net", To: []string{"bob@example.org"}, Raw: []byte("Subject: x\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	calls := rec.got()
	if len(calls) != 1 {
		t.Fatalf("%d Ingest calls", len(calls))
	}
	e := calls[0].env
	if e.TLSVersion != "TLSv1.3" || e.TLSCipher == "" || e.QueueID != s.Transactions[0].QueueID() || e.ClientName != "unknown" {
		t.Fatalf("without main.cf macros: %+v", e)
	}
}
