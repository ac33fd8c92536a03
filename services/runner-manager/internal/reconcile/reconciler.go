// Package reconcile decides what runner-manager does with each session:
// start a runner, stop it, take over a claim whose owner is gone, heal a
// phase written over a live runner, or nothing. [Reconciler.Handle] is the
// consumer-group handler; the sweep and the resync make the same decisions
// for what no event reports (dead owners, missed events, capacity freed).
// The work itself is other packages': claim (the runner registry),
// supervise (one runner from spawn to exit), status (phase and condition
// writes), capacity (sessions waiting for a slot).
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/capacity"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/passlog"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
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
	// Selector picks the sessions this deployment runs.
	Selector session.Selector
	Health   runner.HealthPolicy
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
	// CheckInterval is how often the session of every local runner is read
	// from the API (one read per runner), so a session deleted or ended
	// without any event reaching this replica (created and deleted while
	// no informer led, a dead-lettered DELETED) stops its runner within
	// this interval rather than the resync's. 0 disables it.
	CheckInterval time.Duration
	// MarkerTTL, when > 0, is how long the marker of a released claim
	// stays in the registry bucket (which needs LimitMarkerTTL); 0 leaves
	// delete markers for ever.
	MarkerTTL time.Duration
}

// sessionAPI is what the reconciler needs from the ambient API.
type sessionAPI interface {
	GetSession(ctx context.Context, id string) (*ambientv1.Session, error)
	UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
	ListSessions(ctx context.Context) ([]*ambientv1.Session, error)
}

// Deps are the reconciler's collaborators. Meter and Tracer may be nil.
type Deps struct {
	API sessionAPI
	// Runners is the runner registry bucket (KV ambient-runners).
	Runners jetstream.KeyValue
	// Members answers whether other replicas are alive.
	Members *claim.Members
	// Reconnects, when set, tell of the NATS connection's reconnects (a
	// *bus.Reconnects) and of anything else after which the claims watch
	// must read the bucket afresh (claim.WithWatchReopen): runner-manager
	// adds the re-creation of a lost bucket, whose old watch goes silent
	// without an error.
	Reconnects interface{ Next() <-chan struct{} }
	Manager    *runner.Manager
	Meter      metric.Meter
	Tracer     trace.Tracer
	Log        *slog.Logger
}

// Reconciler runs the sessions selected for this deployment. Handle is safe
// for concurrent use; Run must be running while Handle is called.
type Reconciler struct {
	cfg     Config
	api     sessionAPI
	claims  *claim.Claims
	sup     *supervise.Supervisor
	status  *status.Writer
	queue   *capacity.Queue
	metrics *metrics
	tracer  trace.Tracer
	log     *slog.Logger
	mgr     *runner.Manager // for the workspaces of deleted sessions (workspaces.go)
	starts  sync.WaitGroup  // one per start finishing on its own goroutine (goStart)
	// starting counts the starts handed to a goroutine that have not
	// finished (goStart): their runners may not hold a slot yet, so
	// startWaiting leaves that many slots to them.
	starting atomic.Int64
	// projectStarts counts the queued starts in flight per project, for
	// LOCAL_MAX_SESSIONS_PER_PROJECT (startWaiting).
	projectStarts *projectStarts
	// checkFails is the runner check's log state (checkRunners); the
	// loop goroutine's alone.
	checkFails passlog.Log
	// repos is what each local runner has of its session's repos
	// (repos.go).
	repos *runnerRepos
	// cooled wakes the queue when a port that waits out PORT_REUSE_DELAY
	// is reusable again (coolwake.go).
	cooled *coolWake
}

// claimsReopenEvery bounds how long the claims index can keep a record a
// peer released while this replica's watch was away, when no reconnect
// told of it (claim.WithWatchReopen): one read of the bucket per interval.
const claimsReopenEvery = time.Minute

// startWaitMargin is what a peer waits, beyond the start deadline (the
// health deadline) and one health interval, before it takes over a record
// whose runner may still be starting (a claim without a runner address,
// or a runner not yet healthy) and whose owner is gone
// (claim.WithStartWait). The owner kills a runner it could not register
// by the deadline, counted from the claim, or that is not healthy by the
// deadline, counted from the spawn (supervise); the peer counts from its
// first sighting of the record's revision, after the claim's write or the
// registration's (after the spawn). The interval covers the last health
// probe, which may end that long after the deadline; the margin covers a
// spawn that began just before the registration deadline (a port pool
// that reads the registry, bounded by 2 s) and the kill.
const startWaitMargin = 5 * time.Second

