// Command agui-proxy routes AG-UI requests for /sessions/{id}/... to the
// runner of each session, found in the ambient-runners KV bucket.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambient-code/control-plane/libs/telemetry"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/app"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agui-proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := config.FromEnv(nil)
	if err != nil {
		return err
	}
	log, err := telemetry.NewLogger(cfg.LogLevel, os.Stderr)
	if err != nil {
		return err
	}
	a, err := app.New(cfg, version, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
