// Package supervise sees each local runner through its life, from spawn to
// exit: [Supervisor.Start] spawns it (through the process manager, package
// runner) for a session this replica has claimed; its supervisor goroutine
// registers the endpoint in the claim, writes Creating, waits for the
// health check, writes Running, stops the runner when asked (a Stopping
// phase, a deletion, a claim lost to another replica, the service's
// shutdown), reports how it ended as the session's final phase, releases
// the claim and frees the slot.
//
// The decisions (whether to start, stop or restart a session) are package
// reconcile's; this package carries them out for one runner at a time,
// under the session's lock ([Supervisor.Lock]) so an event, a supervisor
// and the sweep never act on one session at once.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// ErrShuttingDown is returned by Start once Shutdown began: the service
// starts no runner; the event is retried later (by whichever replica then
// owns it).
var ErrShuttingDown = errors.New("runner-manager shutting down")

// Config of a Supervisor.
type Config struct {
	// AdvertiseHost is the runner host written to the registry, reachable
	// by agui-proxy.
	AdvertiseHost string
	Health        runner.HealthPolicy
	// StopGrace is the SIGTERM -> SIGKILL grace.
	StopGrace time.Duration
	// HandBack makes a runner stopped by the service's shutdown hand its
	// session back (phase Pending, restarted by whichever replica is
	// alive) instead of failing it (RunnerLost).
	HandBack bool
	// Freed, when set, is called after a runner ended and its slot is free
	// (the capacity queue's wake-up). It must not block.
	Freed func()
}

// Deps are a Supervisor's collaborators. Meter may be nil.
type Deps struct {
	Manager *runner.Manager
	Claims  *claim.Claims
	Status  *status.Writer
	Meter   metric.Meter
	Log     *slog.Logger
}

// Supervisor runs this replica's runners. Safe for concurrent use.
type Supervisor struct {
	cfg     Config
	mgr     *runner.Manager
	claims  *claim.Claims
	status  *status.Writer
	metrics *metrics
	log     *slog.Logger
	http    *http.Client

	locks keyedMutex
	wg    sync.WaitGroup // one per supervisor goroutine

	// life guards closing: Start holds it shared while it spawns, Shutdown
	// takes it exclusively to stop intake, so no runner starts after
	// StopAll has taken its snapshot.
	life       sync.RWMutex
	closing    bool          // guarded by life
	shutdownCh chan struct{} // closed when Shutdown begins

	mu   sync.Mutex
	runs map[string]*Runner // guarded by mu; local runners by session id
}

// New validates cfg and returns a supervisor. It starts nothing.
func New(cfg Config, d Deps) (*Supervisor, error) {
	if cfg.AdvertiseHost == "" || cfg.Health.Interval <= 0 || cfg.Health.Attempts < 1 || cfg.StopGrace <= 0 {
		return nil, errors.New("supervisor: advertise host, health interval and attempts, and stop grace are required")
	}
	if d.Manager == nil || d.Claims == nil || d.Status == nil || d.Log == nil {
		return nil, errors.New("supervisor: manager, claims, status and log are required")
	}
	if cfg.Health.Host == "" {
		cfg.Health.Host = "127.0.0.1"
	}
	s := &Supervisor{
		cfg: cfg, mgr: d.Manager, claims: d.Claims, status: d.Status, log: d.Log,
		// No keep-alives: a runner's idle health connection must not delay
		// its shutdown.
		http:       &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		shutdownCh: make(chan struct{}),
		runs:       map[string]*Runner{},
	}
	m, err := newMetrics(d.Meter, s.runnersByState, d.Manager.Pool())
	if err != nil {
		return nil, fmt.Errorf("supervisor metrics: %w", err)
	}
	s.metrics = m
	return s, nil
}

// Lock serialises work on session id across the event handler, the
// supervisors and the sweep, and returns the unlock func.
func (s *Supervisor) Lock(id string) (unlock func()) { return s.locks.lock(id) }

