// Command runner-manager runs local runner processes for ambient sessions:
// it consumes session events from NATS as a consumer group, claims each
// session exactly once in KV, starts and supervises its runner, registers
// the endpoint for agui-proxy and reports phases to the ambient API.
package main

import (
	"context"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/app"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	service.Main(app.ServiceName, config.FromEnv, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		return app.Run(ctx, cfg, log, app.WithVersion(version))
	})
}
