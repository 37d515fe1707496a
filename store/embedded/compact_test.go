package embedded_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/embedded"
)

// TestCompactRemovesDeletedMail: a deleted message (its record and its raw
// blob) is still in the file's bytes after the delete, and gone from them
// after Compact, which keeps every live message whole.
func TestCompactRemovesDeletedMail(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "caliopen.db")
	marker := "MARKER-" + uuid.NewString()
	keep := "KEEP-" + uuid.NewString()
	s, err := embedded.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	u := store.User{ID: uuid.Must(uuid.NewV7()), Name: "alice", CreatedAt: time.Now()}
	must(t, s.CreateUser(ctx, u))
	conv, err := s.GetOrCreateConversation(ctx, store.Conversation{UserID: u.ID, Key: "k"})
	must(t, err)
	put := func(word string, n int) store.Message {
		raw := []byte("Subject: x\r\n\r\n" + strings.Repeat(word+" ", n))
		hash, err := s.PutBlob(ctx, raw)
		must(t, err)
		m, _, err := s.PutMessage(ctx, store.Message{UserID: u.ID, ConversationID: conv.ID, DedupKey: word,
			TextBody: "body " + word, Excerpt: word, RawHash: hash, RawSize: int64(len(raw))})
		must(t, err)
		return m
	}
	gone, kept := put(marker, 50000), put(keep, 2000) // megabytes deleted, kilobytes kept
	must(t, s.DeleteMessage(ctx, u.ID, gone.ID))

	// While the server has the file, compaction refuses at once.
	if _, err := embedded.Compact(path); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "running server") {
		t.Fatalf("Compact of an open file: %v, want a refusal naming the running server", err)
	}
	must(t, s.Close())
	if onDisk(t, path, marker) == 0 {
		t.Fatal("the deleted message's bytes are not in the file before compaction: the test proves nothing")
	}

	stats, err := embedded.Compact(path)
	must(t, err)
	if n := onDisk(t, path, marker); n != 0 {
		t.Fatalf("after compaction the deleted message is still in the file (%d times)", n)
	}
	if onDisk(t, path, keep) == 0 || stats.After >= stats.Before {
		t.Fatalf("compaction: kept message on disk %d times; size %d -> %d", onDisk(t, path, keep), stats.Before, stats.After)
	}
	if _, err := os.Stat(path + ".compact"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}

	s, err = embedded.Open(path)
	must(t, err)
	defer s.Close()
	m, err := s.GetMessage(ctx, u.ID, kept.ID)
	must(t, err)
	raw, err := s.GetBlob(ctx, m.RawHash)
	must(t, err)
	if !bytes.Contains(raw, []byte(keep)) || m.TextBody != "body "+keep {
		t.Fatalf("kept message damaged by compaction: %q", m.TextBody)
	}
	if _, err := s.GetMessage(ctx, u.ID, gone.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted message after compaction: %v", err)
	}
	if n, err := s.Usage(ctx, u.ID); err != nil || n != kept.RawSize {
		t.Fatalf("usage after compaction: %d, %v; want %d", n, err, kept.RawSize)
	}
}

// onDisk counts the occurrences of s in the file's bytes.
func onDisk(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return bytes.Count(b, []byte(s))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenWaitingDuringCompactGetsTheNewFile: an Open that is waiting for the
// lock when Compact renames its new file over the path must not end up
// holding the old, unlinked file: what it acknowledges would be lost.
func TestOpenWaitingDuringCompactGetsTheNewFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "caliopen.db")
	holder, err := embedded.Open(path) // plays Compact's part: holds the lock
	must(t, err)
	type opened struct {
		s   *embedded.Store
		err error
	}
	waiter := make(chan opened, 1)
	go func() {
		s, err := embedded.Open(path, embedded.WithLockTimeout(10*time.Second))
		waiter <- opened{s, err}
	}()
	// Wait until the second Open has the old file open (and so is waiting
	// for its lock), else the test would prove nothing.
	for deadline := time.Now().Add(10 * time.Second); openCount(t, path) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second Open never opened the file")
		}
	}
	// What Compact does: a new store file renamed over the path, then the
	// old one's lock released.
	next, err := embedded.Open(path + ".compact")
	must(t, err)
	must(t, next.Close())
	must(t, os.Rename(path+".compact", path))
	must(t, holder.Close())

	w := <-waiter
	must(t, w.err)
	u := store.User{ID: uuid.Must(uuid.NewV7()), Name: "bob", CreatedAt: time.Now()}
	must(t, w.s.CreateUser(ctx, u)) // acknowledged
	must(t, w.s.Close())

	s, err := embedded.Open(path)
	must(t, err)
	defer s.Close()
	if _, err := s.GetUser(ctx, u.ID); err != nil {
		t.Fatalf("a user created by the Open that waited during compaction is lost: %v", err)
	}
}

// openCount counts this process's descriptors open on path (Linux /proc).
func openCount(t *testing.T, path string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// TestCompactRemovesUnreferencedBlobs: a blob no message references (a
// failed delivery's, or mail deleted before reference counts) is gone from
// the file after Compact.
func TestCompactRemovesUnreferencedBlobs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "caliopen.db")
	marker := "ORPHAN-" + uuid.NewString()
	s, err := embedded.Open(path)
	must(t, err)
	_, err = s.PutBlob(ctx, []byte("Subject: x\r\n\r\n"+strings.Repeat(marker+" ", 1000)))
	must(t, err)
	must(t, s.Close())
	if onDisk(t, path, marker) == 0 {
		t.Fatal("the blob is not in the file before compaction: the test proves nothing")
	}
	_, err = embedded.Compact(path)
	must(t, err)
	if n := onDisk(t, path, marker); n != 0 {
		t.Fatalf("after compaction the unreferenced blob is still in the file (%d times)", n)
	}
}

// TestCompactKeepsOwnerAndMode: the new file has the old one's owner, group
// and permissions, so a Compact run as root leaves a file the service's user
// can still open.
func TestCompactKeepsOwnerAndMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "caliopen.db")
	s, err := embedded.Open(path)
	must(t, err)
	must(t, s.Close())
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 { // as root, give it to someone else, as the service's file is
		uid, gid = 65534, 65534
	}
	must(t, os.Chown(path, uid, gid))
	must(t, os.Chmod(path, 0o640))
	_, err = embedded.Compact(path)
	must(t, err)
	fi, err := os.Stat(path)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid || fi.Mode().Perm() != 0o640 {
		t.Fatalf("after compaction: owner %d:%d mode %o, want %d:%d 0640", st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
	}
}