// Get returns the runner of session id if it runs here.
func (s *Supervisor) Get(id string) *Runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[id]
}

// Runners returns the runners of this replica.
func (s *Supervisor) Runners() []*Runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Runner, 0, len(s.runs))
	for _, rn := range s.runs {
		out = append(out, rn)
	}
	return out
}

// HasCapacity reports whether another runner may start now; a hint, Start
// decides.
func (s *Supervisor) HasCapacity() bool { return s.mgr.HasCapacity() }

// Ready reports whether the supervisor starts runners (false once Shutdown
// began).
func (s *Supervisor) Ready() bool {
	s.life.RLock()
	defer s.life.RUnlock()
	return !s.closing
}

// Start describes a runner start.
type Start struct {
	// Claim is this replica's claim on the session, as written.
	Claim registry.Record
	// Received is when the event that asked for the start arrived (for
	// the event-to-Running metric); zero for starts no event asked for.
	Received time.Time
	// Restart, when set, says the runner replaces one lost with its owner.
	Restart *Restart
}

// Restart marks a start that replaces a runner lost with its owner.
type Restart struct {
	// Owner is the lost owner; "" when no claim was registered at all (a
	// Creating or Running session whose record is gone).
	Owner string
}

// String names the lost owner in condition messages.
func (r Restart) String() string {
	if r.Owner == "" {
		return "(none registered)"
	}
	return r.Owner
}

// Start spawns the runner of s, a session this replica has claimed
// (o.Claim), and supervises it until it exited and was reported. Callers
// hold the session's lock. It always either hands the runner to its
// supervisor or releases the claim. It returns nil when the runner is
// supervised, or when the spawn failed and the session was reported Failed
// (InvalidSessionID, ProcessSpawnFailed); runner.ErrAtCapacity or
// runner.ErrNoPorts with nothing written (the caller queues or fails the
// session); or ErrShuttingDown.
func (s *Supervisor) Start(ctx context.Context, log *slog.Logger, sess *ambientv1.Session, o Start) error {
	id := sess.GetMetadata().GetId()
	conds := status.Conditions(sess)
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closing {
		s.claims.Release(ctx, log, id)
		return ErrShuttingDown
	}
	spawnStart := time.Now()
	proc, err := s.mgr.Start(ctx, sessionOf(sess))
	spawnTook := time.Since(spawnStart)
	switch {
	case errors.Is(err, runner.ErrAtCapacity), errors.Is(err, runner.ErrNoPorts):
		s.claims.Release(ctx, log, id)
		return err
	case errors.Is(err, runner.ErrBadSessionID):
		conds = conds.Set(session.Condition{Type: status.CondProcessSpawned, Status: session.StatusFalse, Reason: status.ReasonInvalidSessionID, Message: err.Error()}, time.Now())
		s.status.Fail(ctx, log, id, conds, status.ReasonInvalidSessionID)
		s.claims.Release(ctx, log, id)
		return nil
	case err != nil:
		msg := status.ReasonProcessSpawnFailed + ": " + err.Error()
		conds = conds.Set(session.Condition{Type: status.CondProcessSpawned, Status: session.StatusFalse, Reason: status.ReasonProcessSpawnFailed, Message: msg}, time.Now())
		conds = conds.Set(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: status.ReasonProcessSpawnFailed, Message: msg}, time.Now())
		s.status.Fail(ctx, log, id, conds, status.ReasonProcessSpawnFailed)
		s.claims.Release(ctx, log, id)
		return nil
	}
	s.metrics.spawn(ctx)
	now := time.Now()
	started := session.Condition{Type: status.CondRunnerStarted, Status: session.StatusUnknown, Reason: status.ReasonStarted, Message: "waiting for the health check"}
	if o.Restart != nil {
		started.Reason, started.Message = status.ReasonRestarted, "restarted after owner "+o.Restart.String()+" was lost"
	}
	conds = conds.Set(session.Condition{Type: status.CondProcessSpawned, Status: session.StatusTrue, Reason: status.ReasonSpawned, Message: fmt.Sprintf("pid %d, port %d", proc.PID, proc.Port)}, now)
	conds = conds.Set(session.Condition{Type: status.CondHealthCheckPassed, Status: session.StatusUnknown, Reason: "Polling"}, now)
	conds = conds.Set(started, now)
	rn := newRunner(id, sess.GetProjectId(), proc, o.Received, conds, o.Claim)
	s.mu.Lock()
	s.runs[id] = rn
	s.mu.Unlock()
	log.Info("runner spawned", slog.Int(logkey.PID, proc.PID), slog.Int(logkey.Port, proc.Port), slog.Duration(logkey.Duration, spawnTook))
	// The supervisor registers the endpoint and writes Creating, so the
	// handler (one per member at a time) is free for the next event.
	s.supervise(ctx, rn)
	return nil
}

