// Command chaos is the chaos suite of issue 14 (`make chaos`): it runs the
// whole control plane as processes (a 3-node NATS cluster, kube-apiserver
// and etcd, the in-memory API, two replicas of every service), drives API
// changes while it kills, stops and cuts parts of it on a schedule, then
// audits the result from outside. It prints
// `lost=N twice=N moved_by_outage=N converged_s=N`, writes a Markdown
// report, and exits 1 when an audit check failed, 2 when it could not run.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambient-code/control-plane/services/devstack/internal/chaos"
)

func main() {
	cfg, err := chaos.ParseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = chaos.Run(ctx, cfg, os.Stdout)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, chaos.ErrAuditFailed):
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
}
