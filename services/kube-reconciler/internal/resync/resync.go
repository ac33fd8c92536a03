// Package resync is the kube-reconciler's periodic, level-triggered resync
// (issue 14): at an interval (RESYNC_INTERVAL, jittered), every object of the
// informer's cache (KV ambient-objects) in this member's partitions is
// reconciled again, and what exists in Kubernetes although its source is gone
// from the cache is deleted: AgenticSessions of sessions no longer stored,
// and the RoleBindings of projects no project settings name any more, each
// only once the ambient API confirms its source is gone (package
// reconcile): the cache comes back empty when NATS loses its store or the
// bucket is deleted, and "not cached" would then delete everything. So an
// event lost for good (dead-lettered during a Kubernetes outage) is a delay
// of at most one interval after the outage, never a loss. A pass that failed,
// or left objects or orphans failed, is retried sooner: after retryMin (10s),
// doubling up to the interval, so the repair follows the end of an outage
// within seconds instead of waiting out a whole interval; a clean pass
// returns to the interval. Namespaces are never deleted: a deleted project
// keeps its namespace.
//
// Each replica resyncs only the objects of its own partitions
// (group.Assignment, the same ones its consumer handles), so replicas share
// the work, a canary's slice stays the canary's, and in this process a
// resync of an object never interleaves with a handler of the same object
// (package reconcile locks per object). Orphan RoleBindings belong to the
// partition of their project's id. Ownership may move mid-pass: an object
// is then written only while this member still owns it, checked under the
// object's lock right before the write and cancelled when the partition
// moves (reconcile.Reconciler.ResyncObject), so the pass never re-applies
// a session whose DELETED the new owner just handled.
//
// An object the event path handled within the grace (min(1m, interval/2)),
// and an AgenticSession or RoleBinding created within it, is left to the
// event path: KV is written just after each event is published, so a fresh
// object may not be in the cache yet.
//
// Cost per pass: one KV read per owned object, one namespace read per owned
// project, a no-op server-side apply per RoleBinding, and one list of the
// managed RoleBindings, and per orphan one API read (for bindings, one list
// of the API's project settings per pass besides); an AgenticSession whose cached copy already holds
// what would be applied (apply.Applier.UpToDate) is not applied again, so
// sessions cost no Kubernetes call when nothing changed.
package resync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/kubelabel"
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ErrInvalidConfig is returned by New for a Config missing a dependency.
var ErrInvalidConfig = errors.New("invalid resync config")

// maxGrace bounds the grace: an object handled or created within it is left
// to the event path.
const maxGrace = time.Minute

// jitter is the share of the interval each wait varies by (+/-), so replicas
// started together do not pass in lockstep.
const jitter = 0.1

// retryMin is the first wait after a pass that did not finish clean; it
// doubles per further such pass up to the interval. Short, because that
// pass's failures are what the resync exists to repair (events
// dead-lettered in a Kubernetes outage), and one interval (5 min by
// default) after the outage ended is long; not shorter, so a pass failing
// on a still unreachable Kubernetes does not hammer it.
const retryMin = 10 * time.Second

// reconciler is what the resync asks of package reconcile.
type reconciler interface {
	ResyncObject(ctx context.Context, res eventsv1.Resource, id string) (string, error)
	DeleteOrphanSession(ctx context.Context, id string) (reconcile.Orphan, error)
	PruneOrphanBindings(ctx context.Context, projectID string) (reconcile.Orphan, error)
	StartPass()
}

var _ reconciler = (*reconcile.Reconciler)(nil)

// assignment is this member's partitions (*group.Assignment).
type assignment interface {
	Owned() []int
	OwnsObject(objectID string) bool
}

var _ assignment = (*group.Assignment)(nil)

// sessionCRs is the status informer's view of the managed AgenticSessions.
type sessionCRs interface {
	HasSynced() bool
	Sessions() map[string]time.Time
}

