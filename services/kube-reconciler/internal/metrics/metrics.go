// Package metrics defines the kube-reconciler's metrics as OTel
// instruments, exported like every other service's (Prometheus /metrics
// and OTLP when configured). All names live here; use New, or Discard in
// tests that do not look at them.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Reconcile results (attribute "result").
const (
	ResultOK      = "ok"      // desired state written (or already there)
	ResultInvalid = "invalid" // bad input, reported on the session or in logs, event acked
	ResultError   = "error"   // failed, will be retried
	ResultSkipped = "skipped" // not for this service (session not selected)
	// ResultUnchanged: resync found the object as desired, nothing written.
	ResultUnchanged = "unchanged"
	// ResultRecent: resync left the object to the event path, which handled
	// it within the grace.
	ResultRecent = "recent"
)

// Resync pass results (attribute "result" of the resync runs).
const (
	RunOK    = "ok"    // every owned object looked at
	RunError = "error" // the pass stopped early (KV or Kubernetes unreachable)
	RunIdle  = "idle"  // this member owns no partition (not joined yet)
)

// Kinds of orphans the resync deletes (attribute "kind").
const (
	KindAgenticSessions = "agenticsessions"
	KindRoleBindings    = "rolebindings"
)

// Reasons of the rejected counter (attribute "reason"): the fixed set
// docs/operations.md#metrics lists, each as reason="..."
// (TestRejectReasonsDocumented holds the two together).
const (
	// RejectInvalidField: a session field the AgenticSession cannot take.
	RejectInvalidField = "invalid_field"
	// RejectForbidden: the kube-apiserver refused a session's apply (403).
	RejectForbidden = "forbidden"
	// RejectInvalidName: a project id that makes no namespace name.
	RejectInvalidName = "invalid_name"
	// RejectNamespaceDenied: the namespace of the project (of a project,
	// its settings or a session) matches NAMESPACE_DENY_LIST.
	RejectNamespaceDenied = "namespace_denied"
	// RejectNamespaceNotOwned: that namespace exists without the project's
	// ownership labels.
	RejectNamespaceNotOwned = "namespace_not_owned"
	// RejectInvalidProject: project settings whose project id is empty or
	// makes no namespace name.
	RejectInvalidProject = "invalid_project"
	// RejectMalformedGroupAccess: a group_access that does not parse.
	RejectMalformedGroupAccess = "malformed_group_access"
	// RejectGroupAccessEntry: a group_access entry with a role off
	// ROLE_ALLOW_LIST, an empty field or an invalid binding name.
	RejectGroupAccessEntry = "group_access_entry"
	// RejectRoleBindingNotOwned: a group_access entry whose RoleBinding
	// name is taken by one this installation does not manage.
	RejectRoleBindingNotOwned = "rolebinding_not_owned"
)

// RejectReasons returns every reason Reject is called with.
func RejectReasons() []string {
	return []string{RejectInvalidField, RejectForbidden, RejectInvalidName, RejectNamespaceDenied, RejectNamespaceNotOwned,
		RejectInvalidProject, RejectMalformedGroupAccess, RejectGroupAccessEntry, RejectRoleBindingNotOwned}
}

// Instrument names. The Prometheus exporter turns '.' into '_' and adds
// the unit and _total suffixes, so /metrics keeps the names the service
// had when it used the Prometheus client (ambient_kube_reconciler_*).
const (
	nameReconciles    = "ambient_kube_reconciler.reconciles"
	nameLatency       = "ambient_kube_reconciler.reconcile.duration"
	nameRejected      = "ambient_kube_reconciler.rejected"
	namePruned        = "ambient_kube_reconciler.rolebindings.pruned"
	nameStatusWrites  = "ambient_kube_reconciler.status.writes"
	nameStatusSkips   = "ambient_kube_reconciler.status.unchanged"
	nameStatusOthers  = "ambient_kube_reconciler.status.not_owned"
	nameResyncRuns    = "ambient_kube_reconciler.resync.runs"
	nameResyncObjects = "ambient_kube_reconciler.resync.objects"
	nameResyncOrphans = "ambient_kube_reconciler.resync.orphans.deleted"
	nameResyncLast    = "ambient_kube_reconciler.resync.last_success.timestamp"
	nameStatusCached  = "ambient_kube_reconciler.status.cached_sessions"
	nameRecent        = "ambient_kube_reconciler.recently_handled_objects"
)

const (
	attrKind     = "kind"
	attrReason   = "reason"
	attrResource = "resource"
	attrResult   = "result"
)

// Metrics is safe for concurrent use.
type Metrics struct {
	reconciles    metric.Int64Counter     // resource, result
	latency       metric.Float64Histogram // resource
	rejected      metric.Int64Counter     // resource, reason
	pruned        metric.Int64Counter
	statusWrites  metric.Int64Counter // result
	statusSkips   metric.Int64Counter
	statusOthers  metric.Int64Counter
	resyncRuns    metric.Int64Counter // result
	resyncObjects metric.Int64Counter // resource, result
	resyncOrphans metric.Int64Counter // kind
	// lastResync is the unix time (seconds) of the last complete resync
	// pass, read by an observable gauge; 0 before the first.
	lastResync atomic.Int64
}

