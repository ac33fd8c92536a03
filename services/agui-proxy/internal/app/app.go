// Package app declares agui-proxy's parts on the service runtime: the
// routing table kept in sync with the runners bucket, the proxy and its HTTP
// server, and the token file reloader.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/service"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/authz"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/config"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/proxy"
)

// ServiceName names the service in telemetry and NATS.
const ServiceName = "agui-proxy"

// bucketRetry is the wait between attempts to open the runners bucket while
// it does not exist yet (runner-manager creates it).
const bucketRetry = time.Second

// streamDrain bounds the wait for open streams to end once the shutdown
// grace is over and their contexts are cancelled.
const streamDrain = 2 * time.Second

// App is a configured proxy with its listeners bound. Run it once.
type App struct {
	cfg       config.Config
	version   string
	log       *slog.Logger
	ln        net.Listener
	metricsLn net.Listener
	table     *registry.Table
	kube      *rest.Config                     // from WithKubeConfig; nil: KUBECONFIG or in-cluster
	rt        atomic.Pointer[service.Runtime]  // set once Run has declared the parts
	authz     atomic.Pointer[authz.Authorizer] // set once Run built it (modes api, kube)
	// noBucket is set while the runners bucket does not exist: no
	// runner-manager has run yet (a kube-only installation has none), so
	// there is nothing to route and every session is unknown.
	noBucket atomic.Bool
	// reconnects are the NATS connection's, set by Run's setup before the
	// routing table's part starts (which reads it): the table reads the
	// bucket afresh after each reconnect (registry.WithReopen).
	reconnects *bus.Reconnects
	// js is the runtime's JetStream, set by Run's setup; bucketNudge makes
	// the opener try the runners bucket at once (routes.bucketAppeared).
	js          atomic.Pointer[jetstream.JetStream]
	bucketNudge chan struct{}
}

// minStreamRecheck is the shortest interval at which an open stream's
// request is authenticated and authorized again (proxy.Config.RecheckEvery):
// with AGUI_AUTHZ_CACHE_TTL=0 every check asks the authority.
const minStreamRecheck = time.Second

// routesReopenEvery bounds how long the routing table can keep a record
// released while its watch was away, when no reconnect told of it
// (registry.WithReopen): one read of the runners bucket per interval.
const routesReopenEvery = 30 * time.Second

// Option configures an App.
type Option func(*App)

// WithKubeConfig makes AGUI_AUTHZ=kube use cfg instead of KUBECONFIG or
// the in-cluster configuration (tests).
func WithKubeConfig(cfg *rest.Config) Option { return func(a *App) { a.kube = cfg } }

