package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// A session moved to another project (its project_id changed: the API's
// UpdateSession accepts that on a running session) keeps its id, its
// claim and its workspace (<root>/<session id>, the session's files,
// which move with it as its prompt and history do), but not its runner:
// the runner was started for the old project (PROJECT_NAME), and its
// routing record names that project, which is what agui-proxy authorizes
// its clients against. So the runner is replaced, as kube-reconciler
// replaces a moved session's AgenticSession (the new one in the new
// project's namespace, the old one deleted):
//
//   - Move, on the decision of package reconcile: the record is
//     rewritten at once to name the new project and no endpoint (state
//     claimed), so agui-proxy routes nobody to the old runner and forgets
//     the decisions it cached for the session; then the old runner is
//     stopped (SIGTERM, SIGKILL after the grace).
//   - Once it exited (finish, under the session lock): no phase is
//     written for it; the record becomes a fresh claim of the new project
//     and the new runner starts under it (Creating, then Running, as after
//     any start). Neither the claim nor the slot is given up in between,
//     so no peer and no session waiting for capacity takes them.
//   - A stop or deletion asked for meanwhile wins (RequestStop, or a
//     peer's stop request in the record): the session ends as asked. A new runner that cannot start (a start
//     elsewhere took the slot, the service shuts down) hands the session
//     back as Pending, like a shutdown does, and whichever replica has
//     room starts it.

// Move replaces rn, the runner of a session that moved to another
// project: to is the session as just read, under its new project. It
// rewrites rn's record (new project, no endpoint) and stops rn; its
// supervisor starts the new runner once rn exited (see above). Moving
// again before that only changes the project the new runner starts
// under. A runner whose end is decided already (stopped, deleted, lost,
// failed its health check, exited) is left to its supervisor. It returns
// the registry's error (nothing changed; the caller retries). Callers
// hold the session's lock.
func (s *Supervisor) Move(ctx context.Context, log *slog.Logger, rn *Runner, to *ambientv1.Session) error {
	if !rn.Movable() {
		return nil
	}
	held, project := rn.Record(), to.GetProjectId()
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	rec, stopRequested, err := s.claims.Update(rctx, held, func(e *registry.Endpoint) {
		// The pid stays: if this replica dies before the old runner is
		// gone, its next incarnation ends the runner's group by it.
		e.ProjectID, e.Host, e.Port, e.State = project, "", 0, registry.StateClaimed
	})
	switch {
	case errors.Is(err, claim.ErrLost):
		log.Warn("claim taken over by another replica; killing the local runner", slog.String(logkey.Err, err.Error()))
		rn.MarkLost()
		return nil
	case err != nil:
		return fmt.Errorf("unroute runner of %s: %w", rn.id, err)
	}
	rn.mu.Lock()
	rn.claim = rec
	rn.unrouted = true
	if !stopRequested {
		rn.moveTo = to
		rn.stopped = true // what a stop skips (phase writes, healing), a move skips too
	}
	rn.mu.Unlock()
	if stopRequested {
		rn.RequestStop(ctx, false) // a peer's stop request was waiting in the record: it wins
		return nil
	}
	rn.stopOnce.Do(func() { close(rn.stopCh) })
	log.Info("session moved to another project: its runner is replaced", slog.String("from_project", rn.projectID), slog.String(logkey.ProjectID, project))
	return nil
}

// replace starts the successor of rn, which exited after its session
// moved to another project (to, as read when the move was asked for),
// under rn's claim, rewritten as a fresh claim of the new project: the
// successor's start deadline counts from that write (registerBy), and a
// peer's start wait from its revision. It returns nil when the successor
// runs (or its spawn failed and Start reported that), or when the claim
// is another replica's now (rn is marked lost: that replica starts the
// session); otherwise the ending to report: Stopped for a stop a peer
// asked for through the record meanwhile, else the hand-back (Pending).
// The caller then releases the claim (Start may have released it
// already). Callers hold the session's lock.
func (s *Supervisor) replace(ctx context.Context, log *slog.Logger, rn *Runner, to *ambientv1.Session) *ending {
	from := rn.projectID
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	held, stopRequested, err := s.claims.Update(rctx, rn.Record(), func(e *registry.Endpoint) {
		*e = registry.Endpoint{SessionID: e.SessionID, ProjectID: to.GetProjectId(), Owner: e.Owner, StartedAt: time.Now().UTC(), State: registry.StateClaimed}
	})
	cancel()
	switch {
	case errors.Is(err, claim.ErrLost):
		log.Warn("claim taken over by another replica while the runner was replaced", slog.String(logkey.Err, err.Error()))
		rn.MarkLost()
		return nil
	case err == nil && stopRequested:
		// A peer handled the user's stop meanwhile and left it in the
		// record: the session ends Stopped, no runner starts to be stopped.
		return stoppedOnRequest()
	}
	if err == nil {
		err = s.Start(ctx, s.log.With(slog.String(logkey.SessionID, rn.id)), to, Start{Claim: held, movedFrom: &from})
	}
	if err == nil {
		return nil
	}
	log.Warn("start the runner of a moved session; handed back as Pending", slog.String(logkey.Err, err.Error()))
	return &ending{phase: session.PhasePending, reason: status.ReasonProjectChanged, guarded: true,
		message: fmt.Sprintf("moved from project %q to %q; no new runner here (%v): the session will be restarted", from, to.GetProjectId(), err)}
}
