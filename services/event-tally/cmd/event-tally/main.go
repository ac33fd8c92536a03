// Command event-tally joins the events stream as its own consumer group and
// counts ADDED/MODIFIED/DELETED per resource, served at /tally and as
// metrics.
package main

import (
	"context"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/services/event-tally/internal/app"
	"github.com/ambient-code/control-plane/services/event-tally/internal/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	service.Main(app.ServiceName, config.FromEnv, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		return app.Run(ctx, cfg, log, app.WithVersion(version))
	})
}
