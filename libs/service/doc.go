// Package service is the runtime every service runs in. It follows
// controller-runtime's Manager: one object owns start-up, health and
// readiness, the goroutines of the service's parts and the ordered
// shutdown; a service only declares its parts.
//
// A service's cmd/<name>/main.go is one call:
//
//	service.Main("informer", config.FromEnv, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
//		return app.Run(ctx, cfg, log, app.WithVersion(version))
//	})
//
// Main stops on SIGINT/SIGTERM, exits 1 with one line naming the bad
// variables when the configuration does not load, builds the JSON logger at
// LOG_LEVEL, and exits 1 when run fails. The service's Config embeds
// [Config] (NATS, LOG_LEVEL, METRICS_ADDR and the standard OTEL_* export
// variables, read by [LoadConfig]).
//
// app.Run then calls [Run] with a setup func that declares the parts:
//
//	return service.Run(ctx, service.Options{Name: "event-tally", Version: v, Config: cfg.Config, Logger: log},
//		func(ctx context.Context, rt *service.Runtime) error {
//			t := tally.New()
//			rt.Router().Method(http.MethodGet, "/tally", t)
//			rt.Consume(cfg.Group, t.Handle)
//			return nil
//		})
//
// # Start-up
//
// Run sets up telemetry (telemetry.Setup), connects to NATS (waiting for the
// first connect, or not with Options.ConnectInBackground), registers the
// "nats" readiness check, and calls setup. Setup may block (creating
// streams, opening buckets) and may fail; a failure after ctx ended counts
// as a clean stop. Then the health server (/healthz, /readyz, /metrics and
// routes mounted on [Runtime.Router]) listens and every declared part runs.
//
// # Shutdown
//
// When ctx ends, a part fails or the NATS connection is closed for good
// (bus.OnClosed: nats.go will not reconnect it), every part's ctx is
// cancelled. Each part stops its own intake and finishes or releases its
// in-flight work within its grace (group.Run naks within Config.StopGrace;
// [Runtime.Serve] gives requests health.Graceful.Grace). Once all parts
// returned, Run runs the cleanups in reverse order, drains NATS (bus.Drain)
// and flushes telemetry, each bounded by Options.ShutdownTimeout. Run
// returns the first part's error joined with the cleanups' errors (after a
// connection closed for good, bus.ErrClosed with its cause first, so Main
// exits 1 and the process is restarted), or nil after a requested stop: the
// runtime's own drain never counts as a close. A telemetry flush that fails
// (the collector is gone) is logged as an error but not returned: it loses
// telemetry, not work, so Main still exits 0.
package service
