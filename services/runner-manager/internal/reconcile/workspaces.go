package reconcile

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// removeWorkspaces deletes the workspaces on this host of sessions the API
// no longer has: a deleted session's prompt, logs and files would stay on
// the host for good otherwise, and fill its disk. Whichever replica ran
// a session holds its workspace, while the delete's event goes to the
// partition's owner, so each replica's resync looks at its own root.
//
// A workspace goes only when its session is not in the list read at
// listedAt, its directory did not change after that (a session created
// since, whose runner just started), a read of the session answers
// NotFound, and no runner of it runs or starts here (checked with the
// removal under the manager's lock). Directories no runner made are never
// touched (runner.Manager.Workspaces).
func (r *Reconciler) removeWorkspaces(ctx context.Context, listed map[string]bool, listedAt time.Time) {
	wss, err := r.mgr.Workspaces()
	if err != nil {
		r.log.Warn("resync: list workspaces", slog.String(logkey.Err, err.Error()))
		return
	}
	for _, ws := range wss {
		if ctx.Err() != nil {
			return
		}
		if listed[ws.SessionID] || !ws.ModTime.Before(listedAt) {
			continue
		}
		log := r.log.With(slog.String(logkey.SessionID, ws.SessionID))
		if _, err := r.api.GetSession(ctx, ws.SessionID); grpcstatus.Code(err) != codes.NotFound {
			if err != nil && ctx.Err() == nil {
				log.Debug("resync: workspace kept: session not confirmed gone", slog.String(logkey.Err, err.Error()))
			}
			continue
		}
		removed, err := r.mgr.RemoveWorkspace(ws.SessionID)
		switch {
		case err != nil:
			log.Warn("resync: remove the workspace of a deleted session", slog.String(logkey.Err, err.Error()))
		case removed:
			log.Info("workspace of a deleted session removed")
		}
	}
}
