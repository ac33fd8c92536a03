// Package status writes what runner-manager reports on a session to the
// ambient API (UpdateSessionStatus): its phase, start and completion times,
// and the conditions runner-manager owns (ProcessSpawned,
// HealthCheckPassed, RunnerStarted). Every phase and condition write of the
// service goes through [Writer]; the vocabulary (phases, the Condition type)
// is libs/session's.
//
// # Writes over a user's change
//
// UpdateSessionStatus has no precondition (no expected phase or version),
// so a status write replaces whatever phase the session has. The phases
// runner-manager writes while a runner lives (Creating, Running) go
// through [Writer.WriteIf]: the session is read just before and written
// only if its phase still wants a runner ("", Pending, Creating,
// Running); a Stopping or final phase found there is obeyed instead
// (issue 14: a user's Stopping overwritten by our Running, and the stop
// lost). What remains is the window between that read and the write (one
// API round trip, more with retries): a Stopping written inside it is
// still overwritten. [Guarded] reports the window as the session's
// updated_at before and after our write; the Stopping's own event carries
// an updated_at inside it, and package reconcile then stops the runner
// although the session now reads Running. This relies on updated_at
// being ordered: the API server's clock, with one server (or servers
// whose clocks agree to better than the window). A Stopping stamped
// outside the window by a skewed clock is lost as before; the user sees
// the session Running and can stop it again.
package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Condition types written by runner-manager (UPSTREAM-BEHAVIOUR.md, local
// mode).
const (
	CondProcessSpawned    = "ProcessSpawned"
	CondHealthCheckPassed = "HealthCheckPassed"
	CondRunnerStarted     = "RunnerStarted"
)

// Condition reasons (also the "reason" label of the failures metric).
const (
	ReasonSpawned            = "Spawned"
	ReasonProcessSpawnFailed = "ProcessSpawnFailed"
	ReasonHealthy            = "Healthy"
	ReasonHealthCheckTimeout = "HealthCheckTimeout"
	ReasonStarted            = "Started"
	ReasonRestarted          = "Restarted"
	ReasonProcessExited      = "ProcessExited"
	ReasonCompleted          = "Completed"
	ReasonStopped            = "Stopped"
	ReasonRunnerLost         = "RunnerLost"
	ReasonCapacityExceeded   = "CapacityExceeded"
	ReasonNoPortAvailable    = "NoPortAvailable"
	ReasonInvalidSessionID   = "InvalidSessionID"
	ReasonShutdown           = "RunnerManagerShutdown"
	// ReasonProjectChanged: the session moved to another project, and its
	// runner was replaced by one started under the new project.
	ReasonProjectChanged = "ProjectChanged"
)

// ReasonInvalidEnvironmentVariables is the reason when the session's
// environment_variables are no JSON object of strings naming valid
// variables (kube-reconciler refuses them too, with InvalidSpec): the
// runner is not started.
const ReasonInvalidEnvironmentVariables = "InvalidEnvironmentVariables"

// The condition the platform's operator writes when it applies a running
// session's spec changes to its runner (reconcile/repos.go), and its
// reasons: the operator's SpecApplied and RepoReconciliationFailed, and
// InvalidRepos for a repos field runner-manager cannot read.
const (
	CondReconciled                 = "Reconciled"
	ReasonSpecApplied              = "SpecApplied"
	ReasonRepoReconciliationFailed = "RepoReconciliationFailed"
	ReasonInvalidRepos             = "InvalidRepos"
)

// Metric names (Prometheus adds the _total suffix).
const (
	metricStatusWrites = "runner_manager.status_writes"
	metricFailures     = "runner_manager.failures"
)

// Write retry: transient API errors are retried from retryMin doubling to
// retryMax, until the ctx's deadline when it has one, else retryTries
// calls in all (a supervisor's write without a deadline must not hold the
// session lock for long: the sweep retries it, see supervise.Resend).
const (
	retryMin   = 100 * time.Millisecond
	retryMax   = 2 * time.Second
	retryTries = 4
)

// api is what the writer needs from the ambient API.
type api interface {
	GetSession(ctx context.Context, id string) (*ambientv1.Session, error)
	UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
}

// Update is one status write.
type Update struct {
	// Phase to write; PhaseNone keeps the session's phase.
	Phase          session.Phase
	StartTime      time.Time // zero: not written
	CompletionTime time.Time // zero: not written
	// Conditions replace the session's conditions; nil writes none.
	Conditions session.Conditions
	// RunnerConditions says Conditions are a runner's saved copy: only
	// the conditions runner-manager's supervisors own (RunnerOwned) are
	// taken from them, every other one is the session's as read just
	// before the write. The copy was taken when the runner started, so
	// without this a Reconciled written since (reconcile/repos.go), or
	// any condition of another writer, would be dropped, or put back
	// as it was then, by the runner's next phase write.
	RunnerConditions bool
	// ReconciledRepos replaces the session's reconciled_repos (JSON);
	// nil writes none.
	ReconciledRepos *string
}

// RunnerOwned are the condition types a runner's supervisor reports, the
// ones an Update with RunnerConditions takes from its own copy.
func RunnerOwned() []string {
	return []string{CondProcessSpawned, CondHealthCheckPassed, CondRunnerStarted}
}

// onto returns u with RunnerConditions resolved against cur, the session
// as read just before the write: cur's conditions with those u owns
// replaced by u's (their times as u has them).
func (u Update) onto(cur *ambientv1.Session) Update {
	if !u.RunnerConditions {
		return u
	}
	u.RunnerConditions = false
	if u.Conditions == nil {
		return u
	}
	out := Conditions(cur)
	for _, typ := range RunnerOwned() {
		if c, ok := u.Conditions.Get(typ); ok {
			out = out.Set(c, time.Now())
		}
	}
	u.Conditions = out
	return u
}

// request is u as the API call for session id.
func (u Update) request(id string) *ambientv1.UpdateSessionStatusRequest {
	req := &ambientv1.UpdateSessionStatusRequest{Id: id}
	if u.Phase != session.PhaseNone {
		req.Phase = u.Phase.Ptr()
	}
	if !u.StartTime.IsZero() {
		req.StartTime = timestamppb.New(u.StartTime)
	}
	if !u.CompletionTime.IsZero() {
		req.CompletionTime = timestamppb.New(u.CompletionTime)
	}
	if u.Conditions != nil {
		c := u.Conditions.JSON()
		req.Conditions = &c
	}
	req.ReconciledRepos = u.ReconciledRepos
	return req
}

// Writer writes session status. Safe for concurrent use.
type Writer struct {
	api      api
	writes   metric.Int64Counter
	failures metric.Int64Counter
}

// New returns a writer on a; meter (nil: none) gets the
// runner_manager.status_writes and runner_manager.failures counters.
func New(a api, meter metric.Meter) (*Writer, error) {
	if a == nil {
		return nil, errors.New("status writer: api is nil")
	}
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("runner-manager")
	}
	writes, err := meter.Int64Counter(metricStatusWrites, metric.WithDescription("UpdateSessionStatus calls, by phase and result."))
	if err != nil {
		return nil, fmt.Errorf("status writer metrics: %w", err)
	}
	failures, err := meter.Int64Counter(metricFailures, metric.WithDescription("Sessions failed by runner-manager, by reason."))
	if err != nil {
		return nil, fmt.Errorf("status writer metrics: %w", err)
	}
	return &Writer{api: a, writes: writes, failures: failures}, nil
}

