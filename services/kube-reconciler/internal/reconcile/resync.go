package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/kubelabel"
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/types"
)

// The periodic resync (package resync) drives the methods below, one object
// at a time, each under the object's lock (lockKey) so it never interleaves
// with the event path's handler of the same object in this process, and
// ResyncObject writes only while this member owns the object's partition,
// so it never undoes what the partition's new owner (another process) did.
//
// An object the event path handled successfully within the grace is left
// alone: the informer writes KV ambient-objects just after it publishes, so
// right after a handler ran KV may still hold the state before it (a
// session still present whose DELETED was just handled), and acting on that
// would undo the handler's work until the next pass. Only successes are
// remembered: an object whose event failed or was dead-lettered is resynced.

// recentlyHandled reports whether the event path handled key within
// HandledFor.
func (r *Reconciler) recentlyHandled(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.handled[key]
	return ok && time.Since(at) < r.cfg.HandledFor
}

// StartPass prepares a resync pass: it drops the successes older than
// HandledFor and forgets every namespace checked so far, so each project
// namespace's ownership is read again (at most once per pass), and the
// API's project settings listed for the orphan checks.
func (r *Reconciler) StartPass() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked()
	clear(r.ensured)
	r.apiSettings = nil
}

// HandledCount is the number of objects remembered as recently handled.
func (r *Reconciler) HandledCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.handled)
}

// ResyncObject reconciles the object stored under (res, id) in KV
// ambient-objects as if an event carried it (an AgenticSession whose cached
// copy already holds what would be applied is not applied again: result
// metrics.ResultUnchanged). It returns metrics.ResultRecent
// for an object the event path handled within HandledFor, and ResultSkipped for
// one no longer stored or whose partition this member no longer owns
// (Config.Partitions), checked under the object's lock and watched while it
// writes. Errors are the event path's (retry next pass).
//
// The ownership check is what keeps a pass from undoing the work of the
// partition's new owner, which the per-object lock (this process only) and
// recentlyHandled (this process's successes only) cannot see. The pass
// checks ownership when it comes to the object, then waits for the
// object's lock, behind this member's handler of the object, which the
// partition's move cancels; the move hands the partition over once that
// handler ended, and the new owner can handle a DELETED before the
// informer removes the session from KV (it writes KV after it publishes).
// Without the check the pass then read the session from KV, still there,
// and applied its CR after the new owner had deleted it: a running agent
// for a deleted session until the next pass.
func (r *Reconciler) ResyncObject(ctx context.Context, res eventsv1.Resource, id string) (string, error) {
	o, err := stored(ctx, r.cfg.Objects, res, id)
	if errors.Is(err, events.ErrBadEvent) || (err == nil && o == nil) {
		return metrics.ResultSkipped, nil // undecodable or gone: nothing to reconcile
	}
	if err != nil {
		return metrics.ResultError, err
	}
	key := lockKey(res, id, events.ProjectID(o))
	defer r.keys.Lock(key)()
	if r.recentlyHandled(key) {
		return metrics.ResultRecent, nil
	}
	// Read again under the lock: the event path may have moved it on.
	if o, err = stored(ctx, r.cfg.Objects, res, id); err != nil || o == nil {
		return metrics.ResultSkipped, err
	}
	log := r.cfg.Log.With(slog.String(logkey.Resource, events.ResourceToken(res)), slog.String(logkey.ObjectID, id), slog.String("trigger", "resync"))
	wctx, stop, owned := r.whileOwned(ctx, id)
	if !owned {
		log.DebugContext(ctx, "resync of object left to its partition's new owner")
		return metrics.ResultSkipped, nil
	}
	defer stop()
	result, err := r.dispatch(wctx, o, false, log)
	if err != nil && errors.Is(context.Cause(wctx), group.ErrPartitionMoved) {
		log.DebugContext(ctx, "resync of object cancelled: its partition moved", slog.Any(logkey.Err, err))
		return metrics.ResultSkipped, nil
	}
	return result, err
}

// whileOwned returns ctx cancelled with cause group.ErrPartitionMoved as
// soon as this member no longer owns objectID's partition, so a write
// still waiting (for the client's rate limiter, a slow namespace check) is
// not sent after the partition's new owner may have acted; owned is false,
// and nothing started, when the member does not own it now. stop ends the
// watch and waits for it. What it cannot stop is a request the API server
// already has: the move's hand-off to the new owner takes a heartbeat and
// a consumer re-creation (libs/group, handoff.go), far longer than one
// request.
func (r *Reconciler) whileOwned(ctx context.Context, objectID string) (_ context.Context, stop func(), owned bool) {
	p := r.cfg.Partitions
	if p == nil {
		return ctx, func() {}, true
	}
	// The channel before the check: a move after the check closes it.
	_, _, changed := p.State()
	if !p.OwnsObject(objectID) {
		return ctx, nil, false
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	// Owned by the caller: stop cancels it and waits; it also ends at the
	// move it reports.
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			_, _, changed = p.State()
			if !p.OwnsObject(objectID) {
				cancel(group.ErrPartitionMoved)
				return
			}
		}
	}()
	return ctx, func() { cancel(nil); <-done }, true
}

