// Command informer watches the ambient API and publishes every change of
// sessions, projects and project settings as a ResourceEvent on JetStream.
package main

import (
	"context"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	service.Main(app.ServiceName, config.FromEnv, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		return app.Run(ctx, cfg, log, app.WithVersion(version))
	})
}