// Check is called before each retry of a write, not before its first
// try (its caller checked just before): an error ends the write, without
// that try, and is returned wrapped. A write retried for a second or two
// outlives what its caller checked: a runner's final phase, written while
// its record is this replica's, must not land once another replica took
// the session over and runs it again (supervise: the owner is read again).
type Check func(ctx context.Context) error

// Write writes u on session id, retrying transient API errors (see
// retryMin). A deleted session (NotFound) is not an error: there is nothing
// left to report to. Invalid requests and refused credentials are not
// retried.
func (w *Writer) Write(ctx context.Context, id string, u Update) error {
	_, err := w.write(ctx, id, u, nil)
	return err
}

// WriteChecked is Write calling check (nil: none) before each retry.
func (w *Writer) WriteChecked(ctx context.Context, id string, u Update, check Check) error {
	_, err := w.write(ctx, id, u, check)
	return err
}

// write is WriteChecked returning the session as written (nil when it is
// gone).
func (w *Writer) write(ctx context.Context, id string, u Update, check Check) (*ambientv1.Session, error) {
	var req *ambientv1.UpdateSessionStatusRequest
	if !u.RunnerConditions {
		req = u.request(id)
	}
	var last error
	var written *ambientv1.Session
	tries := 0
	call := func() (struct{}, error) {
		if tries++; tries > 1 && check != nil {
			if err := check(ctx); err != nil {
				last = err
				return struct{}{}, backoff.Permanent(err)
			}
		}
		if req == nil {
			// The session's conditions are needed (RunnerConditions): read
			// once, retried as the write is.
			cur, err := w.api.GetSession(ctx, id)
			last, written = err, nil
			if err != nil {
				return retryable(err)
			}
			req = u.onto(cur).request(id)
		}
		s, err := w.api.UpdateSessionStatus(ctx, req)
		last, written = err, s
		return retryable(err)
	}
	b := &backoff.ExponentialBackOff{InitialInterval: retryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: retryMax}
	opts := []backoff.RetryOption{backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0)}
	if _, ok := ctx.Deadline(); !ok {
		opts = append(opts, backoff.WithMaxTries(retryTries))
	}
	if _, err := backoff.Retry(ctx, call, opts...); err != nil {
		w.count(ctx, u.Phase, "error")
		return nil, fmt.Errorf("write phase %q of %s: %w", u.Phase, id, last)
	}
	if grpcstatus.Code(last) == codes.NotFound {
		w.count(ctx, u.Phase, "not_found")
		return nil, nil
	}
	w.count(ctx, u.Phase, "ok")
	return written, nil
}