// ErrNotConfirmed is wrapped by DeleteOrphanSession and PruneOrphanBindings
// when the ambient API could not be asked whether an orphan's source is
// really gone (unreachable, an error other than NotFound): nothing was
// deleted, and the resync checks no more orphans this pass, since the
// next API call would most likely fail the same way.
var ErrNotConfirmed = errors.New("orphan not confirmed by the ambient API")

// Orphan is what DeleteOrphanSession or PruneOrphanBindings did.
type Orphan struct {
	Deleted int // Kubernetes objects deleted
	// Kept: absent from KV ambient-objects but present in the ambient API,
	// so KV is behind (a lost or recreated bucket the informer has not
	// refilled yet) and nothing was deleted.
	Kept bool
}

// DeleteOrphanSession deletes the AgenticSessions of session id (those the
// status informer has indexed) when KV ambient-objects has no such session
// and the ambient API answers NotFound for it: its DELETED event was lost
// (dead-lettered during a Kubernetes outage, say). "Not in KV" alone is no
// proof: the bucket comes back empty when NATS loses its store or the
// bucket is deleted, and stays so until the informer relists; deleting on
// it would delete every live session's CR. It re-checks KV under the
// session's lock and leaves a session the event path handled within
// HandledFor alone; the API is asked only for sessions KV lacks, so a
// normal pass costs one API read per real orphan.
func (r *Reconciler) DeleteOrphanSession(ctx context.Context, id string) (Orphan, error) {
	key := lockKey(eventsv1.Resource_RESOURCE_SESSIONS, id, "")
	defer r.keys.Lock(key)()
	if r.recentlyHandled(key) {
		return Orphan{}, nil
	}
	o, err := stored(ctx, r.cfg.Objects, eventsv1.Resource_RESOURCE_SESSIONS, id)
	if err != nil && !errors.Is(err, events.ErrBadEvent) {
		return Orphan{}, err
	}
	if o != nil || errors.Is(err, events.ErrBadEvent) {
		return Orphan{}, nil // stored (an undecodable entry is not proof of a delete)
	}
	_, err = r.cfg.Source.GetSession(ctx, id)
	switch status.Code(err) {
	case codes.OK:
		return Orphan{Kept: true}, nil
	case codes.NotFound:
	default:
		return Orphan{}, fmt.Errorf("session %s: %w: %w", id, ErrNotConfirmed, err)
	}
	crs := r.trackedCRs(id)
	if err := r.deleteAll(ctx, crs, types.NamespacedName{}); err != nil {
		return Orphan{}, err
	}
	if r.cfg.Tracker != nil {
		r.cfg.Tracker.Forget(id)
	}
	if len(crs) > 0 {
		r.cfg.Log.InfoContext(ctx, "agenticsession of a deleted session removed by resync", slog.String(logkey.SessionID, id), slog.Int(logkey.Count, len(crs)))
	}
	return Orphan{Deleted: len(crs)}, nil
}

// PruneOrphanBindings deletes project projectID's managed RoleBindings in its
// own namespace when no project settings in KV ambient-objects name the
// project any more, and the ambient API confirms it: none of its project
// settings name the project, or the project they name is gone from it
// (GetProject NotFound). The settings' DELETED event (or the removal of its
// last group_access entry) was lost. As for sessions, "not in KV" alone is
// no proof: an empty bucket would prune every user's access. It re-reads
// every stored settings object under the project's lock first, and leaves
// a project whose settings the event path handled within HandledFor alone.
// Only the project's own namespace, when it is the project's
// (checkNamespace), and only bindings with the project's id label that this
// installation owns (Config.Owner) are touched.
func (r *Reconciler) PruneOrphanBindings(ctx context.Context, projectID string) (Orphan, error) {
	key := lockKey(eventsv1.Resource_RESOURCE_PROJECT_SETTINGS, "", projectID)
	defer r.keys.Lock(key)()
	if r.recentlyHandled(key) {
		return Orphan{}, nil
	}
	named, err := SettingsProjects(ctx, r.cfg.Objects)
	if err != nil {
		return Orphan{}, err
	}
	if named[kubelabel.ProjectKey(projectID)] {
		return Orphan{}, nil
	}
	ns, err := r.projectNamespace(projectID)
	if err != nil || projectID == "" {
		return Orphan{}, nil //nolint:nilerr // not a project namespace: nothing of ours to prune
	}
	labels, err := spec.ProjectLabels(projectID, "project_id")
	if err != nil {
		return Orphan{}, nil //nolint:nilerr // no valid label, so no binding of ours carries it
	}
	if kept, err := r.grantedByAPI(ctx, projectID); err != nil || kept {
		return Orphan{Kept: kept}, err
	}
	exists, err := r.checkNamespace(ctx, ns, projectID)
	if err != nil || !exists {
		var refused *RefusedError
		if errors.As(err, &refused) {
			return Orphan{}, nil // not ours: never pruned
		}
		return Orphan{}, err
	}
	res, err := r.cfg.Applier.RoleBindings(ctx, ns, labels, nil, r.cfg.Owner)
	r.cfg.Metrics.Pruned(ctx, res.Pruned)
	if err != nil {
		return Orphan{Deleted: res.Pruned}, err
	}
	if res.Pruned > 0 {
		r.cfg.Log.InfoContext(ctx, "rolebindings of deleted project settings removed by resync", slog.String(logkey.ProjectID, projectID),
			slog.String(logkey.Namespace, ns), slog.Int(logkey.Count, res.Pruned))
	}
	return Orphan{Deleted: res.Pruned}, nil
}

