package main

import (
	"strings"
	"testing"
)

func TestUserQuota(t *testing.T) {
	c := newCLI(t)
	c.ok("pw\n", "user", "add", "alice")
	if out := c.ok("", "user", "quota", "alice"); out != "alice: 0 bytes used, quota unlimited (default)\n" {
		t.Fatalf("quota of a new user: %q", out)
	}
	if out := c.ok("", "--set", "store.default_quota=1GB", "user", "quota", "alice"); !strings.Contains(out, "quota 1073741824 bytes (default)") {
		t.Fatalf("operator default: %q", out)
	}
	if out := c.ok("", "--set", "store.default_quota=1GB", "user", "quota", "alice", "2MB"); !strings.Contains(out, "quota 2097152 bytes\n") {
		t.Fatalf("own quota: %q", out)
	}
	if out := c.ok("", "user", "quota", "alice", "unlimited"); !strings.Contains(out, "quota unlimited\n") {
		t.Fatalf("unlimited: %q", out)
	}
	if out := c.ok("", "--set", "store.default_quota=1GB", "user", "quota", "alice", "default"); !strings.Contains(out, "quota 1073741824 bytes (default)") {
		t.Fatalf("back to the default: %q", out)
	}
	c.fails("usage: caliopen user quota", "user", "quota", "alice", "lots")
	c.fails("usage: caliopen user quota", "user", "quota")
	c.fails("not found", "user", "quota", "bob")
}
