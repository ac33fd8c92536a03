package reconcile

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
)

// ReasonReconcileFailed is the reason of the Reconciled=False a session gets
// when its event was dead-lettered: every try failed (Kubernetes refused or
// could not be reached), or the failure could never succeed.
const ReasonReconcileFailed = "ReconcileFailed"

// maxFailureMessage bounds the error text put into a condition.
const maxFailureMessage = 1024

// failureMessage is msg cut to maxFailureMessage bytes.
func failureMessage(msg string) string {
	if len(msg) > maxFailureMessage {
		return strings.ToValidUTF8(msg[:maxFailureMessage], "") // no rune cut in half
	}
	return msg
}

// reportTimeout bounds ReportDeadLetter: it runs in the object's lane.
const reportTimeout = 10 * time.Second

// ReportDeadLetter is the group's OnDeadLetter: a session without a CR
// whose event went to the DLQ gets Reconciled=False, reason
// ReconcileFailed, with the last error, so the user sees why nothing
// happens (the log and the group's metric only tell the operators). The
// other conditions and the phase stay as they are, and the next resync
// tries again; once one succeeds, clearFailure turns the condition into
// Reconciled=True. A session with a CR shows the operator's status and is
// not reported on; projects and settings have no status to write. The
// condition is merged into the session's conditions as the API holds them
// when the report is made (GetSession), never the event's older copy. The
// same report is not written twice (its echo fails again). A failed report
// is logged: the DLQ holds the event either way.
func (r *Reconciler) ReportDeadLetter(ctx context.Context, m group.Message, reason string, cause error) {
	s := m.Event.GetObject().GetSession()
	if s == nil || m.Event.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED {
		return
	}
	id := s.GetMetadata().GetId()
	log := r.cfg.Log.With(slog.String(logkey.SessionID, id), slog.String(logkey.Reason, reason))
	if len(r.trackedCRs(id)) > 0 {
		// The session has a CR: its status (the operator's) is what the
		// session shows, and the write-back would put the CR's conditions
		// over this one, whose echo would fail and be reported again.
		log.DebugContext(ctx, "dead-lettered session has a CR: not reported on the session")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	// The conditions are the API's, read now, not the event's: the event
	// is as old as all its tries, and the write replaces the whole list,
	// so building on the event's copy put back what other writers changed
	// since (a condition added, a newer value of one). The window left is
	// this read's to the write's, as for the status write-back's
	// GetSession; the API has no compare-and-swap to close it.
	cur, err := r.cfg.Source.GetSession(ctx, id)
	if !reportGoesOn(ctx, log, err) {
		return
	}
	conds, err := session.ParseConditions(cur.GetConditions())
	if err != nil {
		conds = nil // not JSON we can keep: ours replaces it
	}
	msg := failureMessage(reason + ": " + cause.Error())
	if c, ok := conds.Get(ConditionReconciled); ok && c.Status == session.StatusFalse && c.Reason == ReasonReconcileFailed && c.Message == msg {
		return // reported already: this is the echo of the report, failing again
	}
	js := conds.Set(session.Condition{Type: ConditionReconciled, Status: session.StatusFalse, Reason: ReasonReconcileFailed, Message: msg},
		time.Now()).JSON()
	updated, err := r.cfg.API.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: &js})
	if !reportGoesOn(ctx, log, err) {
		return
	}
	if r.cfg.Tracker != nil {
		r.cfg.Tracker.Observe(updated, types.NamespacedName{})
	}
	log.InfoContext(ctx, "dead-lettered session reported: Reconciled=False "+ReasonReconcileFailed)
}

// reportGoesOn reports whether the dead-letter report goes on after an API
// call that returned err: a session deleted meanwhile (NotFound) ends it
// quietly, any other error ends it logged (the DLQ holds the event either
// way).
func reportGoesOn(ctx context.Context, log *slog.Logger, err error) bool {
	switch status.Code(err) {
	case codes.OK:
		return true
	case codes.NotFound:
		return false
	default:
		log.WarnContext(ctx, "dead-lettered session not reported on the session", slog.Any(logkey.Err, err))
		return false
	}
}
