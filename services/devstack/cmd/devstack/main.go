// Command devstack runs the whole control plane on one machine with embedded
// defaults: an embedded NATS with JetStream, the in-memory ambient API, and
// every service as a separate process with prefixed logs. `make run` starts it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambient-code/control-plane/services/devstack/internal/stack"
)

func main() {
	cfg, err := stack.ParseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = stack.Run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}
