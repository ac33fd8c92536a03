// Command runner-manager runs local runner processes for ambient sessions:
// it consumes session events from NATS as a consumer group, claims each
// session exactly once in KV, starts and supervises its runner, registers
// the endpoint for agui-proxy and reports phases to the ambient API.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/app"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "runner-manager:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	log, err := telemetry.NewLogger(cfg.LogLevel, os.Stderr)
	if err != nil {
		return err
	}
	return app.Run(ctx, cfg, log, version)
}
