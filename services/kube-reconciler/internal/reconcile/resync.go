package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/kubelabel"
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/types"
)

// The periodic resync (package resync) drives the methods below, one object
// at a time, each under the object's lock (lockKey) so it never interleaves
// with the event path's handler of the same object in this process.
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
// namespace's ownership is read again (at most once per pass).
func (r *Reconciler) StartPass() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked()
	clear(r.ensured)
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
// one no longer stored. Errors are the event path's (retry next pass).
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
	return r.dispatch(ctx, o, false, log)
}

// DeleteOrphanSession deletes the AgenticSessions of session id (those the
// status informer has indexed) when KV ambient-objects has no such session:
// its DELETED event was lost (dead-lettered during a Kubernetes outage, say).
// It re-checks KV under the session's lock and leaves a session the event
// path handled within HandledFor alone. It returns how many CRs it deleted.
func (r *Reconciler) DeleteOrphanSession(ctx context.Context, id string) (int, error) {
	key := lockKey(eventsv1.Resource_RESOURCE_SESSIONS, id, "")
	defer r.keys.Lock(key)()
	if r.recentlyHandled(key) {
		return 0, nil
	}
	o, err := stored(ctx, r.cfg.Objects, eventsv1.Resource_RESOURCE_SESSIONS, id)
	if err != nil && !errors.Is(err, events.ErrBadEvent) {
		return 0, err
	}
	if o != nil || errors.Is(err, events.ErrBadEvent) {
		return 0, nil // stored (an undecodable entry is not proof of a delete)
	}
	crs := r.trackedCRs(id)
	if err := r.deleteAll(ctx, crs, types.NamespacedName{}); err != nil {
		return 0, err
	}
	if r.cfg.Tracker != nil {
		r.cfg.Tracker.Forget(id)
	}
	if len(crs) > 0 {
		r.cfg.Log.InfoContext(ctx, "agenticsession of a deleted session removed by resync", slog.String(logkey.SessionID, id), slog.Int(logkey.Count, len(crs)))
	}
	return len(crs), nil
}

// PruneOrphanBindings deletes project projectID's managed RoleBindings in its
// own namespace when no project settings in KV ambient-objects name the
// project any more: the settings' DELETED event (or the removal of its last
// group_access entry) was lost. It re-reads every stored settings object
// under the project's lock first, and leaves a project whose settings the
// event path handled within HandledFor alone. Only the project's own namespace,
// when it is the project's (checkNamespace), and only bindings with the
// project's id label that this installation owns (Config.Owner) are touched.
func (r *Reconciler) PruneOrphanBindings(ctx context.Context, projectID string) (int, error) {
	key := lockKey(eventsv1.Resource_RESOURCE_PROJECT_SETTINGS, "", projectID)
	defer r.keys.Lock(key)()
	if r.recentlyHandled(key) {
		return 0, nil
	}
	named, err := SettingsProjects(ctx, r.cfg.Objects)
	if err != nil {
		return 0, err
	}
	if named[kubelabel.ProjectKey(projectID)] {
		return 0, nil
	}
	ns, err := r.projectNamespace(projectID)
	if err != nil || projectID == "" {
		return 0, nil //nolint:nilerr // not a project namespace: nothing of ours to prune
	}
	labels, err := spec.ProjectLabels(projectID, "project_id")
	if err != nil {
		return 0, nil //nolint:nilerr // no valid label, so no binding of ours carries it
	}
	exists, err := r.checkNamespace(ctx, ns, projectID)
	if err != nil || !exists {
		var refused *RefusedError
		if errors.As(err, &refused) {
			return 0, nil // not ours: never pruned
		}
		return 0, err
	}
	res, err := r.cfg.Applier.RoleBindings(ctx, ns, labels, nil, r.cfg.Owner)
	r.cfg.Metrics.Pruned(ctx, res.Pruned)
	if err != nil {
		return res.Pruned, err
	}
	if res.Pruned > 0 {
		r.cfg.Log.InfoContext(ctx, "rolebindings of deleted project settings removed by resync", slog.String(logkey.ProjectID, projectID),
			slog.String(logkey.Namespace, ns), slog.Int(logkey.Count, res.Pruned))
	}
	return res.Pruned, nil
}

// SettingsProjects returns the projects named by the project settings stored
// in KV ambient-objects, by kubelabel.ProjectKey: that is how their
// bindings are labelled, so settings of "Future" keep the bindings labelled
// "future".
// Undecodable entries are skipped.
func SettingsProjects(ctx context.Context, kv jetstream.KeyValue) (map[string]bool, error) {
	filter := events.ResourceToken(eventsv1.Resource_RESOURCE_PROJECT_SETTINGS) + ".*"
	es, err := bus.ReadKVKeys(ctx, kv, []string{filter})
	if err != nil {
		return nil, fmt.Errorf("list cached project settings: %w", err)
	}
	out := map[string]bool{}
	for _, e := range es {
		o := &eventsv1.Object{}
		if proto.Unmarshal(e.Value(), o) == nil && o.GetProjectSettings() != nil {
			out[kubelabel.ProjectKey(o.GetProjectSettings().GetProjectId())] = true
		}
	}
	return out, nil
}
