package lookupd_test

import (
	"context"
	"log"
	"log/slog"
	"net"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caliopen/caliopen/lookupd"
	"github.com/caliopen/caliopen/resolve"
	"github.com/caliopen/caliopen/store/embedded"
)

// Serve every map over socketmap, and the mailbox map over tcp_table too,
// until SIGTERM. Postfix's main.cf then says, for example:
//
//	virtual_mailbox_domains = socketmap:inet:127.0.0.1:2525:domains
//	virtual_mailbox_maps    = tcp:127.0.0.1:2526
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	st, err := embedded.Open("/var/lib/caliopen/caliopen.db")
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	reg := prometheus.NewRegistry() // exposed by the caller's /metrics handler
	r, err := resolve.New(resolve.Config{Store: st, Delimiter: resolve.DefaultDelimiter})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := lookupd.New(lookupd.Config{Resolver: r, Logger: slog.Default(), Registerer: reg})
	if err != nil {
		log.Fatal(err)
	}
	sm, err := net.Listen("tcp", "127.0.0.1:2525")
	if err != nil {
		log.Fatal(err)
	}
	tt, err := net.Listen("tcp", "127.0.0.1:2526")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := srv.ServeTCPTable(ctx, tt, lookupd.MapMailboxes); err != nil {
			log.Print(err)
		}
	}()
	if err := srv.ServeSocketmap(ctx, sm); err != nil {
		log.Fatal(err)
	}
}
