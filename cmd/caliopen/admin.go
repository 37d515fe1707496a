package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/google/uuid"
	"golang.org/x/term"

	"github.com/caliopen/caliopen/internal/password"
	"github.com/caliopen/caliopen/internal/usertext"
	"github.com/caliopen/caliopen/store"
)

// withStore opens the configured store for one administration command.
func (a *app) withStore(ctx context.Context, fn func(store.Store) error) error {
	st, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

// withDirectory opens the store for a command that only administers domains,
// users, addresses and aliases.
func (a *app) withDirectory(ctx context.Context, fn func(store.Directory) error) error {
	return a.withStore(ctx, func(st store.Store) error { return fn(st) })
}

// withUser runs fn on the named user, in the store opened for one command.
func (a *app) withUser(ctx context.Context, login string, fn func(store.Store, store.User) error) error {
	return a.withStore(ctx, func(st store.Store) error {
		u, err := st.GetUserByName(ctx, login)
		if err != nil {
			return fmt.Errorf("user %s: %w", login, err)
		}
		return fn(st, u)
	})
}

func subcommand(args []string, names ...string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, fmt.Errorf("missing subcommand: %s", strings.Join(names, ", "))
	}
	for _, n := range names {
		if args[0] == n {
			return n, args[1:], nil
		}
	}
	return "", nil, fmt.Errorf("unknown subcommand %q: want %s", args[0], strings.Join(names, ", "))
}

func wantArgs(args []string, n int, usage string) error {
	if len(args) != n {
		return fmt.Errorf("usage: caliopen %s", usage)
	}
	return nil
}

func (a *app) domainCmd(ctx context.Context, args []string) error {
	sub, args, err := subcommand(args, "add", "list", "remove")
	if err != nil {
		return fmt.Errorf("domain: %w", err)
	}
	return a.withDirectory(ctx, func(st store.Directory) error {
		switch sub {
		case "add":
			if err := wantArgs(args, 1, "domain add NAME"); err != nil {
				return err
			}
			name, err := store.NormalizeDomain(args[0])
			if err != nil {
				return err
			}
			if err := st.AddDomain(ctx, store.Domain{Name: name, CreatedAt: time.Now().UTC()}); err != nil {
				return fmt.Errorf("domain %s: %w", name, err)
			}
			fmt.Fprintln(a.stdout, "added domain", name)
		case "list":
			ds, err := st.ListDomains(ctx)
			if err != nil {
				return err
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i].Name < ds[j].Name })
			for _, d := range ds {
				fmt.Fprintln(a.stdout, d.Name)
			}
		case "remove":
			if err := wantArgs(args, 1, "domain remove NAME"); err != nil {
				return err
			}
			name, err := store.NormalizeDomain(args[0])
			if err != nil {
				return err
			}
			if err := st.RemoveDomain(ctx, name); err != nil {
				return fmt.Errorf("domain %s: %w", name, err)
			}
			fmt.Fprintln(a.stdout, "removed domain", name)
		}
		return nil
	})
}

// validUserName keeps logins to what Postfix's smtpd_sender_login_maps and
// SASL can carry unambiguously.
func validUserName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: user name %q: 1 to 64 characters", store.ErrInvalid, name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)) {
			return fmt.Errorf("%w: user name %q: only a-z, 0-9, '.', '_', '-' and '@'", store.ErrInvalid, name)
		}
	}
	return nil
}

