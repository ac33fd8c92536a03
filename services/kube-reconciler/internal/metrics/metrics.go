// Package metrics defines the kube-reconciler's Prometheus metrics. All names
// live here; the zero *Metrics is not usable, use New (or Discard in tests).
package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reconcile results (label "result").
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

// Metrics is safe for concurrent use.
type Metrics struct {
	Reconciles   *prometheus.CounterVec   // resource, result
	Latency      *prometheus.HistogramVec // resource
	Rejected     *prometheus.CounterVec   // resource, reason: group_access entries refused, invalid input
	Pruned       prometheus.Counter       // RoleBindings deleted because their entry is gone
	StatusWrites *prometheus.CounterVec   // result: UpdateSessionStatus calls from CR status
	StatusSkips  prometheus.Counter       // CR status compared equal to the session: no call

	ResyncRuns        *prometheus.CounterVec // result: resync passes
	ResyncObjects     *prometheus.CounterVec // resource, result: objects reconciled by a resync pass
	ResyncOrphans     *prometheus.CounterVec // kind: objects deleted because the cache no longer has their source
	ResyncLastSuccess prometheus.Gauge       // unix time of the last complete pass
}

// Resync pass results (label "result" of ResyncRuns).
const (
	RunOK    = "ok"    // every owned object looked at
	RunError = "error" // the pass stopped early (KV or Kubernetes unreachable)
	RunIdle  = "idle"  // this member owns no partition (not joined yet)
)

// Kinds of orphans the resync deletes (label "kind" of ResyncOrphans).
const (
	KindAgenticSessions = "agenticsessions"
	KindRoleBindings    = "rolebindings"
)

const (
	labelKind     = "kind"
	labelResource = "resource"
	labelResult   = "result"
)

// New registers the metrics on reg (nil: not registered). It returns the
// registry's error when a metric is already registered.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_kube_reconciler_reconciles_total", Help: "Events reconciled, by resource and result.",
		}, []string{"resource", "result"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ambient_kube_reconciler_reconcile_duration_seconds", Help: "Time to reconcile one event.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14),
		}, []string{"resource"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_kube_reconciler_rejected_total", Help: "Inputs refused: invalid session fields, group_access entries off the allow-list or with invalid names.",
		}, []string{"resource", "reason"}),
		Pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambient_kube_reconciler_rolebindings_pruned_total", Help: "Managed RoleBindings deleted because their group_access entry is gone.",
		}),
		StatusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_kube_reconciler_status_writes_total", Help: "UpdateSessionStatus calls, by result.",
		}, []string{"result"}),
		StatusSkips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambient_kube_reconciler_status_unchanged_total", Help: "AgenticSession status checks that found nothing to write.",
		}),
		ResyncRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_kube_reconciler_resync_runs_total", Help: "Periodic resync passes, by result (ok, error, idle).",
		}, []string{labelResult}),
		ResyncObjects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_kube_reconciler_resync_objects_total", Help: "Cached objects reconciled by the periodic resync, by resource and result.",
		}, []string{labelResource, labelResult}),
		ResyncOrphans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_kube_reconciler_resync_orphans_deleted_total", Help: "Objects deleted by the resync because their source is gone from the cache (a lost delete), by kind.",
		}, []string{labelKind}),
		ResyncLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambient_kube_reconciler_resync_last_success_timestamp_seconds", Help: "Unix time of the last complete resync pass.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Reconciles, m.Latency, m.Rejected, m.Pruned, m.StatusWrites, m.StatusSkips,
			m.ResyncRuns, m.ResyncObjects, m.ResyncOrphans, m.ResyncLastSuccess} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metric: %w", err)
			}
		}
	}
	return m, nil
}

// Observe records one reconcile.
func (m *Metrics) Observe(resource, result string, took time.Duration) {
	m.Reconciles.WithLabelValues(resource, result).Inc()
	m.Latency.WithLabelValues(resource).Observe(took.Seconds())
}
