package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/internal/config"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/store/cassandra/cassandratest"
	"github.com/caliopen/caliopen/store/embedded"
)

// `user passwd` and `user logout` end every API session of the user, and
// only theirs.
func TestAdminEndsSessions(t *testing.T) {
	c := newCLI(t)
	db := filepath.Join(strings.TrimPrefix(c.env[0], "CALIOPEN_DATA_DIR="), "caliopen.db")
	c.ok("", "domain", "add", "example.org")
	c.ok("pw\n", "user", "add", "alice")
	c.ok("pw\n", "user", "add", "bob")

	// withDB opens the store while no command holds its lock.
	withDB := func(fn func(st store.Store, alice, bob store.User)) {
		t.Helper()
		st, err := embedded.Open(db)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		ctx := context.Background()
		alice, err := st.GetUserByName(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		bob, err := st.GetUserByName(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		fn(st, alice, bob)
	}
	put := func(st store.Store, u store.User, hash string) {
		t.Helper()
		if err := st.PutToken(context.Background(), store.Token{Hash: hash, UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	alive := func(st store.Store, hash string) bool {
		t.Helper()
		_, err := st.GetToken(context.Background(), hash)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	withDB(func(st store.Store, alice, bob store.User) {
		put(st, alice, "alice-phone")
		put(st, alice, "alice-laptop")
		put(st, bob, "bob-phone")
	})
	if out := c.ok("new password\n", "user", "passwd", "alice"); !strings.Contains(out, "every session ended") {
		t.Errorf("user passwd: %q", out)
	}
	withDB(func(st store.Store, alice, bob store.User) {
		if alive(st, "alice-phone") || alive(st, "alice-laptop") {
			t.Error("user passwd left a session of alice")
		}
		if !alive(st, "bob-phone") {
			t.Error("user passwd alice ended bob's session")
		}
		put(st, alice, "alice-tablet")
	})
	if out := c.ok("", "user", "logout", "alice"); out != "every session of alice ended\n" {
		t.Errorf("user logout: %q", out)
	}
	withDB(func(st store.Store, alice, bob store.User) {
		if alive(st, "alice-tablet") {
			t.Error("user logout left a session of alice")
		}
		if !alive(st, "bob-phone") {
			t.Error("user logout alice ended bob's session")
		}
	})
	c.fails("not found", "user", "logout", "nobody")
	c.fails("usage: caliopen user logout LOGIN", "user", "logout")
	c.fails("usage: caliopen user logout LOGIN", "user", "logout", "alice", "bob")
}

// On Cassandra API processes run beside the CLI: a request that read a token
// just before the sweep may write it back (sliding its expiry). The second
// sweep ends it anyway.
func TestEndSessionsOnCassandra(t *testing.T) {
	st := cassandratest.Open(t)
	cfg := config.Default()
	cfg.Store.Engine = "cassandra"
	a := &app{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	uid := uuid.Must(uuid.NewV7())
	if err := st.CreateUser(ctx, store.User{ID: uid, Name: "sess-" + uid.String()[24:], CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	tok := store.Token{Hash: "sess-" + uid.String(), UserID: uid, CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := st.PutToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.endSessions(ctx, st, uid) }()
	deadline := time.Now().Add(sessionSweepDelay)
	for {
		if _, err := st.GetToken(ctx, tok.Hash); errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first sweep did not delete the token")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tok.ExpiresAt = time.Now().Add(2 * time.Hour) // the slide of a request in flight
	if err := st.PutToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetToken(ctx, tok.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a token written back during the sweep survived it: %v", err)
	}
}
