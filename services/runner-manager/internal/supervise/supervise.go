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

	"github.com/ambient-code/control-plane/libs/keylock"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/passlog"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// ErrShuttingDown is returned by Start once Shutdown began: the service
// starts no runner; the event is retried later (by whichever replica then
// owns it).
var ErrShuttingDown = errors.New("runner-manager shutting down")

// ErrClaimTooOld is returned by Start for a claim older than the start
// deadline (see registerBy): a peer may take it over any moment, so no
// runner is spawned for it and it is released; the start is retried later.
var ErrClaimTooOld = errors.New("claim older than the start deadline")

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

	locks keylock.Map    // per session id: the event handler, the supervisors and the sweep
	wg    sync.WaitGroup // one per supervisor goroutine

	// life guards closing: Start holds it shared while it spawns, Shutdown
	// takes it exclusively to stop intake, so no runner starts after
	// StopAll has taken its snapshot.
	life       sync.RWMutex
	closing    bool          // guarded by life
	shutdownCh chan struct{} // closed when Shutdown begins

	mu   sync.Mutex
	runs map[string]*Runner // guarded by mu; local runners by session id

	// resending holds one Resend pass at a time (the sweep's, Shutdown's):
	// each pass's report follows the passes before it, and two passes at
	// once around an outage's end logged it ended, began and ended again.
	resending sync.Mutex
	finals    passlog.Log // guarded by resending
	lives     passlog.Log // guarded by resending: Creating and Running retries
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
		finals: passlog.Log{What: "retry final phase write: failed", Recovered: "retry final phase write: no failure any more",
			TriedKey: "waiting", SucceededKey: "written"},
		lives: passlog.Log{What: "retry phase write: failed", Recovered: "retry phase write: no failure any more",
			TriedKey: "waiting", SucceededKey: "written"},
	}
	m, err := newMetrics(d.Meter, s.runnersByState, d.Manager.Pool())
	if err != nil {
		return nil, fmt.Errorf("supervisor metrics: %w", err)
	}
	s.metrics = m
	// Ports and records (see "Runner ports" in the README): agui-proxy
	// routes a session to the host:port of its record, without asking
	// the runner whose it is. So a port goes to a new runner only when no
	// record of this host names it: not this replica's (a runner's port
	// is released once its record is gone or holds no endpoint: forget,
	// recordFinal), nor a peer's on the same host with an overlapping
	// range, dead or alive, nor a previous incarnation's (same member id).
	// When the records cannot be read at all (NATS down before the claim
	// watch ever held them: a replica that started into an outage), the
	// runner still starts on a port that is neither this replica's nor
	// busy, as before the records counted: refusing every start for the
	// length of an outage would cost more than the rare stale record of a
	// dead peer on this host naming the same port.
	d.Manager.Pool().SkipNamed(func(ctx context.Context) (map[int]bool, error) {
		ctx, cancel := context.WithTimeout(ctx, registerTimeout)
		defer cancel()
		named, err := d.Claims.NamedPorts(ctx, cfg.AdvertiseHost)
		if err != nil {
			d.Log.Warn("ports named by runner records unknown: only this replica's and busy ports are skipped", slog.String(logkey.Err, err.Error()))
			return nil, nil
		}
		return named, nil
	})
	return s, nil
}

// Lock serialises work on session id across the event handler, the
// supervisors and the sweep, and returns the unlock func.
func (s *Supervisor) Lock(id string) (unlock func()) { return s.locks.Lock(id) }

// TryLock is Lock for callers that would rather skip a session someone is
// acting on (a start waiting for its runner's health, a stop) than wait:
// ok is false, and nothing is held, when the session is locked.
func (s *Supervisor) TryLock(id string) (unlock func(), ok bool) { return s.locks.TryLock(id) }

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

// Free reports how many more runners may start now; a hint, Start decides.
func (s *Supervisor) Free() int { return s.mgr.Free() }