// readPassword reads a password from the terminal (twice, without echo) or
// one line of stdin; never from the command line, where ps would show it.
func (a *app) readPassword() (string, error) {
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(a.stderr, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(a.stderr, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", errors.New("passwords differ")
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("no password on stdin")
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("empty password")
	}
	return pw, nil
}

func (a *app) userCmd(ctx context.Context, args []string) error {
	sub, args, err := subcommand(args, "add", "list", "passwd", "logout", "key", "remove", "quota")
	if err != nil {
		return fmt.Errorf("user: %w", err)
	}
	switch sub {
	case "quota":
		return a.userQuota(ctx, args)
	case "key":
		if err := wantArgs(args, 1, "user key LOGIN < private-key.asc"); err != nil {
			return err
		}
		return a.setServerKey(ctx, args[0])
	case "add":
		fs := flag.NewFlagSet("user add", flag.ContinueOnError)
		fs.SetOutput(a.stderr)
		display := fs.String("name", "", "display name")
		var addrs multiFlag
		fs.Var(&addrs, "address", "mailbox address to give the user (repeatable)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if err := wantArgs(fs.Args(), 1, "user add [--name NAME] [--address ADDR]... LOGIN"); err != nil {
			return err
		}
		login := fs.Arg(0)
		if err := validUserName(login); err != nil {
			return err
		}
		// Others read it in the From of what the user sends.
		if err := usertext.Check(*display); err != nil {
			return fmt.Errorf("%w: --name %v", store.ErrInvalid, err)
		}
		norm := make([]string, 0, len(addrs))
		for _, ad := range addrs {
			n, err := store.NormalizeAddress(ad, false)
			if err != nil {
				return err
			}
			norm = append(norm, n)
		}
		pw, err := a.readPassword()
		if err != nil {
			return err
		}
		hash, err := password.Hash(pw)
		if err != nil {
			return err
		}
		return a.withDirectory(ctx, func(st store.Directory) error {
			// Check every address before writing anything.
			for _, ad := range norm {
				if _, err := st.GetDomain(ctx, store.AddressDomain(ad)); err != nil {
					return fmt.Errorf("address %s: domain %s: %w (add it first)", ad, store.AddressDomain(ad), err)
				}
				if _, err := st.GetAddress(ctx, ad); err == nil {
					return fmt.Errorf("address %s: %w", ad, store.ErrExists)
				}
			}
			id, err := uuid.NewV7()
			if err != nil {
				return err
			}
			u := store.User{ID: id, Name: login, DisplayName: *display, PasswordHash: hash, CreatedAt: time.Now().UTC()}
			u.Setup.PasswordStrength = password.Strength(pw)
			if err := st.CreateUser(ctx, u); err != nil {
				return fmt.Errorf("user %s: %w", login, err)
			}
			for _, ad := range norm {
				if err := st.AddAddress(ctx, store.Address{Address: ad, UserID: id}); err != nil {
					return fmt.Errorf("user %s created, but address %s: %w", login, ad, err)
				}
			}
			fmt.Fprintf(a.stdout, "added user %s (%s)\n", login, id)
			return nil
		})
	case "list":
		return a.withDirectory(ctx, func(st store.Directory) error {
			us, err := st.ListUsers(ctx)
			if err != nil {
				return err
			}
			sort.Slice(us, func(i, j int) bool { return us[i].Name < us[j].Name })
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			for _, u := range us {
				as, err := st.ListAddresses(ctx, u.ID)
				if err != nil {
					return err
				}
				list := make([]string, len(as))
				for i, ad := range as {
					list[i] = ad.Address
				}
				sort.Strings(list)
				fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.ID, strings.Join(list, ","))
			}
			return tw.Flush()
		})
	case "passwd":
		if err := wantArgs(args, 1, "user passwd LOGIN"); err != nil {
			return err
		}
		pw, err := a.readPassword()
		if err != nil {
			return err
		}
		hash, err := password.Hash(pw)
		if err != nil {
			return err
		}
		return a.withUser(ctx, args[0], func(st store.Store, u store.User) error {
			u.PasswordHash = hash
			u.Setup.PasswordStrength = password.Strength(pw)
			if err := st.UpdateUser(ctx, u); err != nil {
				return err
			}
			// Whoever knew the old password may hold a session.
			if err := a.endSessions(ctx, st, u.ID); err != nil {
				return fmt.Errorf("password changed for %s, but its sessions did not end: %w", u.Name, err)
			}
			fmt.Fprintln(a.stdout, "password changed for", u.Name, "and every session ended")
			return nil
		})
	case "logout":
		if err := wantArgs(args, 1, "user logout LOGIN"); err != nil {
			return err
		}
		return a.withUser(ctx, args[0], func(st store.Store, u store.User) error {
			if err := a.endSessions(ctx, st, u.ID); err != nil {
				return fmt.Errorf("user %s: %w", u.Name, err)
			}
			fmt.Fprintln(a.stdout, "every session of", u.Name, "ended")
			return nil
		})
	case "remove":
		if err := wantArgs(args, 1, "user remove LOGIN"); err != nil {
			return err
		}
		return a.withUser(ctx, args[0], func(st store.Store, u store.User) error {
			if err := st.DeleteUser(ctx, u.ID); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "removed user", u.Name)
			return nil
		})
	}
	return nil
}

