package reconcile

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
)

// Project moves: the API's UpdateSession accepts a new project_id for a
// session that runs. Its runner was started for the old project, and its
// routing record names that project, which agui-proxy authorizes the
// session's clients against: left alone, the old project's users keep the
// session and the new project's are denied. So a selected session that
// wants a runner, whose local runner serves another project, gets its
// runner replaced under the new project (supervise.Supervisor.Move, which
// keeps the claim and the slot), as kube-reconciler replaces a moved
// session's AgenticSession. The event, the resync and the runner check
// all look, so a move no event reports is found too. A move to a project
// this deployment does not select is a deselection (deselect): the runner
// is stopped and the other executor takes the session.

// movedAway reports whether s, a session whose local runner is rn, names
// another project than the one rn serves (or is being replaced for),
// and rn may still be replaced: a runner whose end is decided already
// (stopped, lost, failed) is left to the paths that handle its end.
func movedAway(rn *supervise.Runner, s *ambientv1.Session) bool {
	return rn != nil && rn.Project() != s.GetProjectId() && rn.Movable()
}

// move re-reads the session of rn, whose event (or list entry) names
// another project, and replaces rn if the session still says so
// (replaceMoved): a stale event changes nothing. Callers hold the
// session's lock.
func (r *Reconciler) move(ctx context.Context, log *slog.Logger, rn *supervise.Runner) error {
	fresh, err := r.api.GetSession(ctx, rn.ID())
	switch {
	case grpcstatus.Code(err) == codes.NotFound:
		return nil // the DELETED event (or the runner check) stops the runner
	case err != nil:
		return wrapRetry("read session", rn.ID(), err)
	}
	return r.replaceMoved(ctx, log, rn, fresh)
}

// replaceMoved replaces rn if fresh, its session as just read, is
// selected here, wants a runner and names another project than rn's. A
// session in any other state is left to the path for that state (a
// Stopping, a final phase, a deselection). Callers hold the session's
// lock.
func (r *Reconciler) replaceMoved(ctx context.Context, log *slog.Logger, rn *supervise.Runner, fresh *ambientv1.Session) error {
	if !movedAway(rn, fresh) || !session.PhaseOf(fresh).WantsRunner() || !r.cfg.Selector.Selects(fresh) {
		return nil
	}
	if err := r.sup.Move(ctx, log, rn, fresh); err != nil {
		return wrapRetry("replace runner of moved session", rn.ID(), err)
	}
	return nil
}
