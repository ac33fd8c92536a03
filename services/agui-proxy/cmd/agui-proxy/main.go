// Command agui-proxy routes AG-UI requests for /sessions/{id}/... to the
// runner of each session, found in the ambient-runners KV bucket.
package main

import (
	"context"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/service"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/app"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	load := func() (config.Config, error) { return config.FromEnv(nil) }
	service.Main(app.ServiceName, load, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		a, err := app.New(cfg, version, log)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	})
}