// Config configures a Resyncer.
type Config struct {
	Objects    jetstream.KeyValue // ambient-objects, the informer's cache
	Reconciler reconciler
	CRs        sessionCRs
	Kube       kubernetes.Interface // lists the managed RoleBindings
	Assignment assignment           // this member's partitions
	// Owner is this installation: only its RoleBindings are candidates
	// for orphans (AgenticSessions: CRs filters them).
	Owner spec.Owner
	// Interval between passes (before jitter).
	Interval time.Duration
	Metrics  *metrics.Metrics
	Log      *slog.Logger
}

// Resyncer runs the passes. Run it once.
type Resyncer struct {
	cfg   Config
	grace time.Duration
	// retry is the wait after a pass that did not finish clean (see
	// retryMin); Run owns it.
	retry *backoff.ExponentialBackOff
}

// New validates cfg.
func New(cfg Config) (*Resyncer, error) {
	if cfg.Objects == nil || cfg.Reconciler == nil || cfg.CRs == nil || cfg.Kube == nil || cfg.Assignment == nil || cfg.Metrics == nil || cfg.Log == nil {
		return nil, fmt.Errorf("objects, reconciler, crs, kube, assignment, metrics and log are required: %w", ErrInvalidConfig)
	}
	if cfg.Owner.Instance == "" {
		return nil, fmt.Errorf("instance is required, or orphans of other installations would look like ours: %w", ErrInvalidConfig)
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("interval %s: %w", cfg.Interval, ErrInvalidConfig)
	}
	retry := &backoff.ExponentialBackOff{
		InitialInterval:     min(retryMin, cfg.Interval),
		RandomizationFactor: jitter,
		Multiplier:          2,
		MaxInterval:         cfg.Interval,
	}
	retry.Reset()
	return &Resyncer{cfg: cfg, grace: Grace(cfg.Interval), retry: retry}, nil
}

// Grace is how long, for a resync every interval, an object the event path
// handled (reconcile.Config.HandledFor) or a Kubernetes object created is
// left to the event path: min(1m, interval/2).
func Grace(interval time.Duration) time.Duration { return min(maxGrace, interval/2) }

// Run passes every Interval (+/-10%) until ctx ends, then returns nil. A
// failed pass is logged and counted; the next one starts over, sooner when
// the pass did not finish clean (see retryMin).
func (r *Resyncer) Run(ctx context.Context) error {
	return r.run(ctx, r.interval())
}

// interval is the wait before the next pass after a clean one.
func (r *Resyncer) interval() time.Duration {
	return time.Duration(float64(r.cfg.Interval) * (1 - jitter + 2*jitter*rand.Float64())) //nolint:gosec // jitter needs no crypto
}

// run is Run with the wait before the first pass given (tests pass at
// once).
func (r *Resyncer) run(ctx context.Context, wait time.Duration) error {
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		start := time.Now()
		sum, err := r.Pass(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.cfg.Metrics.ResyncRun(ctx, metrics.RunError)
			r.cfg.Log.WarnContext(ctx, "resync pass failed, next pass retries", slog.Any(logkey.Err, err))
		case sum.Idle:
			r.cfg.Metrics.ResyncRun(ctx, metrics.RunIdle)
		case sum.Failed > 0:
			r.cfg.Metrics.ResyncRun(ctx, metrics.RunOK)
			r.cfg.Log.WarnContext(ctx, "resync pass done; objects failed", slog.Int(logkey.Count, sum.Objects), slog.Int("changed", sum.Changed),
				slog.Int("failed", sum.Failed), slog.Int("orphans_deleted", sum.Orphans), slog.Int("orphans_failed", sum.OrphansFailed),
				slog.Duration(logkey.Duration, time.Since(start)), slog.String("first_failed", sum.FirstFailed), slog.Any(logkey.Err, sum.FirstErr))
		default:
			r.cfg.Metrics.ResyncRun(ctx, metrics.RunOK)
			r.cfg.Log.InfoContext(ctx, "resync pass done", slog.Int(logkey.Count, sum.Objects), slog.Int("changed", sum.Changed),
				slog.Int("failed", sum.Failed), slog.Int("orphans_deleted", sum.Orphans), slog.Int("orphans_failed", sum.OrphansFailed),
				slog.Duration(logkey.Duration, time.Since(start)))
		}
		if sum.Kept > 0 {
			// Absent from KV, present in the API: the cache is behind (a
			// lost or recreated bucket not refilled yet).
			r.cfg.Log.WarnContext(ctx, "resync kept orphans the ambient API still has: KV ambient-objects is behind", slog.Int(logkey.Count, sum.Kept))
		}
		wait = r.next(ctx, sum, err)
	}
}

