// Command kube-reconciler turns ambient events into Kubernetes Namespaces,
// RoleBindings and AgenticSessions and writes AgenticSession status back to
// the ambient API. Configuration is from the environment (internal/config).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/app"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kube-reconciler:", err)
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
	return app.Run(ctx, cfg, log, app.WithVersion(version))
}
