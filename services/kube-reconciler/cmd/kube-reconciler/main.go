// Command kube-reconciler turns ambient events into Kubernetes Namespaces,
// RoleBindings and AgenticSessions and writes AgenticSession status back to
// the ambient API. Configuration is from the environment (internal/config).
package main

import (
	"context"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/app"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"k8s.io/klog/v2"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	service.Main(app.ServiceName, config.FromEnv, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		// client-go logs through klog (the reflectors' watch warnings,
		// client-side throttling); send it to the service's own log, in
		// its format, rather than to stderr in klog's.
		klog.SetSlogLogger(log)
		return app.Run(ctx, cfg, log, app.WithVersion(version))
	})
}