// New validates cfg and returns a reconciler. It starts nothing.
func New(cfg Config, d Deps) (*Reconciler, error) {
	var errs []error
	if cfg.Member == "" {
		errs = append(errs, errors.New("member is empty"))
	}
	if cfg.LostPolicy != LostRestart && cfg.LostPolicy != LostFail {
		errs = append(errs, fmt.Errorf("lost policy %q: want %s or %s", cfg.LostPolicy, LostRestart, LostFail))
	}
	if cfg.SweepInterval <= 0 {
		errs = append(errs, errors.New("sweep interval must be positive"))
	}
	if d.API == nil || d.Runners == nil || d.Members == nil || d.Manager == nil || d.Log == nil {
		errs = append(errs, errors.New("api, runners bucket, members, manager and log are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	if d.Tracer == nil {
		d.Tracer = noop.NewTracerProvider().Tracer("runner-manager")
	}
	r := &Reconciler{cfg: cfg, api: d.API, queue: capacity.New(), projectStarts: newProjectStarts(), repos: newRunnerRepos(), tracer: d.Tracer, log: d.Log,
		checkFails: passlog.Log{What: "runner check: sessions could not be read", Recovered: "runner check: sessions read again", TriedKey: "runners"}}
	var err error
	if r.status, err = status.New(d.API, d.Meter); err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	var reopen func() <-chan struct{}
	if d.Reconnects != nil {
		reopen = d.Reconnects.Next
	}
	copts := []claim.Option{claim.WithWatchReopen(reopen, claimsReopenEvery),
		claim.WithStartWait(cfg.Health.Deadline() + cfg.Health.Interval + startWaitMargin)}
	if cfg.MarkerTTL > 0 {
		copts = append(copts, claim.WithMarkerTTL(cfg.MarkerTTL))
	}
	if r.claims, err = claim.New(d.Runners, cfg.Member, d.Members, d.Log, copts...); err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	r.sup, err = supervise.New(supervise.Config{
		AdvertiseHost: cfg.AdvertiseHost, Health: cfg.Health, StopGrace: cfg.StopGrace,
		HandBack: cfg.LostPolicy == LostRestart, Freed: r.queue.Freed,
	}, supervise.Deps{Manager: d.Manager, Claims: r.claims, Status: r.status, Meter: d.Meter, Log: d.Log})
	if err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	if r.metrics, err = newMetrics(d.Meter); err != nil {
		return nil, fmt.Errorf("reconciler metrics: %w", err)
	}
	r.mgr = d.Manager
	r.cooled = newCoolWake(r.queue.Freed)
	return r, nil
}

// Run keeps claims healthy (sweeps for dead owners, watches the records for
// stop requests and takeovers) and starts queued sessions as capacity frees
// up, until ctx ends; then it shuts down: no new runners start, every
// runner gets SIGTERM (SIGKILL after the grace), each session gets its
// final phase, and Run returns after all supervisors finished.
func (r *Reconciler) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.claims.Watch(gctx, r.onRecord) })
	g.Go(func() error { return r.loop(gctx) })
	err := g.Wait()
	r.starts.Wait()
	r.cooled.stop() // after the starts: none of them arms it again
	return errors.Join(err, r.sup.Shutdown(ctx))
}

// loop runs the periodic sweep, resync and runner check, and starts queued sessions when
// capacity frees up.
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
	var check <-chan time.Time // nil (never fires) when disabled
	if r.cfg.CheckInterval > 0 {
		ct := time.NewTicker(r.cfg.CheckInterval)
		defer ct.Stop()
		check = ct.C
	}
	// Sessions the resync would start, started from a read of their own
	// once resyncStartDelay has passed (confirmStarts).
	var starts []string
	var confirm <-chan time.Time // nil while starts is empty
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.sweep(ctx)
		case <-resync:
			if ids := r.resync(ctx); len(ids) > 0 {
				if confirm == nil {
					confirm = time.After(resyncStartDelay)
				}
				starts = append(starts, ids...)
			}
		case <-confirm:
			r.confirmStarts(ctx, starts)
			starts, confirm = nil, nil
		case <-check:
			r.checkRunners(ctx)
		case <-r.queue.Wake():
			r.startWaiting(ctx)
		}
	}
}

// Ready reports whether the reconciler accepts work (false once it shuts
// down).
func (r *Reconciler) Ready() bool { return r.sup.Ready() }
