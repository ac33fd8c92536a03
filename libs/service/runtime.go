package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/telemetry"
)

// DefaultShutdownTimeout bounds each shutdown step after the parts stopped:
// the cleanups, the NATS drain, the telemetry flush.
const DefaultShutdownTimeout = 10 * time.Second

// DefaultPublishAsyncTimeout bounds the wait for the ack of an asynchronous
// JetStream publish (see Options.PublishAsyncTimeout).
const DefaultPublishAsyncTimeout = 10 * time.Second

// CheckNATS is the readiness check every service gets.
const CheckNATS = "nats"

// ErrInvalidOptions is returned by [Run] for options it cannot use and for
// declarations setup got wrong (a duplicate part or check name, a part
// declared after start).
var ErrInvalidOptions = errors.New("invalid service options")

// Options configures [Run].
type Options struct {
	// Name is the service's name in telemetry and logs. Required.
	Name string
	// Version is the build version reported in telemetry.
	Version string
	// Config is the service's runtime configuration (see LoadConfig).
	Config Config
	// Logger receives the runtime's logs; nil discards them.
	Logger *slog.Logger
	// ConnectInBackground runs setup and serves before NATS is reachable;
	// the "nats" check fails until the first connect and only then: a
	// later outage leaves readiness to the service's own checks, because
	// such a service keeps working without NATS (agui-proxy routes from its
	// last table) and failing readiness would take it out of its Service
	// for the whole outage. Parts get the connection at once and must
	// retry what needs NATS. Without it Run waits for the first connect and
	// fails with bus.ErrNotConnected if ctx ends first, and "nats" fails
	// whenever the connection is down.
	ConnectInBackground bool
	// Connected, when set, is called with the NATS connection before setup
	// (tests cut it to simulate a crash).
	Connected func(nc *nats.Conn)
	// Listener, when set, is the health server's listener, bound by the
	// caller (so a busy port fails before Run); Run closes it. Nil: Run
	// listens on Config.MetricsAddr.
	Listener net.Listener
	// Listening, when set, is called with the health server's address once
	// it listens (tests start it on port 0).
	Listening func(addr net.Addr)
	// ShutdownTimeout bounds each shutdown step (0: DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// PublishAsyncTimeout fails an asynchronous publish whose ack has not
	// come after this long (0: DefaultPublishAsyncTimeout). nats.go waits
	// forever by default, and an ack lost without a disconnect (a
	// stream leader changing under it) then never resolves: whoever waits
	// on it in order, as the informer's KV check does, stalls for good.
	PublishAsyncTimeout time.Duration
}

// Runtime is what setup declares a service's parts on, and what the parts
// get their shared handles from. Declarations (Go, Serve, Consume, Cleanup)
// belong in setup; Check and Ready are safe for concurrent use at any time.
// A declaration problem found once the parts run (Go, Serve or Consume
// called after setup returned, a bad or duplicate Check name) is a
// programming error: it stops the service and Run returns it, wrapping
// ErrInvalidOptions.
type Runtime struct {
	name   string
	log    *slog.Logger
	tel    telemetry.Providers
	nc     *nats.Conn
	recon  *bus.Reconnects
	js     jetstream.JetStream
	health *health.Server

	mu       sync.Mutex
	parts    []part          // guarded by mu
	cleanups []func() error  // guarded by mu
	names    map[string]bool // guarded by mu: part names declared
	errs     []error         // guarded by mu: declaration problems, returned by Run
	started  bool            // guarded by mu: parts are running, Go is refused
	// failed is closed at the first declaration problem after start:
	// setup's problems are returned before anything runs, but a late one
	// would otherwise sit in errs, read by nobody, while the part it
	// declared never runs. Closed under mu, once (failing).
	failed  chan struct{}
	failing bool // guarded by mu: failed is closed
}

// part is one long-running component of the service.
type part struct {
	name string
	run  func(ctx context.Context) error
}

