package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/caliopen/caliopen/store/embedded"
)

// compact rewrites the embedded store file with only its live data: disk
// space of deleted mail is given back and its bytes leave the disk. Offline:
// it refuses while a server holds the file.
func (a *app) compact(_ context.Context, args []string) error {
	if len(args) > 0 {
		return errors.New("compact takes no arguments")
	}
	if a.cfg.Store.Engine == "cassandra" {
		return errors.New("compact: only the embedded store needs it (Cassandra compacts by itself)")
	}
	st, err := embedded.Compact(a.cfg.Store.Path)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "compacted %s: %d -> %d bytes\n", a.cfg.Store.Path, st.Before, st.After)
	return nil
}
