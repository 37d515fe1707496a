package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "milter.sock")

	// A socket left behind by a process that died is replaced.
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	ln, err := listen("milter", "unix:"+path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, want a socket of mode 0660", fi.Mode())
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()

	// One still answering belongs to another instance: never steal it.
	if _, err := listen("milter", "unix:"+path); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Errorf("over a live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after close: %v", err)
	}

	// Anything else in the way is an error, and is left alone.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listen("milter", "unix:"+file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("the file in the way was changed")
	}
	if _, err := listen("milter", "unix:"+filepath.Join(dir, "missing", "x.sock")); err == nil || !strings.HasPrefix(err.Error(), "milter: listen unix:") {
		t.Errorf("in a missing directory: %v", err)
	}
}
