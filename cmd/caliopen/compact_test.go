package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
)

// TestCompactCommand: `caliopen compact` refuses with one line while a
// server holds the file, and afterwards leaves no byte of a deleted message.
func TestCompactCommand(t *testing.T) {
	c := newCLI(t)
	c.ok("", "domain", "add", "example.org")
	c.ok("pw\n", "user", "add", "--address", "alice@example.org", "alice")
	path := filepath.Join(strings.TrimPrefix(c.env[0], "CALIOPEN_DATA_DIR="), "caliopen.db")
	marker := "MARKER-" + uuid.NewString()

	ctx := context.Background()
	st, err := embedded.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.GetUserByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	conv, err := st.GetOrCreateConversation(ctx, store.Conversation{UserID: u.ID, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte("Subject: secret\r\n\r\n" + strings.Repeat(marker+"\r\n", 100))
	hash, err := st.PutBlob(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := st.PutMessage(ctx, store.Message{UserID: u.ID, ConversationID: conv.ID, DedupKey: "d", TextBody: marker, RawHash: hash, RawSize: int64(len(raw))})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMessage(ctx, u.ID, m.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.run("", "compact")
	if err == nil || !strings.Contains(err.Error(), "running server") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("compact while the store is open: %v, want a one-line refusal", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !bytes.Contains(b, []byte(marker)) {
		t.Fatal("deleted message not in the file before compaction: the test proves nothing")
	}
	if out := c.ok("", "compact"); !strings.HasPrefix(out, "compacted "+path) {
		t.Fatalf("compact said %q", out)
	}
	if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(marker)) {
		t.Fatal("deleted message still in the file after caliopen compact")
	}
	if out := c.ok("", "user", "list"); !strings.Contains(out, "alice") {
		t.Fatalf("user list after compaction = %q", out)
	}
}