// New validates the wiring and binds the listeners (so ":0" addresses are
// resolved and a busy port fails here). It starts nothing.
func New(cfg config.Config, version string, log *slog.Logger, opts ...Option) (*App, error) {
	if cfg.Auth == auth.ModeNone && !config.IsLoopback(cfg.ListenAddr) && !cfg.AuthAllowInsecure {
		return nil, fmt.Errorf("refusing to serve without authentication on %s: set %s", cfg.ListenAddr, config.EnvAuth)
	}
	if cfg.Authz == authz.ModeNone && !config.IsLoopback(cfg.ListenAddr) && !cfg.AuthzAllowInsecure {
		return nil, fmt.Errorf("refusing to serve without authorization on %s: set %s", cfg.ListenAddr, config.EnvAuthz)
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
	a := &App{cfg: cfg, version: version, log: log, ln: ln, metricsLn: mln, bucketNudge: make(chan struct{}, 1)}
	for _, o := range opts {
		o(a)
	}
	// A session whose routing record goes away is decided afresh next time.
	a.table = registry.NewTable(registry.WithOnRemove(func(id string) {
		if z := a.authz.Load(); z != nil {
			z.Forget(id)
		}
	}), registry.WithReopen(func() <-chan struct{} { return a.reconnects.Next() }, routesReopenEvery),
		// Cut off from NATS longer than that, the proxy stops routing and
		// goes unready: runner-manager may have given a released session's
		// port to another session's runner (ROUTES_STALE_AFTER).
		registry.WithStaleAfter(cfg.RoutesStaleAfter))
	return a, nil
}

// Addr is the proxy's bound address.
func (a *App) Addr() string { return a.ln.Addr().String() }

// MetricsAddr is the bound address of /healthz, /readyz and /metrics.
func (a *App) MetricsAddr() string { return a.metricsLn.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully: after
// ShutdownDelay new connections stop, open streams get ShutdownTimeout to
// finish and are then ended (a run not finished by then gets a RUN_ERROR,
// code PROXY_SHUTDOWN, before its response's clean end), NATS is drained
// and telemetry flushed. It serves before NATS is
// reachable: the proxy routes from the table it has (none at first: 503).
func (a *App) Run(ctx context.Context) error {
	cfg, log := a.cfg, a.log
	defer func() {
		// The servers close the listeners; this covers a Run that failed
		// before serving, and a second close's error is moot.
		_ = a.ln.Close()
	}()
	if cfg.CORSAllowsAny() {
		log.Warn("cors allows any origin", slog.String(logkey.Name, config.EnvCORSOrigins))
	}
	if cfg.Auth == auth.ModeNone && !config.IsLoopback(cfg.ListenAddr) {
		log.Warn("authentication disabled on a non-loopback address", slog.String(logkey.Addr, cfg.ListenAddr))
	}
	if cfg.Authz == authz.ModeNone && !config.IsLoopback(cfg.ListenAddr) {
		log.Warn("authorization disabled on a non-loopback address: every caller reaches every session", slog.String(logkey.Addr, cfg.ListenAddr))
	}
	sopts := service.Options{Name: ServiceName, Version: a.version, Config: cfg.Config, Logger: log, ConnectInBackground: true, Listener: a.metricsLn}
	return service.Run(ctx, sopts, func(ctx context.Context, rt *service.Runtime) error {
		a.reconnects = rt.Reconnects() // before the routing table's part starts
		js := rt.JetStream()
		a.js.Store(&js)
		verifier, err := newVerifier(ctx, cfg, log)
		if err != nil {
			return err
		}
		tel := rt.Telemetry()
		pcfg := proxy.Config{
			MaxBodyBytes: cfg.MaxBodyBytes, SSEKeepAlive: cfg.SSEKeepAlive, UpstreamTimeout: cfg.UpstreamTimeout,
			UpstreamHeaderTimeout: cfg.UpstreamHeaderTimeout, DialTimeout: cfg.UpstreamDialTimeout,
			AllowedNetworks: cfg.RunnerNetworks, StreamWriteTimeout: cfg.StreamWriteTimeout, DetachedRunTimeout: cfg.DetachedRunTimeout,
			Synced: func() bool { return a.tableSynced() == nil }, MeterProvider: tel.MeterProvider, TracerProvider: tel.TracerProvider,
		}
		if verifier != nil {
			pcfg.Verifier = verifier
		}
		// Open streams are checked again as often as a decision is cached
		// (a revocation then ends them within about twice the TTL).
		pcfg.RecheckEvery = max(cfg.AuthzCacheTTL, minStreamRecheck)
		z, err := a.newAuthorizer(cfg, tel.MeterProvider)
		if err != nil {
			return err
		}
		if z != nil {
			a.authz.Store(z)
			pcfg.Authorizer = z // only when set: a nil *Authorizer in the interface would not be nil
		}
		p, err := proxy.New(pcfg, a.routes(), log)
		if err != nil {
			return err
		}
		if tf, ok := verifier.(*auth.TokenFile); ok && cfg.TokensReload > 0 {
			rt.Go("tokens", func(ctx context.Context) error { return tf.Run(ctx, cfg.TokensReload) })
		}
		router, err := newRouter(p, verifier, cfg.CORSOrigins, log)
		if err != nil {
			return err
		}
		srv := a.server(router)
		rt.Go("proxy", func(ctx context.Context) error { return a.serve(ctx, rt, p, srv) })
		rt.Check("routing_table", func(context.Context) error { return a.tableSynced() })
		a.rt.Store(rt)
		log.Info("agui-proxy started", slog.String(logkey.Addr, a.Addr()), slog.String("metrics_addr", a.MetricsAddr()), slog.Any("config", cfg))
		return nil
	})
}

// serve runs the proxy server until ctx ends and its graceful shutdown is
// over, and the routing table and the proxy's stream sweeper until then:
// requests accepted during SHUTDOWN_DELAY route by the current table, and
// a stream whose runner stops or moves during SHUTDOWN_TIMEOUT still ends
// with RUNNER_GONE. (As parts of their own they stopped with the stop
// signal, and for up to 30 s the proxy routed a frozen table: a released
// session still routed, a new one 503.) A routing table that fails stops
// the server, as a failing part stops the service.
func (a *App) serve(ctx context.Context, rt *service.Runtime, p *proxy.Proxy, srv *http.Server) error {
	routing, stopRouting := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRouting()
	serving, stopServing := context.WithCancel(ctx)
	defer stopServing()
	var g errgroup.Group
	g.Go(func() error {
		err := a.runTable(routing, rt.JetStream())
		if err != nil {
			stopServing()
			return fmt.Errorf("routing table: %w", err)
		}
		return nil
	})
	g.Go(func() error { return p.Run(routing) })
	err := health.Serve(serving, "proxy server", srv, a.ln, health.Graceful{Delay: a.cfg.ShutdownDelay, Grace: a.cfg.ShutdownTimeout, Drain: streamDrain}, rt.Logger())
	stopRouting()
	return errors.Join(g.Wait(), err)
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
		// Lets a stream cut by the end of the shutdown grace get its
		// RUN_ERROR instead of ending as if its client had left.
		ConnContext: proxy.ConnContext,
	}
}

// runTable waits for the runners bucket and keeps the routing table in
// sync until ctx ends.
func (a *App) runTable(ctx context.Context, js jetstream.JetStream) error {
	kv, err := openBucket(ctx, js, a.cfg.RunnersBucket, a.log, a.noBucket.Store, a.bucketNudge)
	a.noBucket.Store(false)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the bucket
		}
		return fmt.Errorf("%s %q: %w", config.EnvRunnersBucket, a.cfg.RunnersBucket, err)
	}
	a.log.Info("watching runner endpoints", slog.String("bucket", a.cfg.RunnersBucket))
	return a.table.Run(ctx, kv)
}