// FreeFor reports how many more runners of project may start now (Free
// within the project's LOCAL_MAX_SESSIONS_PER_PROJECT); a hint, Start
// decides.
func (s *Supervisor) FreeFor(project string) int { return s.mgr.FreeFor(project) }

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
	// movedFrom, when set, is the project of the runner this one replaces
	// after its session moved (Supervisor.Move); set by replace only.
	movedFrom *string
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
// session); runner.ErrPortsUnknown (the registry could not be read for
// the ports its records name) with nothing written, to retry;
// ErrClaimTooOld, with the claim released; or ErrShuttingDown.
func (s *Supervisor) Start(ctx context.Context, log *slog.Logger, sess *ambientv1.Session, o Start) error {
	id := sess.GetMetadata().GetId()
	conds := status.Conditions(sess)
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closing {
		s.claims.Release(ctx, log, id)
		return ErrShuttingDown
	}
	by, unaddressed := s.registerBy(o.Claim)
	if unaddressed && !time.Now().Before(by) {
		// A re-read of the session that took this long (a slow API): the
		// runner could not be registered in time, and would be killed
		// at once.
		s.claims.Release(ctx, log, id)
		return fmt.Errorf("start %s: %w (%v)", id, ErrClaimTooOld, s.cfg.Health.Deadline())
	}
	told, err := sessionOf(sess)
	if err != nil {
		// Refused before anything is made, as an id that would escape
		// the workspace root is: the session cannot run as it is, and
		// retrying would change nothing until it is updated.
		reason := status.ReasonInvalidEnvironmentVariables
		if errors.Is(err, runner.ErrBadRepos) {
			reason = status.ReasonInvalidRepos
		}
		s.status.Fail(ctx, log, id, spawnFailed(conds, reason, err.Error(), time.Now()), reason)
		s.claims.Release(ctx, log, id)
		return nil
	}
	if names := runner.ReservedIn(told.UserEnv); len(names) > 0 {
		log.Warn("environment_variables name runner-manager's own variables: ignored", slog.Any(logkey.Name, names))
	}
	spawnStart := time.Now()
	proc, err := s.mgr.Start(ctx, told)
	spawnTook := time.Since(spawnStart)
	switch {
	case errors.Is(err, runner.ErrAtCapacity), errors.Is(err, runner.ErrNoPorts), errors.Is(err, runner.ErrPortsUnknown):
		s.claims.Release(ctx, log, id)
		return err
	case errors.Is(err, runner.ErrBadSessionID):
		s.status.Fail(ctx, log, id, spawnFailed(conds, status.ReasonInvalidSessionID, err.Error(), time.Now()), status.ReasonInvalidSessionID)
		s.claims.Release(ctx, log, id)
		return nil
	case err != nil:
		msg := status.ReasonProcessSpawnFailed + ": " + err.Error()
		s.status.Fail(ctx, log, id, spawnFailed(conds, status.ReasonProcessSpawnFailed, msg, time.Now()), status.ReasonProcessSpawnFailed)
		s.claims.Release(ctx, log, id)
		return nil
	}
	s.metrics.spawn(ctx)
	now := time.Now()
	started := session.Condition{Type: status.CondRunnerStarted, Status: session.StatusUnknown, Reason: status.ReasonStarted, Message: "waiting for the health check"}
	switch {
	case o.Restart != nil:
		started.Reason, started.Message = status.ReasonRestarted, "restarted after owner "+o.Restart.String()+" was lost"
	case o.movedFrom != nil:
		started.Reason, started.Message = status.ReasonProjectChanged, fmt.Sprintf("restarted under project %q after the session moved from project %q; waiting for the health check", sess.GetProjectId(), *o.movedFrom)
	}
	conds = conds.Set(session.Condition{Type: status.CondProcessSpawned, Status: session.StatusTrue, Reason: status.ReasonSpawned, Message: fmt.Sprintf("pid %d, port %d", proc.PID, proc.Port)}, now)
	conds = conds.Set(session.Condition{Type: status.CondHealthCheckPassed, Status: session.StatusUnknown, Reason: "Polling"}, now)
	conds = conds.Set(started, now)
	rn := newRunner(id, sess.GetProjectId(), proc, o.Received, conds, o.Claim)
	rn.startRepos = told.StartRepos
	if unaddressed {
		rn.registerBy = by
	}
	s.mu.Lock()
	s.runs[id] = rn
	s.mu.Unlock()
	log.Info("runner spawned", slog.Int(logkey.PID, proc.PID), slog.Int(logkey.Port, proc.Port), slog.Duration(logkey.Duration, spawnTook))
	// The supervisor registers the endpoint and writes Creating, so the
	// handler (one per member at a time) is free for the next event.
	s.supervise(ctx, rn)
	return nil
}