// Run starts the service described by opts, lets setup declare its parts
// on the Runtime, serves health and runs every part until ctx ends (nil), a
// part fails (its error, prefixed with the part's name) or nats.go closes
// the NATS connection for good (bus.ErrClosed). See the package doc for the
// start-up and shutdown order; a failed telemetry flush at the end is
// logged, never returned. Errors wrap ErrInvalidOptions for bad options or
// declarations, bus.ErrNotConnected when ctx ends before NATS is reached,
// bus.ErrClosed, or come from setup or a part.
func Run(ctx context.Context, opts Options, setup func(ctx context.Context, rt *Runtime) error) (err error) {
	if opts.Name == "" || setup == nil {
		return fmt.Errorf("service name and setup are required: %w", ErrInvalidOptions)
	}
	if opts.Listener != nil {
		// Serve closes it once serving; this covers a Run that fails before.
		// Closing it twice only returns "use of closed network connection".
		defer opts.Listener.Close() //nolint:errcheck // see above
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	grace := opts.ShutdownTimeout
	if grace <= 0 {
		grace = DefaultShutdownTimeout
	}
	bounded := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), grace)
	}

	tel, flush, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: opts.Name, Version: opts.Version, Export: opts.Config.Telemetry, Logger: log})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() { // last: telemetry from the shutdown itself is flushed too
		fctx, cancel := bounded()
		defer cancel()
		// Logged, not returned: the work is done and NATS drained, and a
		// collector that left before the pod (it is shut down too) must
		// not make a clean stop exit 1 and look like a crash.
		if ferr := flush(fctx); ferr != nil {
			log.Error("telemetry flush failed", slog.Any(logkey.Err, ferr))
		}
	}()

	nc, connected, err := connect(ctx, opts, log)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer func() {
		dctx, cancel := bounded()
		defer cancel()
		// The parts have stopped; a drain that falls short loses nothing
		// they still wait for, so it is logged, not returned.
		if derr := bus.Drain(dctx, nc); derr != nil {
			log.Warn("nats drain fell short", slog.Any(logkey.Err, derr))
		}
	}()
	// A connection nats.go closed for good (see bus.OnClosed) never comes
	// back, and /healthz checks only that HTTP is served: the service would
	// live on, unready, doing nothing. Stop it with the cause instead, so
	// the process exits 1 and is restarted. Cancelled at the latest before
	// the drain (deferred after it), so the runtime's own close never
	// counts.
	ctx, stopClosed := context.WithCancelCause(ctx)
	defer stopClosed(nil)
	bus.OnClosed(nc, func(err error) {
		if ctx.Err() == nil {
			log.Error("nats connection closed for good, stopping the service", slog.Any(logkey.Err, err))
		}
		stopClosed(err)
	})
	recon := bus.WatchReconnects(nc)
	if opts.Connected != nil {
		opts.Connected(nc)
	}
	asyncTimeout := opts.PublishAsyncTimeout
	if asyncTimeout <= 0 {
		asyncTimeout = DefaultPublishAsyncTimeout
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(asyncTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	hs, err := health.New(health.Options{Addr: opts.Config.MetricsAddr, Registry: tel.Registry, Logger: log, Checks: map[string]health.Check{CheckNATS: natsCheck(nc, connected)}})
	if err != nil {
		return fmt.Errorf("health server: %w", err)
	}
	rt := &Runtime{name: opts.Name, log: log, tel: tel, nc: nc, recon: recon, js: js, health: hs, names: map[string]bool{}, failed: make(chan struct{})}
	defer func() { err = errors.Join(err, rt.cleanup()) }()

	if err := setup(ctx, rt); err != nil {
		if ctx.Err() != nil {
			return closedCause(ctx) // nil: asked to stop while setting up
		}
		return err
	}
	parts, err := rt.start()
	if err != nil {
		return err
	}
	ln := opts.Listener
	if ln == nil {
		if ln, err = hs.Listen(ctx); err != nil {
			return err
		}
	}
	if opts.Listening != nil {
		opts.Listening(ln.Addr())
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Serve(gctx, ln) })
	// A declaration made too late stops the service like a failing part,
	// so the caller sees it in Run's error (see Runtime).
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-rt.failed:
			return rt.lateErr()
		}
	})
	for _, p := range parts {
		g.Go(func() error {
			if err := p.run(gctx); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			return nil
		})
	}
	log.Info("service started", slog.String(logkey.Service, opts.Name), slog.String(logkey.Version, opts.Version), slog.Int(logkey.Count, len(parts)))
	err = g.Wait()
	log.Info("service stopping", slog.String(logkey.Service, opts.Name))
	// First: a part that failed on the closed connection only shows the
	// consequence.
	return errors.Join(closedCause(ctx), err)
}

// closedCause is why ctx ended when the NATS connection closed for good
// (bus.ErrClosed with its cause), or nil: not ended, or a requested stop.
func closedCause(ctx context.Context) error {
	if cause := context.Cause(ctx); errors.Is(cause, bus.ErrClosed) {
		return cause
	}
	return nil
}

// connect dials NATS and, unless opts says otherwise, waits for the first
// connect; in the background mode connected is closed by the first
// connect (nil otherwise: the connect is behind us).
func connect(ctx context.Context, opts Options, log *slog.Logger) (nc *nats.Conn, connected <-chan struct{}, err error) {
	if !opts.ConnectInBackground {
		nc, err = bus.Connect(ctx, opts.Config.NATS, log)
		return nc, nil, err
	}
	return bus.Dial(opts.Config.NATS, log)
}

// natsCheck is the "nats" readiness check: it fails while nc is not
// connected or, with a connected channel (Options.ConnectInBackground),
// only until the first connect closes it.
func natsCheck(nc *nats.Conn, connected <-chan struct{}) health.Check {
	return func(context.Context) error {
		if connected != nil {
			select {
			case <-connected:
				return nil
			default:
			}
		}
		if !nc.IsConnected() {
			return fmt.Errorf("nats %s", nc.Status())
		}
		return nil
	}
}