// next is the wait after a pass that returned sum and err: the retry
// backoff while passes fail or leave failures behind, the interval once
// one is clean.
func (r *Resyncer) next(ctx context.Context, sum Summary, err error) time.Duration {
	if err != nil || sum.Failed > 0 || sum.OrphansFailed > 0 {
		wait := r.retry.NextBackOff()
		r.cfg.Log.InfoContext(ctx, "resync pass left failures, retrying early", slog.Duration("retry_in", wait),
			slog.Int("failed", sum.Failed), slog.Int("orphans_failed", sum.OrphansFailed))
		return wait
	}
	r.retry.Reset()
	return r.interval()
}

// Summary is what one pass did.
type Summary struct {
	Idle    bool // no partition owned: nothing done
	Objects int  // cached objects of owned partitions looked at
	Changed int  // of them, reconciled with a write (result ok or invalid)
	Failed  int  // of them, failed (retried next pass)
	// FirstFailed (resource/id) and FirstErr: the pass's first failure,
	// the sample its summary line names.
	FirstFailed string
	FirstErr    error
	Orphans     int // AgenticSessions and RoleBindings deleted
	// OrphansFailed: orphans (sessions, projects) whose deletion failed;
	// the others are still done, and the next pass retries these.
	OrphansFailed int
	// Kept: orphans of KV (sessions, projects) the ambient API still has,
	// so not deleted.
	Kept int
}

// Pass runs one resync over this member's partitions. It returns an error
// only when it could not look at everything (KV or Kubernetes unreachable);
// objects that fail alone are counted in Summary.Failed and logged.
func (r *Resyncer) Pass(ctx context.Context) (Summary, error) {
	var sum Summary
	if len(r.cfg.Assignment.Owned()) == 0 {
		sum.Idle = true
		return sum, nil
	}
	r.cfg.Reconciler.StartPass()
	started := time.Now()
	stored := map[eventsv1.Resource][]string{}
	// Keys only: each object is read again, under its lock, when resynced.
	es, err := bus.ReadKVKeys(ctx, r.cfg.Objects, nil, jetstream.MetaOnly())
	if err != nil {
		return sum, fmt.Errorf("list cached objects: %w", err)
	}
	for _, e := range es {
		if res, id, err := events.ParseObjectKey(e.Key()); err == nil {
			stored[res] = append(stored[res], id)
		}
	}
	// Namespaces first, so a project's settings and sessions find theirs.
	for _, res := range []eventsv1.Resource{eventsv1.Resource_RESOURCE_PROJECTS, eventsv1.Resource_RESOURCE_PROJECT_SETTINGS, eventsv1.Resource_RESOURCE_SESSIONS} {
		for _, id := range stored[res] {
			if !r.cfg.Assignment.OwnsObject(id) {
				continue
			}
			if ctx.Err() != nil {
				return sum, ctx.Err()
			}
			sum.Objects++
			result, err := r.cfg.Reconciler.ResyncObject(ctx, res, id)
			r.cfg.Metrics.ResyncObject(ctx, events.ResourceToken(res), result)
			switch {
			case err != nil:
				// One warning per pass (Run, with the first failure as a
				// sample), not one per object: with the kube-apiserver or
				// the API down every object fails at every pass (871
				// warnings in a 6-minute outage of the chaos suite).
				if sum.Failed == 0 {
					sum.FirstFailed, sum.FirstErr = events.ResourceToken(res)+"/"+id, err
				}
				sum.Failed++
				r.cfg.Log.DebugContext(ctx, "resync of object failed", slog.String(logkey.Resource, events.ResourceToken(res)),
					slog.String(logkey.ObjectID, id), slog.Any(logkey.Err, err))
			case result == metrics.ResultOK || result == metrics.ResultInvalid:
				sum.Changed++
			}
			r.cfg.Log.DebugContext(ctx, "object resynced", slog.String(logkey.Resource, events.ResourceToken(res)),
				slog.String(logkey.ObjectID, id), slog.String("result", result))
		}
	}
	// An orphan is deleted only once the API confirms its source is gone
	// (package reconcile); when the API cannot answer, the pass stops
	// checking orphans: each further check would fail the same way.
	if err := r.orphanSessions(ctx, stored[eventsv1.Resource_RESOURCE_SESSIONS], started, &sum); err != nil {
		return sum, err
	}
	return sum, r.orphanBindings(ctx, started, &sum)
}