// spawnFailed sets all three runner conditions of conds for a run whose
// process could not be spawned. A session started again after a terminal
// phase still carries its previous run's conditions (HealthCheckPassed=True
// among them), which would otherwise describe a process that never existed.
func spawnFailed(conds session.Conditions, reason, msg string, at time.Time) session.Conditions {
	conds = conds.Set(session.Condition{Type: status.CondProcessSpawned, Status: session.StatusFalse, Reason: reason, Message: msg}, at)
	conds = conds.Set(session.Condition{Type: status.CondHealthCheckPassed, Status: session.StatusFalse, Reason: reason, Message: "no process to check"}, at)
	return conds.Set(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: reason, Message: msg}, at)
}

// sessionOf maps a session to what its runner is told. A session with a
// start time ran before (a runner reached Running and wrote it; a start
// after a stop keeps it): its runner is a resume, as the platform's
// operator decides from the AgenticSession's status.startTime, so the
// platform's runner does not send the first prompt a second time. The
// parent and the creating user reach the runner as the operator passes
// them (PARENT_SESSION_ID, USER_ID), and so do the session's own
// environment_variables; malformed ones are an error wrapping
// runner.ErrBadEnvironment. Repos that runner.SessionRepos refuses (no
// JSON list of repos with URLs, a name outside the runner's repos
// directory, which the platform's runner would clone to and remove) are
// an error wrapping runner.ErrBadRepos: the runner is not started with
// them, as kube-reconciler makes no AgenticSession of them (InvalidSpec).
func sessionOf(s *ambientv1.Session) (runner.Session, error) {
	env, err := runner.ParseEnvironmentVariables(s.EnvironmentVariables)
	if err != nil {
		return runner.Session{}, fmt.Errorf("session %s: %w", s.GetMetadata().GetId(), err)
	}
	if _, err := runner.SessionRepos(s); err != nil {
		return runner.Session{}, fmt.Errorf("session %s: %w", s.GetMetadata().GetId(), err)
	}
	start, err := runner.StartRepos(s)
	if err != nil {
		return runner.Session{}, fmt.Errorf("session %s: %w", s.GetMetadata().GetId(), err)
	}
	return runner.Session{
		ID: s.GetMetadata().GetId(), Name: s.GetName(), KubeCRName: s.GetKubeCrName(), ProjectID: s.GetProjectId(),
		Resume:          s.GetStartTime() != nil,
		ParentSessionID: s.GetParentSessionId(), UserID: s.GetCreatedByUserId(), UserEnv: env,
		Prompt: s.Prompt, LLMModel: s.LlmModel, LLMTemperature: s.LlmTemperature, LLMMaxTokens: s.LlmMaxTokens,
		Timeout: s.Timeout, ReposJSON: s.Repos, StartRepos: start,
	}, nil
}

// WriteRunning writes Running with the start time and conditions rn was
// reported Running with (phase drift healing puts them back), superseding
// a failed Running write, if the session still wants a runner (see
// writeLive) and rn's record is still this replica's (else rn is lost and
// nothing is written: takenOver). Callers hold the session's lock.
func (s *Supervisor) WriteRunning(ctx context.Context, rn *Runner) error {
	since, conds, ok := rn.Serving()
	if !ok {
		return nil // its supervisor writes what comes next
	}
	log := s.log.With(slog.String(logkey.SessionID, rn.id))
	if s.takenOver(ctx, log, rn) {
		return nil // the new owner writes the session's phase
	}
	if !s.writeLive(ctx, log, rn, status.Update{Phase: session.PhaseRunning, StartTime: since, Conditions: conds, RunnerConditions: true}) && rn.unsentPhase() != "" {
		return fmt.Errorf("write phase %s of %s", session.PhaseRunning, rn.id)
	}
	return nil
}