// retryable classifies err, the answer of one API call of a write: done
// (none, or NotFound: the session is gone), permanent (a request the API
// refuses, or refused credentials) or worth a retry.
func retryable(err error) (struct{}, error) {
	switch grpcstatus.Code(err) { // Code sees through wrapping
	case codes.OK, codes.NotFound:
		return struct{}{}, nil
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated:
		return struct{}{}, backoff.Permanent(err)
	}
	return struct{}{}, err
}

// Guarded is what WriteIf found and did.
type Guarded struct {
	// Wrote is whether u was written.
	Wrote bool
	// Found is the phase read before the write: the one written over, or
	// the one that stopped the write.
	Found session.Phase
	// Deleted is set when the session is gone.
	Deleted bool
	// ReadAt and WroteAt are the session's updated_at as read before the
	// write and as written (zero when nothing was written). A change of
	// the session stamped in (ReadAt, WroteAt] was overwritten by this
	// write: see the package doc.
	ReadAt, WroteAt time.Time
}

// WriteIf writes u on session id only if the session's phase, read just
// before, passes allow: a blind status write can overwrite what a user
// wrote meanwhile (their Stopping under our Running, and the stop was
// lost). The API has no precondition on status writes, so a write landing
// between the read and the write is still overwritten; Guarded says when
// that could have happened (ReadAt, WroteAt) so the caller can recognise
// the overwritten change when its event arrives. Errors are Write's and
// the read's.
func (w *Writer) WriteIf(ctx context.Context, id string, u Update, allow func(session.Phase) bool) (Guarded, error) {
	return w.writeIf(ctx, id, u, allow, nil)
}

// writeIf is WriteIf calling check (nil: none) before each retry of the
// write.
func (w *Writer) writeIf(ctx context.Context, id string, u Update, allow func(session.Phase) bool, check Check) (Guarded, error) {
	cur, err := w.api.GetSession(ctx, id)
	switch {
	case grpcstatus.Code(err) == codes.NotFound:
		return Guarded{Deleted: true}, nil
	case err != nil:
		return Guarded{}, fmt.Errorf("read %s before writing %q: %w", id, u.Phase, err)
	}
	g := Guarded{Found: session.PhaseOf(cur), ReadAt: cur.GetMetadata().GetUpdatedAt().AsTime()}
	if !allow(g.Found) {
		return g, nil
	}
	written, err := w.write(ctx, id, u.onto(cur), check)
	switch {
	case err != nil:
		return g, err
	case written == nil:
		g.Deleted = true
		return g, nil
	}
	g.Wrote, g.WroteAt = true, written.GetMetadata().GetUpdatedAt().AsTime()
	return g, nil
}