// Logger is the service's logger.
func (rt *Runtime) Logger() *slog.Logger { return rt.log }

// Telemetry returns the tracer and meter providers, the service's Meter
// and Tracer, and the Prometheus registry /metrics serves.
func (rt *Runtime) Telemetry() telemetry.Providers { return rt.tel }

// NATS is the service's one NATS connection; the runtime drains it after
// the parts stopped. Parts must not close it.
func (rt *Runtime) NATS() *nats.Conn { return rt.nc }

// Reconnects tells of NATS()'s reconnects (KV watches that must read their
// bucket afresh after one: bus.KVWatch.Reopen).
func (rt *Runtime) Reconnects() *bus.Reconnects { return rt.recon }

// JetStream is the JetStream context of NATS().
func (rt *Runtime) JetStream() jetstream.JetStream { return rt.js }

// Router is the health server's router: mount the service's own
// operational routes (event-tally's /tally) during setup.
func (rt *Runtime) Router() chi.Router { return rt.health.Router() }

// Go declares a part: run is started after setup with a ctx that ends when
// the service stops, and must return once it has stopped its intake and
// finished or released its in-flight work. An error stops the service.
// Names label errors and must be unique.
func (rt *Runtime) Go(name string, run func(ctx context.Context) error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch {
	case rt.started:
		rt.invalidLocked(fmt.Errorf("part %q declared after start, not run", name))
	case name == "" || run == nil || rt.names[name]:
		rt.invalidLocked(fmt.Errorf("part %q: empty, nil or duplicate", name))
	default:
		rt.names[name] = true
		rt.parts = append(rt.parts, part{name: name, run: run})
	}
}

// Serve declares an HTTP server on ln as a part (agui-proxy's proxy): it
// serves until the service stops, then shuts down as health.Serve does
// with g (in-flight requests get g.Grace, then their contexts end).
func (rt *Runtime) Serve(name string, srv *http.Server, ln net.Listener, g health.Graceful) {
	rt.Go(name, func(ctx context.Context) error { return health.Serve(ctx, name, srv, ln, g, rt.log) })
}

// Check adds a readiness check to /readyz, also while the service runs. A
// bad or duplicate name is returned by Run (after start, by stopping the
// service: see Runtime).
func (rt *Runtime) Check(name string, check health.Check) {
	if err := rt.health.AddCheck(name, check); err != nil {
		rt.invalid(err)
	}
}

// invalid records a declaration problem for Run to return.
func (rt *Runtime) invalid(err error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.invalidLocked(err)
}

// invalidLocked is invalid with rt.mu held. After start it also stops the
// running service (see failed).
func (rt *Runtime) invalidLocked(err error) {
	err = fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	rt.errs = append(rt.errs, err)
	if !rt.started {
		return
	}
	rt.log.Error("declaration after start, stopping the service", slog.Any(logkey.Err, err))
	if !rt.failing {
		rt.failing = true
		close(rt.failed)
	}
}

// declaring reports whether the parts have not started yet; once they
// have, it records what was declared too late, which stops the service.
// Declarations with side effects beyond the part (Consume's check and
// metrics) ask first, so a late one leaves nothing behind.
func (rt *Runtime) declaring(what string) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.started {
		rt.invalidLocked(fmt.Errorf("%s declared after start, not run", what))
		return false
	}
	return true
}

// lateErr returns the declaration problems found after start.
func (rt *Runtime) lateErr() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return errors.Join(rt.errs...)
}

// Cleanup registers fn to run after every part stopped and before NATS is
// drained (closing an API client); cleanups run in reverse order of
// registration, even when setup failed, and their errors are returned by
// Run.
func (rt *Runtime) Cleanup(fn func() error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.cleanups = append(rt.cleanups, fn)
}

// Ready runs every readiness check, as /readyz does, and returns nil when
// all pass or an error naming each failing check.
func (rt *Runtime) Ready(ctx context.Context) error {
	rep := rt.health.Readiness(ctx)
	if rep.Status == health.StatusOK {
		return nil
	}
	msgs := make([]string, 0, len(rep.Failing))
	for _, name := range rep.Failing {
		msgs = append(msgs, name+": "+rep.Checks[name].Error)
	}
	sort.Strings(msgs)
	return fmt.Errorf("not ready: %s", strings.Join(msgs, "; "))
}

// start closes the declarations and returns the parts, or the declaration
// problems.
func (rt *Runtime) start() ([]part, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.started = true
	if err := errors.Join(rt.errs...); err != nil {
		return nil, err
	}
	return rt.parts, nil
}

// cleanup runs the cleanups in reverse order and joins their errors.
func (rt *Runtime) cleanup() error {
	rt.mu.Lock()
	fns := rt.cleanups
	rt.cleanups = nil
	rt.mu.Unlock()
	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		errs = append(errs, fns[i]())
	}
	return errors.Join(errs...)
}
