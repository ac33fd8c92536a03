// Package app wires agui-proxy: telemetry, NATS, the routing table watch,
// the proxy's HTTP server and the metrics/health server.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/telemetry"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/config"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/proxy"
)

// ServiceName names the service in telemetry and NATS.
const ServiceName = "agui-proxy"

// bucketRetry is the wait between attempts to open the runners bucket while
// it does not exist yet (runner-manager creates it).
const bucketRetry = time.Second

// App is a configured proxy with its listeners bound. Run it once.
type App struct {
	cfg       config.Config
	version   string
	log       *slog.Logger
	ln        net.Listener
	metricsLn net.Listener
	table     *registry.Table
	nc        chan *nats.Conn // buffered 1: the connection once made, for readiness
}

// New validates the wiring and binds the listeners (so ":0" addresses are
// resolved and a busy port fails here). It starts nothing.
func New(cfg config.Config, version string, log *slog.Logger) (*App, error) {
	if cfg.Auth == auth.ModeNone && !config.IsLoopback(cfg.ListenAddr) && !cfg.AuthAllowInsecure {
		return nil, fmt.Errorf("refusing to serve without authentication on %s: set %s", cfg.ListenAddr, config.EnvAuth)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.ListenAddr, err)
	}
	mln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		// The first listener is ours to close; its error changes nothing.
		_ = ln.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.MetricsAddr, err)
	}
	return &App{cfg: cfg, version: version, log: log, ln: ln, metricsLn: mln,
		table: registry.NewTable(), nc: make(chan *nats.Conn, 1)}, nil
}

// Addr is the proxy's bound address.
func (a *App) Addr() string { return a.ln.Addr().String() }

// MetricsAddr is the bound address of /healthz, /readyz and /metrics.
func (a *App) MetricsAddr() string { return a.metricsLn.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully: new connections
// stop, open streams get ShutdownTimeout to finish and are then ended
// cleanly, NATS is drained and telemetry flushed.
func (a *App) Run(ctx context.Context) (err error) {
	cfg, log := a.cfg, a.log
	defer func() {
		// Listeners may already be closed by the servers; errors are moot.
		_ = a.ln.Close()
		_ = a.metricsLn.Close()
	}()
	if cfg.CORSAllowsAny() {
		log.Warn("cors allows any origin", slog.String(logkey.Name, config.EnvCORSOrigins))
	}
	if cfg.Auth == auth.ModeNone && !config.IsLoopback(cfg.ListenAddr) {
		log.Warn("authentication disabled on a non-loopback address", slog.String(logkey.Addr, cfg.ListenAddr))
	}
	prov, shutdownTel, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: ServiceName, Version: a.version, OTLPEndpoint: cfg.OTLPEndpoint, Logger: log})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = errors.Join(err, shutdownTel(sctx))
	}()

	g, gctx := errgroup.WithContext(ctx)
	verifier, err := newVerifier(gctx, cfg, log)
	if err != nil {
		return err
	}
	p, err := proxy.New(proxy.Config{
		MaxBodyBytes:          cfg.MaxBodyBytes,
		SSEKeepAlive:          cfg.SSEKeepAlive,
		UpstreamTimeout:       cfg.UpstreamTimeout,
		UpstreamHeaderTimeout: cfg.UpstreamHeaderTimeout,
		DialTimeout:           cfg.UpstreamDialTimeout,
		Synced:                a.table.Ready,
		MeterProvider:         prov.MeterProvider,
		TracerProvider:        prov.TracerProvider,
	}, a.table, log)
	if err != nil {
		return err
	}
	if tf, ok := verifier.(*auth.TokenFile); ok && cfg.TokensReload > 0 {
		g.Go(func() error { return tf.Run(gctx, cfg.TokensReload) })
	}
	g.Go(func() error { return a.runTable(gctx) })
	g.Go(func() error { return p.Run(gctx) })
	g.Go(func() error {
		return serve(gctx, a.ln, a.server(newRouter(p, verifier, cfg.CORSOrigins, log)), cfg.ShutdownTimeout, log)
	})
	hs, err := health.New(health.Options{
		Addr:     cfg.MetricsAddr,
		Registry: prov.Registry,
		Checks: map[string]health.Check{
			"nats":          func(context.Context) error { return a.natsConnected() },
			"routing_table": func(context.Context) error { return a.tableSynced() },
		},
		Logger: log,
	})
	if err != nil {
		return fmt.Errorf("health server: %w", err)
	}
	g.Go(func() error { return hs.Serve(gctx, a.metricsLn) })
	log.Info("agui-proxy started", slog.String(logkey.Addr, a.Addr()), slog.String("metrics_addr", a.MetricsAddr()), slog.Any("config", cfg))
	return g.Wait()
}