func (w *Writer) count(ctx context.Context, p session.Phase, result string) {
	w.writes.Add(ctx, 1, metric.WithAttributes(attribute.String("phase", string(p)), attribute.String("result", result)))
}

// WriteFinal writes u, a runner's final phase, and counts failReason (if
// not empty) as a failure; check (nil: none) is called before each retry
// (see Check). Unlike Fail it returns the write's error: the caller keeps
// its claim until the phase is written.
func (w *Writer) WriteFinal(ctx context.Context, id string, u Update, failReason string, check Check) error {
	if failReason != "" {
		w.failures.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", failReason)))
	}
	return w.WriteChecked(ctx, id, u, check)
}

// WriteFinalIf is WriteFinal for a final phase that must not replace
// what the session says now: u is written only if the phase read just
// before passes allow (see WriteIf), and failReason is counted only then.
func (w *Writer) WriteFinalIf(ctx context.Context, id string, u Update, failReason string, allow func(session.Phase) bool, check Check) (Guarded, error) {
	g, err := w.writeIf(ctx, id, u, allow, check)
	if err == nil && g.Wrote && failReason != "" {
		w.failures.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", failReason)))
	}
	return g, err
}

// Fail writes phase Failed with a completion time and conds, and counts
// reason. A failed write is logged, not returned: the session's next event
// or the resync finds it again.
func (w *Writer) Fail(ctx context.Context, log *slog.Logger, id string, conds session.Conditions, reason string) {
	w.failures.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
	log.Info("session failed", slog.String(logkey.Reason, reason))
	if err := w.Write(ctx, id, Update{Phase: session.PhaseFailed, CompletionTime: time.Now(), Conditions: conds}); err != nil {
		log.Error("write phase", slog.String(logkey.Phase, string(session.PhaseFailed)), slog.String(logkey.Err, err.Error()))
	}
}

// Stopped writes Stopped with a completion time for a session no runner
// runs, keeping its other conditions, if the session is still Stopping
// when read: a start that came after the stop (Pending) must not be
// undone, and every replica's resync may call this for a session whose
// stop a peer just finished. A failed read or write is returned, not
// logged: unlike a failure, a lost Stopped leaves the session in Stopping,
// which neither the API's start nor its stop accepts, so the caller
// retries (the event, or the resync's next pass).
func (w *Writer) Stopped(ctx context.Context, log *slog.Logger, id string) error {
	fresh, err := w.api.GetSession(ctx, id)
	switch {
	case grpcstatus.Code(err) == codes.NotFound:
		return nil // deleted: nothing left to stop
	case err != nil:
		return fmt.Errorf("read %s before writing %q: %w", id, session.PhaseStopped, err)
	case session.PhaseOf(fresh) != session.PhaseStopping:
		log.Debug("stop already over", slog.String("current_phase", fresh.GetPhase()))
		return nil
	}
	cond := session.Condition{Type: CondRunnerStarted, Status: session.StatusFalse, Reason: ReasonStopped, Message: "stopped; no runner was running"}
	conds := Conditions(fresh).Set(cond, time.Now())
	if err := w.Write(ctx, id, Update{Phase: session.PhaseStopped, CompletionTime: time.Now(), Conditions: conds}); err != nil {
		return err
	}
	log.Info("session stopped without a runner")
	return nil
}

// Conditions returns s's conditions; malformed ones read as none, since
// runner-manager rewrites the conditions it owns.
func Conditions(s *ambientv1.Session) session.Conditions {
	cs, err := session.ParseConditions(s.GetConditions())
	if err != nil {
		return nil
	}
	return cs
}
