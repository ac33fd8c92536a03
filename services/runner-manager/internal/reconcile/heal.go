package reconcile

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
)

// Phase drift: a session whose runner lives on this replica while its API
// phase says something else, because someone wrote the phase directly
// (UpdateSessionStatus skips the server's start/stop guards: issue 11 saw
// `ambientctl sessions start` write Pending over a Running session). The
// runner is the truth for what runs; the phase is the truth for what is
// wanted. So, with a live runner here that passed its health check:
//
//   - "", Pending, Creating: the session is wanted and runs, so the phase
//     goes back to Running with the start time it had (the runner's).
//   - Stopping: a stop was asked for; the runner is stopped (Stopped).
//   - Stopped, Completed, Failed: the session is over; the runner is
//     stopped and nothing is written (the final phase stays as written).
//
// A runner still in its health check needs nothing: its supervisor writes
// Running (or Failed) next. A runner being stopped, lost or already reported
// final is left to its supervisor too. Drift of a runner on a peer replica
// is healed by that peer's resync (every replica lists every session).

// healPhase makes the API phase agree with rn, the live runner of a session
// on this replica. seen is the phase in the event (or the resync's list),
// stamped seenAt (its updated_at; zero: unknown); they only decide whether
// to look: the session is re-read before anything is written or stopped,
// so a stale event changes nothing. A phase stamped no later than this
// replica's own last write of rn's phase is older than what the API holds
// (the echo of our own Creating, arriving after Running was written): no
// re-read, which keeps echoes free of API calls. Callers hold the session
// lock.
func (r *Reconciler) healPhase(ctx context.Context, log *slog.Logger, rn *supervise.Runner, seen session.Phase, seenAt time.Time) error {
	if !drifts(rn, seen) {
		return nil
	}
	if !seenAt.IsZero() && !seenAt.After(rn.LastWrite()) {
		return nil
	}
	fresh, err := r.api.GetSession(ctx, rn.ID())
	switch {
	case grpcstatus.Code(err) == codes.NotFound:
		return nil // the DELETED event stops the runner
	case err != nil:
		return wrapRetry("read session", rn.ID(), err)
	}
	p := session.PhaseOf(fresh)
	if !drifts(rn, p) {
		return nil // the event was stale
	}
	switch {
	case p == session.PhaseStopping:
		return r.stopSession(ctx, log, rn.ID(), false, nil)
	case p.Terminal():
		// No phase write, like a deletion: the session already has its
		// final phase, and writing Stopped over someone's Failed would
		// change what they said.
		log.Warn("session is over but its runner still runs here: stopping the runner", slog.String("current_phase", string(p)))
		rn.RequestStop(ctx, true)
		return nil
	}
	if err := r.sup.WriteRunning(ctx, rn); err != nil {
		return wrapRetry("heal phase of", rn.ID(), err)
	}
	if _, _, serving := rn.Serving(); !serving {
		return nil // lost (its record is another replica's) or ended meanwhile: nothing written
	}
	log.Info("phase drift healed: the runner runs here", slog.String("current_phase", string(p)), slog.String(logkey.Phase, string(session.PhaseRunning)))
	return nil
}

// drifts reports whether phase p disagrees with rn (see the rules above).
func drifts(rn *supervise.Runner, p session.Phase) bool {
	if _, _, serving := rn.Serving(); !serving {
		return false
	}
	switch p {
	case session.PhaseNone, session.PhasePending, session.PhaseCreating, session.PhaseStopping:
		return true
	default:
		return p.Terminal()
	}
}