// server is the proxy's http.Server. ReadTimeout and WriteTimeout protect
// short routes; streaming routes clear them per request (see package proxy).
func (a *App) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		ReadTimeout:       a.cfg.ReadTimeout,
		WriteTimeout:      a.cfg.WriteTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
}

// runTable connects to NATS, waits for the runners bucket and keeps the
// routing table in sync until ctx ends; NATS is drained on the way out.
func (a *App) runTable(ctx context.Context) error {
	nc, err := bus.Connect(ctx, a.cfg.NATS, a.log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("nats: %w", err)
	}
	a.nc <- nc
	defer func() {
		if err := nc.Drain(); err != nil {
			a.log.Warn("nats drain", slog.Any(logkey.Err, err))
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	kv, err := openBucket(ctx, js, a.cfg.RunnersBucket, a.log)
	if err != nil {
		return nil // ctx ended while waiting
	}
	a.log.Info("watching runner endpoints", slog.String("bucket", a.cfg.RunnersBucket))
	return a.table.Run(ctx, kv)
}

// openBucket returns the bucket once it exists; the proxy only reads it and
// never creates it with settings that could differ from the writer's.
func openBucket(ctx context.Context, js jetstream.JetStream, name string, log *slog.Logger) (jetstream.KeyValue, error) {
	warned := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := js.KeyValue(cctx, name)
		cancel()
		if err == nil {
			return kv, nil
		}
		if !warned {
			log.Warn("runners bucket not available yet, retrying", slog.String("bucket", name), slog.Any(logkey.Err, err))
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(bucketRetry):
		}
	}
}

// natsConnected is the "nats" readiness check.
func (a *App) natsConnected() error {
	select {
	case nc := <-a.nc:
		a.nc <- nc // put it back for the next check
		if !nc.IsConnected() {
			return errors.New("nats not connected")
		}
		return nil
	default:
		return errors.New("nats not connected yet")
	}
}

// tableSynced is the "routing_table" readiness check.
func (a *App) tableSynced() error {
	if !a.table.Ready() {
		if err := a.table.Err(); err != nil {
			return fmt.Errorf("routing table not synced: %w", err)
		}
		return errors.New("routing table not synced")
	}
	return nil
}

// Ready reports readiness as /readyz does: NATS connected and the routing
// table synced.
func (a *App) Ready() error { return errors.Join(a.natsConnected(), a.tableSynced()) }

// newVerifier builds the authenticator of cfg.Auth (nil for none).
func newVerifier(ctx context.Context, cfg config.Config, log *slog.Logger) (auth.Verifier, error) {
	switch cfg.Auth {
	case auth.ModeToken:
		t, err := auth.NewTokenFile(cfg.TokensFile, log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvTokensFile, err)
		}
		log.Info("bearer token auth", slog.Int(logkey.Count, t.Len()))
		return t, nil
	case auth.ModeJWT:
		j, err := auth.NewJWT(ctx, auth.JWTConfig{JWKSURL: cfg.JWKSURL.String(), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience}, log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvJWKSURL, err)
		}
		return j, nil
	default:
		return nil, nil
	}
}

// serve runs srv on ln until ctx ends, then shuts it down: in-flight
// requests get grace to finish; after that their contexts (BaseContext) are
// cancelled so streams end cleanly, and the server is closed.
func serve(ctx context.Context, ln net.Listener, srv *http.Server, grace time.Duration, log *slog.Logger) error {
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	srv.BaseContext = func(net.Listener) context.Context { return base }
	errc := make(chan error, 1) // Serve's result, read once
	// Owned by serve: Serve returns after Shutdown/Close below.
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	err := srv.Shutdown(sctx)
	cancel()
	if err != nil {
		log.Info("shutdown grace over, ending open streams", slog.String(logkey.Addr, ln.Addr().String()))
		cancelBase()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		err = srv.Shutdown(fctx)
		cancel()
		if err != nil {
			err = srv.Close()
		}
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("shutdown %s: %w", ln.Addr(), err)
	}
	return nil
}