// grantedByAPI reports whether the ambient API still has project settings
// naming projectID (by kubelabel.ProjectKey, as the bindings are labelled)
// of a project it still has. Binding-level differences (an entry removed
// from group_access) are the event path's: this only decides whether KV's
// "no settings at all" is true. The settings are listed at most once per
// pass (StartPass forgets them): orphan projects are few normally, but all
// of them when the bucket is empty, and a list per project would then cost
// projects x settings. A list taken earlier in the pass is safe: settings
// created since, and handled, are left alone by recentlyHandled, and those
// not handled yet have no bindings to lose.
func (r *Reconciler) grantedByAPI(ctx context.Context, projectID string) (bool, error) {
	ids, err := r.apiSettingsProjects(ctx)
	if err != nil {
		return false, fmt.Errorf("project %s: %w: %w", projectID, ErrNotConfirmed, err)
	}
	id, ok := ids[kubelabel.ProjectKey(projectID)]
	if !ok {
		return false, nil
	}
	// The settings' own project id: the label is lower-cased, the API's
	// ids need not be.
	_, err = r.cfg.Source.GetProject(ctx, id)
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.NotFound:
		return false, nil
	default:
		return false, fmt.Errorf("project %s: %w: %w", projectID, ErrNotConfirmed, err)
	}
}

// apiSettingsProjects returns the projects the API's project settings name:
// kubelabel.ProjectKey -> project id as stored. Listed once per pass.
func (r *Reconciler) apiSettingsProjects(ctx context.Context) (map[string]string, error) {
	r.mu.Lock()
	ids := r.apiSettings
	r.mu.Unlock()
	if ids != nil {
		return ids, nil
	}
	list, err := r.cfg.Source.ListProjectSettings(ctx)
	if err != nil {
		return nil, err
	}
	ids = make(map[string]string, len(list))
	for _, ps := range list {
		if p := ps.GetProjectId(); p != "" {
			ids[kubelabel.ProjectKey(p)] = p
		}
	}
	r.mu.Lock()
	r.apiSettings = ids
	r.mu.Unlock()
	return ids, nil
}

// SettingsProjects returns the projects named by the project settings stored
// in KV ambient-objects, by kubelabel.ProjectKey: that is how their
// bindings are labelled, so settings of "Future" keep the bindings labelled
// "future".
// Undecodable entries are skipped.
func SettingsProjects(ctx context.Context, kv jetstream.KeyValue) (map[string]bool, error) {
	return settingsProjects(ctx, kv, "")
}

// settingsProjects is SettingsProjects without the settings of id except.
func settingsProjects(ctx context.Context, kv jetstream.KeyValue, except string) (map[string]bool, error) {
	skip := ""
	if except != "" {
		skip = events.ObjectKey(eventsv1.Resource_RESOURCE_PROJECT_SETTINGS, except)
	}
	filter := events.ResourceToken(eventsv1.Resource_RESOURCE_PROJECT_SETTINGS) + ".*"
	es, err := bus.ReadKVKeys(ctx, kv, []string{filter})
	if err != nil {
		return nil, fmt.Errorf("list cached project settings: %w", err)
	}
	out := map[string]bool{}
	for _, e := range es {
		if e.Key() == skip {
			continue
		}
		o := &eventsv1.Object{}
		if proto.Unmarshal(e.Value(), o) == nil && o.GetProjectSettings() != nil {
			out[kubelabel.ProjectKey(o.GetProjectSettings().GetProjectId())] = true
		}
	}
	return out, nil
}
