package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caliopen/caliopen/internal/postfixtest"
)

// TestQuotaThroughPostfix: `caliopen serve` behind a real Postfix with the
// contrib fragments. A message that would take alice over her quota gets
// 452 4.2.2 at end of data (milter); once her mailbox is full, her address
// gets 452 4.2.2 at RCPT (lookupd's quota map, check_recipient_access),
// while bob, without a quota, still receives mail.
func TestQuotaThroughPostfix(t *testing.T) {
	requireE2E(t)
	d := newServeDeployment(t)
	d.node.mustCLI("", "domain", "add", "example.org")
	d.node.mustCLI(password+"\n", "user", "add", "--address", "alice@example.org", "alice")
	d.node.mustCLI(password+"\n", "user", "add", "--address", "bob@example.org", "bob")
	d.node.mustCLI("", "user", "quota", "alice", "40KB")

	send := func(to string, n, size int) postfixtest.Transaction {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := postfixtest.Dial(ctx, d.pf.SMTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Hello("client.example.net"); err != nil {
			t.Fatal(err)
		}
		raw := fmt.Sprintf("From: carol@example.net\r\nTo: %s\r\nSubject: quota %d\r\nMessage-ID: <quota%d@example.net>\r\n\r\n%s\r\n",
			to, n, n, strings.Repeat("0123456789abcdef\r\n", size/18))
		tx, err := c.Send("carol@example.net", []string{to}, []byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Quit()
		return tx
	}

	d.start()
	if tx := send("alice@example.org", 1, 30<<10); !tx.Accepted() {
		t.Fatalf("first message (30 KB of 40 KB): %+v", tx)
	}
	tx := send("alice@example.org", 2, 30<<10)
	if tx.Final.Code != 452 || !strings.HasPrefix(tx.Final.Text, "4.2.2") {
		t.Fatalf("second message over quota: %+v, want 452 4.2.2 at end of data", tx)
	}
	if tx := send("bob@example.org", 3, 30<<10); !tx.Accepted() {
		t.Fatalf("bob, without a quota: %+v", tx)
	}
	d.stop()

	// The operator lowers alice's quota under what she uses: she is full.
	d.node.mustCLI("", "user", "quota", "alice", "20KB")
	d.start()
	tx = send("alice@example.org", 4, 1<<10)
	if len(tx.Rcpt) != 1 || tx.Rcpt[0].Code != 452 || !strings.HasPrefix(tx.Rcpt[0].Text, "4.2.2") || tx.Data.Code != 0 {
		t.Fatalf("full mailbox at RCPT: %+v, want 452 4.2.2 before DATA", tx)
	}
	if tx := send("bob@example.org", 5, 1<<10); !tx.Accepted() {
		t.Fatalf("bob after alice is full: %+v", tx)
	}
	d.stop()
	if out := d.node.mustCLI("", "user", "quota", "alice"); !strings.Contains(out, "quota 20480 bytes") {
		t.Fatalf("alice's quota: %q", out)
	}
}