// ownerReadTimeout bounds takenOver's read of a record: with NATS down it
// cannot tell, and the write it guards goes ahead as before.
const ownerReadTimeout = time.Second

// takenOver reads rn's record and reports whether another replica owns
// it now; then rn is lost (MarkLost: killed at once if it still runs) and
// the caller writes nothing for it. It guards the writes a replica makes
// on its runner's behalf without having just written the record itself
// (the final phase, a phase drift heal): the record watch, which marks a
// runner lost as soon as its record changes hands, delivers a moment
// after a replica resumed from a pause longer than MEMBER_TTL (its whole
// node frozen with its runners; later when its connection broke), and
// meanwhile a peer took the session over and restarted it (claim
// package doc, A paused node).
// A record that cannot be read, or is gone, tells nothing: false.
func (s *Supervisor) takenOver(ctx context.Context, log *slog.Logger, rn *Runner) bool {
	ctx, cancel := context.WithTimeout(ctx, ownerReadTimeout)
	defer cancel()
	rec, err := s.claims.Get(ctx, rn.id)
	switch {
	case err == nil && rec.Owner != s.claims.Member():
		log.Warn("claim taken over by another replica before this one heard of it: nothing written for this runner", slog.String(logkey.Owner, rec.Owner))
		rn.MarkLost()
		return true
	case err != nil && !errors.Is(err, registry.ErrNotFound):
		log.Warn("read claim before writing the phase; written without knowing its owner", slog.String(logkey.Err, err.Error()))
	}
	return false
}

// unsentPhase is the phase of a Creating/Running write that failed ("" if
// none).
func (rn *Runner) unsentPhase() session.Phase {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.unsent == nil {
		return ""
	}
	return rn.unsent.Phase
}

// resendTimeout bounds each of Resend's writes: with the API down the
// sweep moves on to the next runner instead of spending its time on one.
const resendTimeout = time.Second

// Resend catches up every runner's writes that failed, so that the
// registry and the session's phase agree with the runner: a registration
// (an unroutable runner otherwise stays unroutable), a Creating or
// Running write, and the final phase of a runner that exited (then the
// claim is released). The sweep calls it, and Shutdown once more. The
// retries that fail (final phases; Creating and Running) are logged once
// per outage (package passlog), not once per runner per sweep.
func (s *Supervisor) Resend(ctx context.Context) {
	s.resending.Lock()
	defer s.resending.Unlock()
	var finals, lives passlog.Pass
	for _, rn := range s.Runners() {
		s.resend(ctx, rn, &finals, &lives)
	}
	s.finals.Report(ctx, s.log, finals)
	s.lives.Report(ctx, s.log, lives)
}

