package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/caliopen/caliopen/store"
)

// bbolt reuses the pages of deleted data but never gives them back to the
// file system, and their old bytes stay in the file until overwritten: a
// deleted message is unreachable, not gone. Compact copies the live data into
// a new file and puts it in the old one's place, so the disk space is freed
// and deleted mail is no longer on disk.

// CompactStats are the file's sizes before and after.
type CompactStats struct {
	Before, After int64
}

// Compact rewrites the store file at path with only its live data, then
// renames the new file over it (atomically: a crash leaves the old file or
// the new one, plus at worst a stray path+".compact"). It needs the file to
// itself: while a server holds the file's lock it fails at once, wrapping
// store.ErrUnavailable.
func Compact(path string) (CompactStats, error) {
	var stats CompactStats
	fi, err := os.Stat(path)
	if err != nil {
		return stats, fmt.Errorf("embedded: compact: %w", err)
	}
	stats.Before = fi.Size()
	src, err := openCurrent(path, 0o600, &bolt.Options{Timeout: 100 * time.Millisecond})
	if errors.Is(err, berrors.ErrTimeout) {
		return stats, fmt.Errorf("embedded: compact %s: the file is in use by a running server; stop it first: %w", path, store.ErrUnavailable)
	}
	if err != nil {
		return stats, fmt.Errorf("embedded: compact %s: %w", path, err)
	}
	defer src.Close()                       // after the rename: the lock covers the whole operation
	if err := initSchema(src); err != nil { // an older file is migrated first
		return stats, fmt.Errorf("embedded: compact %s: %w", path, err)
	}
	if err := src.Update(deleteUnreferencedBlobs); err != nil {
		return stats, fmt.Errorf("embedded: compact %s: %w", path, err)
	}

	tmp := path + ".compact"
	_ = os.Remove(tmp) // left by an interrupted run
	dst, err := bolt.Open(tmp, fi.Mode().Perm(), &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		return stats, fmt.Errorf("embedded: compact: %w", err)
	}
	// 64 MiB per transaction bounds memory; each commit is synced.
	if err := bolt.Compact(dst, src, 64<<20); err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return stats, fmt.Errorf("embedded: compact %s: %w", path, err)
	}
	if err := dst.Close(); err != nil {
		_ = os.Remove(tmp)
		return stats, fmt.Errorf("embedded: compact: %w", err)
	}
	// Run as root, Compact must not leave the service a file it cannot open.
	if err := sameOwnerAndMode(tmp, fi); err != nil {
		_ = os.Remove(tmp)
		return stats, fmt.Errorf("embedded: compact: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return stats, fmt.Errorf("embedded: compact: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil { // make the rename durable
		_ = d.Sync()
		_ = d.Close()
	}
	if fi, err := os.Stat(path); err == nil {
		stats.After = fi.Size()
	}
	return stats, nil
}

// deleteUnreferencedBlobs deletes the blobs no message references: those of
// mail deleted before reference counts existed (schema 1), and those left by
// failed deliveries (PutBlob, then no PutMessage). Only safe offline: a
// delivery in progress has a blob not referenced yet.
func deleteUnreferencedBlobs(tx *bolt.Tx) error {
	blobs, refs := tx.Bucket(bBlobs), tx.Bucket(bBlobRefs)
	var orphans [][]byte
	err := blobs.ForEach(func(k, _ []byte) error {
		// A size entry's key is the hash alone; chunks' keys are longer.
		if len(k) == len(store.BlobHash(nil)) && refs.Get(k) == nil {
			orphans = append(orphans, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, h := range orphans { // not during ForEach: deleting moves its cursor
		if err := deleteBlob(blobs, h); err != nil {
			return err
		}
	}
	return nil
}

// sameOwnerAndMode gives the file at path fi's owner, group and permissions.
func sameOwnerAndMode(path string, fi os.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(path, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	return os.Chmod(path, fi.Mode().Perm())
}