// openBucket returns the bucket once it exists; the proxy only reads it and
// never creates it with settings that could differ from the writer's. It
// tries every bucketRetry, and at once when nudge has a value (a request
// found the bucket there: routes.bucketAppeared). It fails when ctx ends,
// or at once for a name JetStream refuses or a stream of that name that is
// not a KV bucket: waiting would never end, and the proxy would stay
// unready without saying why. absent is told whether the last try found
// no bucket at all.
func openBucket(ctx context.Context, js jetstream.JetStream, name string, log *slog.Logger, absent func(bool), nudge <-chan struct{}) (jetstream.KeyValue, error) {
	warned := false
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open runners bucket: %w", ctx.Err())
		case <-retry.C:
		case <-nudge:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := js.KeyValue(cctx, name)
		cancel()
		absent(errors.Is(err, jetstream.ErrBucketNotFound))
		switch {
		case err == nil:
			return kv, nil
		case errors.Is(err, jetstream.ErrInvalidBucketName), errors.Is(err, jetstream.ErrBadBucket):
			return nil, fmt.Errorf("open runners bucket: %w", err)
		case !warned && ctx.Err() == nil:
			log.Warn("runners bucket not available yet, retrying", slog.String("bucket", name), slog.Any(logkey.Err, err))
			warned = true
		}
		retry.Reset(bucketRetry)
	}
}

// routes returns the proxy's Resolver (see routes).
func (a *App) routes() *routes {
	return &routes{
		table:  a.table,
		absent: a.noBucket.Load,
		js: func() jetstream.JetStream {
			if p := a.js.Load(); p != nil {
				return *p
			}
			return nil
		},
		bucket: a.cfg.RunnersBucket,
		nudge:  a.bucketNudge,
	}
}

// tableSynced is the "routing_table" readiness check: synced and not
// stale (registry.Table.Fresh). A bucket that does
// not exist yet is an empty table, not an unsynced one: the proxy answers
// every session with 404 as it should, and an installation without
// runner-manager (kube mode, the chart's default) must not keep it unready
// forever. The bucket is opened and watched as soon as it appears.
func (a *App) tableSynced() error {
	if a.noBucket.Load() {
		return nil
	}
	if !a.table.Ready() {
		if err := a.table.Err(); err != nil {
			return fmt.Errorf("routing table not synced: %w", err)
		}
		return errors.New("routing table not synced")
	}
	// A stale table routes nothing: a load balancer should send the
	// traffic to a replica that can see NATS.
	if err := a.table.Fresh(); err != nil {
		return fmt.Errorf("routing table: %w", err)
	}
	return nil
}

// Ready reports readiness as /readyz does: NATS connected and the routing
// table synced. It is safe for concurrent use.
func (a *App) Ready(ctx context.Context) error {
	rt := a.rt.Load()
	if rt == nil {
		return errors.New("not started")
	}
	return rt.Ready(ctx)
}

// newAuthorizer builds the authority of cfg.Authz (nil for none).
func (a *App) newAuthorizer(cfg config.Config, mp metric.MeterProvider) (*authz.Authorizer, error) {
	zc := authz.Config{CacheTTL: cfg.AuthzCacheTTL, CacheSize: cfg.AuthzCacheSize, Timeout: cfg.AuthzTimeout, MeterProvider: mp, Log: a.log}
	switch cfg.Authz {
	case authz.ModeAPI:
		if cfg.APIURL.Scheme != "https" && !config.IsLoopbackHost(cfg.APIURL.Hostname()) {
			a.log.Warn("callers' tokens go to the ambient API over plain http", slog.String("url", cfg.APIURL.Redacted()))
		}
		z, err := authz.NewAPI(authz.APIConfig{URL: cfg.APIURL}, zc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvAPIURL, err)
		}
		return z, nil
	case authz.ModeKube:
		rc := a.kube
		if rc == nil {
			var err error
			// An empty KUBECONFIG means the in-cluster configuration.
			if rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig); err != nil {
				return nil, fmt.Errorf("%s: %w", config.EnvKubeconfig, err)
			}
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
		return authz.NewKube(authz.KubeConfig{Client: cs, DefaultNamespace: cfg.Namespace, Instance: cfg.Instance}, zc)
	default:
		return nil, nil
	}
}

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
		j, err := auth.NewJWT(ctx, auth.JWTConfig{JWKSURL: cfg.JWKSURL.String(), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience,
			UsernameClaim: cfg.JWTUsernameClaim, GroupsClaim: cfg.JWTGroupsClaim}, log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.EnvJWKSURL, err)
		}
		return j, nil
	default:
		return nil, nil
	}
}