// resend catches up rn's failed writes; a final-phase retry is counted in
// finals, a Creating or Running retry in lives.
func (s *Supervisor) resend(ctx context.Context, rn *Runner, finals, lives *passlog.Pass) {
	unlock := s.Lock(rn.id)
	defer unlock()
	log := s.log.With(slog.String(logkey.SessionID, rn.id))
	rn.mu.Lock()
	u, p, deleted, lost := rn.unsent, rn.pending, rn.deleted, rn.lost
	skip := rn.final || rn.stopped
	registered, want := rn.registered, rn.want
	rn.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, resendTimeout)
	defer cancel()
	switch {
	case p != nil && (deleted || lost):
		// Deleted meanwhile (or taken over): nothing to report.
		if !lost {
			s.claims.Release(ctx, log, rn.id)
		}
		s.forget(rn)
	case p != nil && s.takenOver(ctx, log, rn):
		// Another replica took the claim over while this one was away (a
		// whole-node pause): it wrote the recorded phase itself, and the
		// session may have run again since. The old end is not written
		// over that (the claim is not this replica's to release).
		s.forget(rn)
	case p != nil:
		err := s.status.WriteChecked(wctx, rn.id, p.update, s.ownedCheck(log, rn))
		if errors.Is(err, errTakenOver) {
			s.forget(rn) // as above, found between two tries
			return
		}
		finals.Add(err, slog.String(logkey.SessionID, rn.id), slog.String(logkey.Phase, string(p.update.Phase)))
		if err != nil {
			s.recordFinal(ctx, log, rn)
			return
		}
		log.Info("final phase written", slog.String(logkey.Phase, string(p.update.Phase)))
		s.claims.Release(ctx, log, rn.id)
		s.forget(rn)
	case lost && rn.Exited():
		// Lost after its final phase failed to write (MarkLost dropped
		// it), or while its supervisor reports it: nothing is left to
		// write for it, and kept it would hold its port and make this
		// replica ignore the session's next start.
		s.Drop(rn)
	case rn.Exited():
		// Its supervisor is reporting it.
	default:
		if !registered && !lost {
			s.register(ctx, log, rn, want)
		}
		// A Creating/Running write retried after a pause could land over
		// the phase of the replica that restarted the session meanwhile
		// (Running with this runner's start time over its Creating): the
		// owner is read first, as for the writes in finish and heal.
		if u != nil && !skip && !lost && !s.takenOver(ctx, log, rn) {
			_, err := s.tryWriteLive(wctx, log, rn, *u)
			lives.Add(err, slog.String(logkey.SessionID, rn.id), slog.String(logkey.Phase, string(u.Phase)))
		}
	}
}

// Drop forgets rn, and reports true, if it is lost (another replica owns
// its session) and has exited: nothing is left to write or stop for it.
// A runner lost after its final phase failed to write is only in the list
// because of that phase, which MarkLost dropped; its supervisor has
// returned, so nobody else would forget it. One whose supervisor has yet
// to report it is forgotten early, which is harmless: finish writes
// nothing for a lost runner, forget and the port's release happen once.
// Callers hold the session's lock.
func (s *Supervisor) Drop(rn *Runner) bool {
	if !rn.Lost() || !rn.Exited() {
		return false
	}
	s.forget(rn)
	return true
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
	// One more try for the final phases that could not be written; what
	// still fails stays in the records (state exited), and whoever takes
	// the claims over writes it.
	s.Resend(sctx)
	s.log.Info("runners stopped", slog.Int(logkey.Count, n))
	return err
}

// runnersByState counts the runners by registry state (the runners gauge).
func (s *Supervisor) runnersByState() map[string]int {
	out := map[string]int{registry.StateStarting: 0, registry.StateRunning: 0, registry.StateStopping: 0, registry.StateExited: 0}
	for _, rn := range s.Runners() {
		out[rn.state()]++
	}
	return out
}

// Reassert writes rn's record again after it vanished from the registry
// (claim.Claims.Reassert) and reports whether rn's claim is this
// replica's now. A record another owner wrote meanwhile marks the runner
// lost. Callers hold the session's lock.
func (s *Supervisor) Reassert(ctx context.Context, log *slog.Logger, rn *Runner) bool {
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	rec, err := s.claims.Reassert(rctx, rn.Record().Endpoint)
	switch {
	case errors.Is(err, claim.ErrLost):
		log.Warn("claim taken over while this replica was away; killing the local runner", slog.String(logkey.Err, err.Error()))
		rn.MarkLost()
		return false
	case err != nil:
		log.Warn("re-assert claim; the sweep retries", slog.String(logkey.Err, err.Error()))
		return false
	}
	rn.mu.Lock()
	rn.claim = rec
	rn.registered = rec.State == rn.want && rec.Host != ""
	rn.addressed = rn.addressed || rec.Routable()
	rn.mu.Unlock()
	return true
}