// sessionOf maps a session to what its runner is told.
func sessionOf(s *ambientv1.Session) runner.Session {
	return runner.Session{
		ID: s.GetMetadata().GetId(), Name: s.GetName(), ProjectID: s.GetProjectId(),
		Prompt: s.Prompt, LLMModel: s.LlmModel, LLMTemperature: s.LlmTemperature, LLMMaxTokens: s.LlmMaxTokens,
		Timeout: s.Timeout, ReposJSON: s.Repos,
	}
}

// WriteRunning writes Running with the start time and conditions rn was
// reported Running with (phase drift healing puts them back), superseding
// a failed Running write. Callers hold the session's lock.
func (s *Supervisor) WriteRunning(ctx context.Context, rn *Runner) error {
	since, conds, ok := rn.Serving()
	if !ok {
		return nil // its supervisor writes what comes next
	}
	if err := s.status.Write(ctx, rn.id, status.Update{Phase: session.PhaseRunning, StartTime: since, Conditions: conds}); err != nil {
		return err
	}
	rn.setUnsent(nil)
	return nil
}

// Resend retries every runner's Creating or Running write that failed (an
// API outage), so the session's phase catches up with its runner. The
// sweep calls it.
func (s *Supervisor) Resend(ctx context.Context) {
	for _, rn := range s.Runners() {
		s.resend(ctx, rn)
	}
}

func (s *Supervisor) resend(ctx context.Context, rn *Runner) {
	unlock := s.Lock(rn.id)
	defer unlock()
	rn.mu.Lock()
	u := rn.unsent
	skip := rn.final || rn.stopped
	rn.mu.Unlock()
	if u == nil || skip {
		return
	}
	if err := s.status.Write(ctx, rn.id, *u); err != nil {
		s.log.Warn("retry phase write", slog.String(logkey.SessionID, rn.id), slog.String(logkey.Phase, string(u.Phase)), slog.String(logkey.Err, err.Error()))
		return
	}
	rn.mu.Lock()
	if rn.unsent == u {
		rn.unsent = nil
	}
	rn.mu.Unlock()
}

// Shutdown stops intake (Start returns ErrShuttingDown from now on), stops
// every runner (SIGTERM, SIGKILL after the grace), and returns once each
// was reported and its claim released, with the stop errors. It is bounded
// by the stop grace plus 5 s, even after ctx ended.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	s.life.Lock()
	if s.closing {
		s.life.Unlock()
		return nil
	}
	s.closing = true
	close(s.shutdownCh)
	s.life.Unlock()
	n := s.mgr.Count()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.StopGrace+5*time.Second)
	defer cancel()
	err := s.mgr.StopAll(sctx)
	s.wg.Wait()
	s.mgr.Wait()
	s.log.Info("runners stopped", slog.Int(logkey.Count, n))
	return err
}

// runnersByState counts the runners by registry state (the runners gauge).
func (s *Supervisor) runnersByState() map[string]int {
	out := map[string]int{registry.StateStarting: 0, registry.StateRunning: 0, registry.StateStopping: 0}
	for _, rn := range s.Runners() {
		out[rn.state()]++
	}
	return out
}
