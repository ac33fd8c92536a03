// Package reconcile drives local runner processes from session events: it
// claims a session in the runner registry (exactly one owner), starts the
// runner through the process manager, registers its endpoint for the proxy,
// reports phases and conditions to the API, and recovers sessions whose
// owner died.
//
// The rules are level-based: a handler re-reads the session from the API
// before it acts on anything that could be stale (a spawn, a stop), so
// duplicate, replayed and echoed events change nothing.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/registry"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// Lost-runner policies: what happens to a session whose runner died with its
// runner-manager replica (or whose replica shut down).
const (
	// LostRestart starts a fresh runner (phase Creating -> Running again).
	LostRestart = "restart"
	// LostFail marks the session Failed with reason RunnerLost.
	LostFail = "fail"
)

// Config of a Reconciler.
type Config struct {
	// Member is this replica's stable id; it owns the claims it makes.
	Member string
	// AdvertiseHost is the runner host written to the registry, reachable
	// by agui-proxy.
	AdvertiseHost string
	Selector      Selector
	Health        runner.HealthPolicy
	// StopGrace is the SIGTERM -> SIGKILL grace.
	StopGrace time.Duration
	// SweepInterval is how often claims are checked for dead owners and
	// lost ownership.
	SweepInterval time.Duration
	// LostPolicy is LostRestart or LostFail.
	LostPolicy string
	// ResyncInterval is how often the session list is read from the API to
	// start Pending sessions no event started (deferred for capacity, or
	// whose events were dead-lettered) and to find Creating/Running
	// sessions with no runner anywhere. 0 disables it.
	ResyncInterval time.Duration
}

// sessionAPI is what the reconciler needs from the ambient API.
type sessionAPI interface {
	GetSession(ctx context.Context, id string) (*ambientv1.Session, error)
	UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
	ListSessions(ctx context.Context) ([]*ambientv1.Session, error)
}

// liveness tells whether a runner-manager replica is alive.
type liveness interface {
	Alive(ctx context.Context, member string) (bool, error)
}

// Deps are the reconciler's collaborators. Meter and Tracer may be nil.
type Deps struct {
	API     sessionAPI
	Runners jetstream.KeyValue
	Members liveness
	Manager *runner.Manager
	Meter   metric.Meter
	Tracer  trace.Tracer
	Log     *slog.Logger
}

// Reconciler runs the sessions selected for this deployment. Handle is safe
// for concurrent use; Run must be running while Handle is called.
type Reconciler struct {
	cfg     Config
	api     sessionAPI
	kv      jetstream.KeyValue
	members liveness
	mgr     *runner.Manager
	metrics *metrics
	tracer  trace.Tracer
	log     *slog.Logger
	http    *http.Client

	locks keyedMutex
	wg    sync.WaitGroup // one per supervisor goroutine
	kick  chan struct{}  // capacity freed; buffered 1 so a kick is never lost nor blocks

	// life guards closing: handlers hold it shared while they spawn, Run
	// takes it exclusively to stop intake, so no runner starts after
	// StopAll has taken its snapshot.
	life       sync.RWMutex
	closing    bool          // guarded by life
	shutdownCh chan struct{} // closed when Run starts shutting down

	mu      sync.Mutex
	runs    map[string]*run      // guarded by mu; local runners by session id
	waiting map[string]time.Time // guarded by mu; sessions deferred for capacity
}

// New validates cfg and returns a reconciler. It starts nothing.
func New(cfg Config, d Deps) (*Reconciler, error) {
	var errs []error
	if cfg.Member == "" {
		errs = append(errs, errors.New("member is empty"))
	}
	if cfg.AdvertiseHost == "" {
		errs = append(errs, errors.New("advertise host is empty"))
	}
	if cfg.LostPolicy != LostRestart && cfg.LostPolicy != LostFail {
		errs = append(errs, fmt.Errorf("lost policy %q: want %s or %s", cfg.LostPolicy, LostRestart, LostFail))
	}
	if cfg.Health.Interval <= 0 || cfg.Health.Attempts < 1 || cfg.StopGrace <= 0 || cfg.SweepInterval <= 0 {
		errs = append(errs, errors.New("health interval, attempts, stop grace and sweep interval must be positive"))
	}
	if d.API == nil || d.Runners == nil || d.Members == nil || d.Manager == nil || d.Log == nil {
		errs = append(errs, errors.New("api, runners bucket, members, manager and log are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	if cfg.Health.Host == "" {
		cfg.Health.Host = "127.0.0.1"
	}
	if d.Tracer == nil {
		d.Tracer = noop.NewTracerProvider().Tracer("runner-manager")
	}
	r := &Reconciler{
		cfg: cfg, api: d.API, kv: d.Runners, members: d.Members, mgr: d.Manager, tracer: d.Tracer, log: d.Log,
		// No keep-alives: a runner's idle health connection must not delay
		// its shutdown.
		http:       &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		kick:       make(chan struct{}, 1),
		shutdownCh: make(chan struct{}),
		runs:       map[string]*run{},
		waiting:    map[string]time.Time{},
	}
	m, err := newMetrics(d.Meter, gauges{
		runnersByState: r.runnersByState,
		portsInUse:     d.Manager.Pool().InUse,
		portsTotal:     d.Manager.Pool().Size,
	})
	if err != nil {
		return nil, fmt.Errorf("reconciler metrics: %w", err)
	}
	r.metrics = m
	return r, nil
}

// Run keeps claims healthy (sweeps for dead owners, watches its records for
// stop requests) until ctx ends, then shuts down: no new runners start,
// every runner gets SIGTERM (SIGKILL after the grace), each session gets its
// final phase, and Run returns after all supervisors finished.
func (r *Reconciler) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.watchRecords(gctx) })
	g.Go(func() error { return r.loop(gctx) })
	err := g.Wait()

	r.life.Lock()
	r.closing = true
	close(r.shutdownCh)
	r.life.Unlock()
	n := r.mgr.Count()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.StopGrace+5*time.Second)
	defer cancel()
	stopErr := r.mgr.StopAll(sctx)
	r.wg.Wait()
	r.mgr.Wait()
	r.log.Info("runners stopped", slog.Int("count", n))
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return errors.Join(err, stopErr)
}

// loop runs the periodic sweep and starts deferred sessions when capacity
// frees up.
func (r *Reconciler) loop(ctx context.Context) error {
	r.sweep(ctx) // at start-up: recover claims left by a previous incarnation
	t := time.NewTicker(r.cfg.SweepInterval)
	defer t.Stop()
	var resync <-chan time.Time // nil (never fires) when disabled
	if r.cfg.ResyncInterval > 0 {
		rt := time.NewTicker(r.cfg.ResyncInterval)
		defer rt.Stop()
		resync = rt.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.sweep(ctx)
		case <-resync:
			r.resync(ctx)
		case <-r.kick:
			r.startWaiting(ctx)
		}
	}
}

// Ready reports whether the reconciler accepts work.
func (r *Reconciler) Ready() bool {
	r.life.RLock()
	defer r.life.RUnlock()
	return !r.closing
}

func (r *Reconciler) localRun(id string) *run {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

func (r *Reconciler) runnersByState() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{registry.StateStarting: 0, registry.StateRunning: 0, registry.StateStopping: 0}
	for _, rn := range r.runs {
		out[rn.getState()]++
	}
	return out
}

func (r *Reconciler) signalKick() {
	select {
	case r.kick <- struct{}{}:
	default: // a kick is already pending
	}
}
