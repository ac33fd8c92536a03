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
	// The first SIGINT or SIGTERM stops the stack gracefully; a second one
	// (Ctrl-C again, as with docker compose) kills what is still stopping.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	ctx, stop := context.WithCancel(context.Background())
	hurry, kill := context.WithCancel(context.Background())
	go func() { // owned by main: it ends with the process
		<-signals
		stop()
		<-signals
		fmt.Fprintln(os.Stderr, "devstack: interrupted again: killing the services still stopping (a runner's own child processes may be left)")
		kill()
	}()
	err = stack.Run(ctx, hurry, cfg, os.Stdout)
	signal.Stop(signals)
	stop()
	kill()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}