// New creates the instruments on m (nil: a meter that records nothing).
func New(m metric.Meter) (*Metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("kube-reconciler")
	}
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	out := &Metrics{
		reconciles:    counter(nameReconciles, "Events reconciled, by resource and result."),
		rejected:      counter(nameRejected, "Inputs refused: invalid session fields, sessions Kubernetes forbids (403), group_access entries off the allow-list or with invalid names, namespaces not ours."),
		pruned:        counter(namePruned, "Managed RoleBindings deleted because their group_access entry is gone."),
		statusWrites:  counter(nameStatusWrites, "UpdateSessionStatus calls, by result."),
		statusSkips:   counter(nameStatusSkips, "AgenticSession status checks that found nothing to write."),
		statusOthers:  counter(nameStatusOthers, "AgenticSession status changes left to the replica that owns the session's partition."),
		resyncRuns:    counter(nameResyncRuns, "Periodic resync passes, by result (ok, error, idle)."),
		resyncObjects: counter(nameResyncObjects, "Cached objects reconciled by the periodic resync, by resource and result."),
		resyncOrphans: counter(nameResyncOrphans, "Objects deleted by the resync because their source is gone from the cache (a lost delete), by kind."),
	}
	latency, err := m.Float64Histogram(nameLatency, metric.WithDescription("Time to reconcile one event."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384))
	errs = append(errs, err)
	out.latency = latency
	last, err := m.Int64ObservableGauge(nameResyncLast, metric.WithDescription("Unix time of the last complete resync pass."), metric.WithUnit("s"))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create kube-reconciler metrics: %w", err)
	}
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if t := out.lastResync.Load(); t > 0 {
			o.ObserveInt64(last, t)
		}
		return nil
	}, last); err != nil {
		return nil, fmt.Errorf("register resync gauge: %w", err)
	}
	return out, nil
}

// Observe records one reconcile.
func (m *Metrics) Observe(ctx context.Context, resource, result string, took time.Duration) {
	m.reconciles.Add(ctx, 1, metric.WithAttributes(attribute.String(attrResource, resource), attribute.String(attrResult, result)))
	m.latency.Record(ctx, took.Seconds(), metric.WithAttributes(attribute.String(attrResource, resource)))
}

// Reject counts one refused input of resource; reason is one of
// RejectReasons.
func (m *Metrics) Reject(ctx context.Context, resource, reason string) {
	m.rejected.Add(ctx, 1, metric.WithAttributes(attribute.String(attrResource, resource), attribute.String(attrReason, reason)))
}

// Pruned counts n managed RoleBindings deleted.
func (m *Metrics) Pruned(ctx context.Context, n int) {
	if n > 0 {
		m.pruned.Add(ctx, int64(n))
	}
}

// StatusWrite counts one UpdateSessionStatus call by result.
func (m *Metrics) StatusWrite(ctx context.Context, result string) {
	m.statusWrites.Add(ctx, 1, metric.WithAttributes(attribute.String(attrResult, result)))
}

// StatusUnchanged counts one status check that found nothing to write.
func (m *Metrics) StatusUnchanged(ctx context.Context) { m.statusSkips.Add(ctx, 1) }

// StatusNotOwned counts one CR status left to its partition's owner.
func (m *Metrics) StatusNotOwned(ctx context.Context) { m.statusOthers.Add(ctx, 1) }

// ResyncRun counts one resync pass by result; an ok pass also sets the
// last-success time.
func (m *Metrics) ResyncRun(ctx context.Context, result string) {
	m.resyncRuns.Add(ctx, 1, metric.WithAttributes(attribute.String(attrResult, result)))
	if result == RunOK {
		m.lastResync.Store(time.Now().Unix())
	}
}

// ResyncObject counts one object a resync pass reconciled.
func (m *Metrics) ResyncObject(ctx context.Context, resource, result string) {
	m.resyncObjects.Add(ctx, 1, metric.WithAttributes(attribute.String(attrResource, resource), attribute.String(attrResult, result)))
}

// ResyncOrphans counts n objects of kind the resync deleted.
func (m *Metrics) ResyncOrphans(ctx context.Context, kind string, n int) {
	if n > 0 {
		m.resyncOrphans.Add(ctx, int64(n), metric.WithAttributes(attribute.String(attrKind, kind)))
	}
}

// RegisterMemoryGauges exports the size of what the service keeps per
// object in memory: the status write-back's sessions (bounded by
// STATUS_CACHE_SIZE) and the objects the event path handled within the
// resync grace.
func RegisterMemoryGauges(m metric.Meter, cachedSessions, recentlyHandled func() int) error {
	cached, err1 := m.Int64ObservableGauge(nameStatusCached, metric.WithDescription("Sessions the status write-back remembers (at most STATUS_CACHE_SIZE)."))
	recent, err2 := m.Int64ObservableGauge(nameRecent, metric.WithDescription("Objects the event path handled within the resync grace (left alone by the resync)."))
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("create memory gauges: %w", err)
	}
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(cached, int64(cachedSessions()))
		o.ObserveInt64(recent, int64(recentlyHandled()))
		return nil
	}, cached, recent); err != nil {
		return fmt.Errorf("register memory gauges: %w", err)
	}
	return nil
}
