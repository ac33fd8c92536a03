// Command ambientctl drives the ambient control plane: sessions, projects,
// settings, the event stream, AG-UI chat through the proxy, and event tallies.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambient-code/control-plane/services/ambientctl/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}