// orphanSessions deletes the AgenticSessions of owned sessions no longer in
// the cache, except those created within the grace before the pass began.
// A failure of one is logged and counted in sum, and the others go on; an
// error is returned only when the check cannot go on (cache not synced,
// the API unable to confirm).
func (r *Resyncer) orphanSessions(ctx context.Context, storedIDs []string, started time.Time, sum *Summary) error {
	if !r.cfg.CRs.HasSynced() {
		return errors.New("agenticsession cache not synced: orphans not checked")
	}
	stored := make(map[string]bool, len(storedIDs))
	for _, id := range storedIDs {
		stored[id] = true
	}
	for id, created := range r.cfg.CRs.Sessions() {
		if stored[id] || !r.cfg.Assignment.OwnsObject(id) || created.After(started.Add(-r.grace)) {
			continue
		}
		o, err := r.cfg.Reconciler.DeleteOrphanSession(ctx, id)
		if err := r.orphanDone(ctx, metrics.KindAgenticSessions, logkey.SessionID, id, o, err, sum); err != nil {
			return err
		}
	}
	return nil
}

// orphanDone accounts for one orphan's outcome in sum. It returns err when
// the pass must stop checking orphans: ctx ended, or the API could not
// confirm (reconcile.ErrNotConfirmed).
func (r *Resyncer) orphanDone(ctx context.Context, kind, idKey, id string, o reconcile.Orphan, err error, sum *Summary) error {
	sum.Orphans += o.Deleted
	r.cfg.Metrics.ResyncOrphans(ctx, kind, o.Deleted)
	if o.Kept {
		sum.Kept++
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, reconcile.ErrNotConfirmed):
		return fmt.Errorf("orphan %s not checked, none more this pass: %w", kind, err)
	}
	sum.OrphansFailed++
	r.cfg.Log.WarnContext(ctx, "resync of orphan failed, next pass retries", slog.String("kind", kind), slog.String(idKey, id), slog.Any(logkey.Err, err))
	return nil
}

// orphanBindings prunes the managed RoleBindings, in their project's own
// namespace, of owned projects that no stored project settings name, except
// bindings created within the grace before the pass began. Failures are as
// in orphanSessions.
func (r *Resyncer) orphanBindings(ctx context.Context, started time.Time, sum *Summary) error {
	named, err := reconcile.SettingsProjects(ctx, r.cfg.Objects)
	if err != nil {
		return err
	}
	candidates := map[string]bool{}
	for _, sel := range r.cfg.Owner.Selectors() {
		opts := metav1.ListOptions{LabelSelector: sel, Limit: 500}
		for {
			list, err := r.cfg.Kube.RbacV1().RoleBindings(metav1.NamespaceAll).List(ctx, opts)
			if err != nil {
				return fmt.Errorf("list managed rolebindings: %w", err)
			}
			for _, rb := range list.Items {
				p := rb.Labels[spec.LabelProjectID]
				ns, err := spec.NamespaceName(p, "project_id")
				if err != nil || rb.Namespace != ns || named[kubelabel.ProjectKey(p)] || !r.cfg.Assignment.OwnsObject(p) || rb.CreationTimestamp.After(started.Add(-r.grace)) {
					continue
				}
				candidates[p] = true
			}
			if opts.Continue = list.Continue; opts.Continue == "" {
				break
			}
		}
	}
	for p := range candidates {
		o, err := r.cfg.Reconciler.PruneOrphanBindings(ctx, p)
		if err := r.orphanDone(ctx, metrics.KindRoleBindings, logkey.ProjectID, p, o, err, sum); err != nil {
			return err
		}
	}
	return nil
}