// sessionSweepDelay lets a request that read a token just before the sweep
// finish writing it back (the API slides a token's expiry with use), so that
// the second sweep catches it.
const sessionSweepDelay = 2 * time.Second

// endSessions deletes every API token of the user. On Cassandra, API
// processes run meanwhile: sweep again once their requests in flight are done.
// The embedded store's lock keeps the API stopped while this runs.
func (a *app) endSessions(ctx context.Context, st store.Store, uid uuid.UUID) error {
	if err := st.DeleteUserTokens(ctx, uid, ""); err != nil {
		return err
	}
	if a.cfg.Store.Engine != "cassandra" {
		return nil
	}
	select {
	case <-time.After(sessionSweepDelay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return st.DeleteUserTokens(ctx, uid, "")
}

func (a *app) addressCmd(ctx context.Context, args []string) error {
	sub, args, err := subcommand(args, "add", "list", "remove")
	if err != nil {
		return fmt.Errorf("address: %w", err)
	}
	return a.withDirectory(ctx, func(st store.Directory) error {
		switch sub {
		case "add":
			if err := wantArgs(args, 2, "address add ADDRESS LOGIN"); err != nil {
				return err
			}
			ad, err := store.NormalizeAddress(args[0], false)
			if err != nil {
				return err
			}
			u, err := st.GetUserByName(ctx, args[1])
			if err != nil {
				return fmt.Errorf("user %s: %w", args[1], err)
			}
			if _, err := st.GetDomain(ctx, store.AddressDomain(ad)); err != nil {
				return fmt.Errorf("domain %s: %w (add it first)", store.AddressDomain(ad), err)
			}
			if _, err := st.GetAlias(ctx, ad); err == nil {
				return fmt.Errorf("%s is an alias: %w", ad, store.ErrExists)
			}
			if err := st.AddAddress(ctx, store.Address{Address: ad, UserID: u.ID}); err != nil {
				return fmt.Errorf("address %s: %w", ad, err)
			}
			fmt.Fprintf(a.stdout, "added address %s for %s\n", ad, u.Name)
		case "list":
			if err := wantArgs(args, 1, "address list LOGIN"); err != nil {
				return err
			}
			u, err := st.GetUserByName(ctx, args[0])
			if err != nil {
				return fmt.Errorf("user %s: %w", args[0], err)
			}
			as, err := st.ListAddresses(ctx, u.ID)
			if err != nil {
				return err
			}
			for _, ad := range as {
				fmt.Fprintln(a.stdout, ad.Address)
			}
		case "remove":
			if err := wantArgs(args, 1, "address remove ADDRESS"); err != nil {
				return err
			}
			ad, err := store.NormalizeAddress(args[0], false)
			if err != nil {
				return err
			}
			if err := st.RemoveAddress(ctx, ad); err != nil {
				return fmt.Errorf("address %s: %w", ad, err)
			}
			fmt.Fprintln(a.stdout, "removed address", ad)
		}
		return nil
	})
}

func (a *app) aliasCmd(ctx context.Context, args []string) error {
	sub, args, err := subcommand(args, "add", "list", "remove")
	if err != nil {
		return fmt.Errorf("alias: %w", err)
	}
	return a.withDirectory(ctx, func(st store.Directory) error {
		switch sub {
		case "add":
			if len(args) < 2 {
				return errors.New("usage: caliopen alias add ADDRESS|@DOMAIN TARGET...")
			}
			ad, err := store.NormalizeAddress(args[0], true)
			if err != nil {
				return err
			}
			if _, err := st.GetDomain(ctx, store.AddressDomain(ad)); err != nil {
				return fmt.Errorf("domain %s: %w (add it first)", store.AddressDomain(ad), err)
			}
			if _, err := st.GetAddress(ctx, ad); err == nil {
				return fmt.Errorf("%s is a mailbox: %w", ad, store.ErrExists)
			}
			var targets []string
			for _, t := range args[1:] {
				n, err := store.NormalizeAddress(t, false)
				if err != nil {
					return fmt.Errorf("target: %w", err)
				}
				if n == ad {
					return fmt.Errorf("%w: alias %s points at itself", store.ErrInvalid, ad)
				}
				targets = append(targets, n)
			}
			// Adding to an existing alias extends its targets.
			if old, err := st.GetAlias(ctx, ad); err == nil {
				targets = mergeTargets(old.Targets, targets)
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err := st.PutAlias(ctx, store.Alias{Address: ad, Targets: targets}); err != nil {
				return fmt.Errorf("alias %s: %w", ad, err)
			}
			fmt.Fprintf(a.stdout, "alias %s -> %s\n", ad, strings.Join(targets, ","))
		case "list":
			if err := wantArgs(args, 1, "alias list DOMAIN"); err != nil {
				return err
			}
			d, err := store.NormalizeDomain(args[0])
			if err != nil {
				return err
			}
			as, err := st.ListAliases(ctx, d)
			if err != nil {
				return err
			}
			for _, al := range as {
				fmt.Fprintf(a.stdout, "%s\t%s\n", al.Address, strings.Join(al.Targets, ","))
			}
		case "remove":
			if len(args) < 1 {
				return errors.New("usage: caliopen alias remove ADDRESS|@DOMAIN [TARGET...]")
			}
			ad, err := store.NormalizeAddress(args[0], true)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				if err := st.RemoveAlias(ctx, ad); err != nil {
					return fmt.Errorf("alias %s: %w", ad, err)
				}
				fmt.Fprintln(a.stdout, "removed alias", ad)
				return nil
			}
			// Removing some targets keeps the alias with the others.
			old, err := st.GetAlias(ctx, ad)
			if err != nil {
				return fmt.Errorf("alias %s: %w", ad, err)
			}
			drop := map[string]bool{}
			for _, t := range args[1:] {
				n, err := store.NormalizeAddress(t, false)
				if err != nil {
					return fmt.Errorf("target: %w", err)
				}
				drop[n] = true
			}
			var keep []string
			for _, t := range old.Targets {
				if !drop[t] {
					keep = append(keep, t)
				}
			}
			if len(keep) == len(old.Targets) {
				return fmt.Errorf("alias %s has none of those targets: %w", ad, store.ErrNotFound)
			}
			if len(keep) == 0 {
				err = st.RemoveAlias(ctx, ad)
			} else {
				err = st.PutAlias(ctx, store.Alias{Address: ad, Targets: keep})
			}
			if err != nil {
				return fmt.Errorf("alias %s: %w", ad, err)
			}
			fmt.Fprintf(a.stdout, "alias %s -> %s\n", ad, strings.Join(keep, ","))
		}
		return nil
	})
}

func mergeTargets(old, add []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range append(append([]string{}, old...), add...) {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// setServerKey stores the user's OpenPGP key pair server-side (custody
// "server"): ingest can then decrypt messages to check inner signatures and
// the account PI counts the key, at the lower custody score.
func (a *app) setServerKey(ctx context.Context, login string) error {
	raw, err := io.ReadAll(io.LimitReader(a.stdin, 1<<20))
	if err != nil {
		return err
	}
	ents, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%w: not an armored OpenPGP key: %v", store.ErrInvalid, err)
	}
	if len(ents) != 1 || ents[0].PrivateKey == nil {
		return fmt.Errorf("%w: want exactly one private key, armored", store.ErrInvalid)
	}
	if ents[0].PrivateKey.Encrypted {
		return fmt.Errorf("%w: the private key is passphrase-protected; the server cannot use it (export it without a passphrase)", store.ErrInvalid)
	}
	var pub bytes.Buffer
	w, err := armor.Encode(&pub, openpgp.PublicKeyType, nil)
	if err != nil {
		return err
	}
	if err := ents[0].Serialize(w); err != nil {
		return err
	}
	w.Close()
	return a.withDirectory(ctx, func(st store.Directory) error {
		u, err := st.GetUserByName(ctx, login)
		if err != nil {
			return fmt.Errorf("user %s: %w", login, err)
		}
		u.Setup.HasKeyPair = true
		u.Setup.KeyCustody = "server"
		u.Setup.PrivateKey = string(raw)
		u.Setup.PublicKey = pub.String()
		if err := st.UpdateUser(ctx, u); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "key %X stored for %s (custody: server)\n", ents[0].PrimaryKey.Fingerprint, u.Name)
		return nil
	})
}
