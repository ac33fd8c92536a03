package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// Metric names (Prometheus: dots become underscores, counters get _total).
const (
	metricPublished    = "informer.events.published"
	metricDuplicates   = "informer.events.duplicates"
	metricPublishErrs  = "informer.publish.errors"
	metricConflicts    = "informer.publish.conflicts"
	metricKVConflicts  = "informer.kv.conflicts"
	metricOmitted      = "informer.events.omitted"
	metricUnpublished  = "informer.events.unpublishable"
	metricPublishTime  = "informer.publish.duration"
	metricReconnects   = "informer.watch.reconnects"
	metricRelists      = "informer.relists"
	metricListSkipped  = "informer.list.skipped"
	metricStale        = "informer.watch.stale"
	metricBackward     = "informer.watch.clock_backward"
	metricUnknownDel   = "informer.watch.unknown_deletes"
	metricKVRepairs    = "informer.kv.repairs"
	metricKVAudits     = "informer.kv.audits"
	metricCacheObjects = "informer.cache.objects"
	metricRebuilds     = "informer.cache.rebuilds"
	metricQueueDepth   = "informer.queue.depth"
	metricLeader       = "informer.lease.leader"
	metricTerms        = "informer.lease.terms"
)

// Attribute keys of the metrics.
const (
	attrResource  = "resource"
	attrEventType = "type"
	attrOmitted   = "omitted"
)

// Metrics holds the informer's instruments. All are safe for concurrent use.
type Metrics struct {
	meter       metric.Meter
	published   metric.Int64Counter
	duplicates  metric.Int64Counter
	publishErrs metric.Int64Counter
	// conflicts counts events the stream refused because the object's
	// last event was not the one expected (publish.ErrConflict).
	conflicts metric.Int64Counter
	// kvConflicts counts object KV writes the objects bucket refused
	// because the key's last entry was not the revision expected
	// (publish.Config.ObserveKVConflict).
	kvConflicts metric.Int64Counter
	omitted     metric.Int64Counter
	// unpublishable counts versions skipped for good (see
	// publish.ErrUnpublishable).
	unpublishable metric.Int64Counter
	publishTime   metric.Float64Histogram
	reconnects    metric.Int64Counter
	relists       metric.Int64Counter
	// listSkipped counts cached objects a list did not show and a read by
	// id found (watch.Hooks.Unlisted).
	listSkipped metric.Int64Counter
	stale       metric.Int64Counter
	// backward counts watch events applied although stamped earlier than
	// the state they replaced (diff.Result.Backward).
	backward   metric.Int64Counter
	unknownDel metric.Int64Counter
	// kvRepairs counts KV entries the audit found disagreeing with what
	// was published (auditKV).
	kvRepairs metric.Int64Counter
	// kvAudits counts completed audits (auditKV), so kvRepairs reads
	// against how often it looked.
	kvAudits metric.Int64Counter
	// rebuilds counts terms that rebuilt the cache from the events
	// stream because the objects bucket lacked what it holds (load).
	rebuilds metric.Int64Counter
	// byKind holds the attribute options of each [resource][event type]:
	// made once, they cost nothing per event.
	byKind [4][4]publishAttrs
}

// NewMetrics creates the informer's counters on m; ObserveState adds the
// gauges once the resources and the lease exist.
func NewMetrics(m metric.Meter) (*Metrics, error) {
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	out := &Metrics{
		meter:       m,
		published:   counter(metricPublished, "Events published and acked, by resource and type."),
		duplicates:  counter(metricDuplicates, "Publishes JetStream dropped as duplicates (republish after a crash or failover)."),
		publishErrs: counter(metricPublishErrs, "Failed publish attempts (retried)."),
		conflicts: counter(metricConflicts, "Events the stream refused because the object's last event in it was not the one the informer expected: "+
			"a newer leader's (this replica then stands down), a previous leader's, a replayed dead letter, aged out or purged, or one whose ack was lost."),
		kvConflicts: counter(metricKVConflicts, "Objects bucket writes refused because the key's last entry was not the revision the informer expected: "+
			"a newer leader's (this replica then stands down), a previous leader's late write, a write whose ack was lost, an entry the leader did not know."),
		omitted: counter(metricOmitted, "Events published without part of their content to fit the NATS payload limit, "+
			"by what was left out: old_object, fields (of a deleted object), object (a reference event: the object alone is over the limit)."),
		unpublishable: counter(metricUnpublished, "Object versions that could not be published at all and were skipped."),
		reconnects:    counter(metricReconnects, "Watch streams that ended or failed and were reopened."),
		relists:       counter(metricRelists, "Completed full lists (start, reconnect, resync)."),
		listSkipped: counter(metricListSkipped, "Cached objects a list did not show although they exist (its pages shifted under updates and deletes), "+
			"found by a read by id instead of being published as deleted."),
		stale: counter(metricStale, "Watch events dropped: the state already cached, "+
			"or one stamped earlier than the state a list read while the stream was open."),
		backward: counter(metricBackward, "Watch events applied in stream order although their updated_at is earlier than the state they replaced: "+
			"the API's clock stepped back, or the replica that wrote them runs behind another."),
		unknownDel: counter(metricUnknownDel, "DELETED watch events for ids never seen (ignored)."),
		kvRepairs: counter(metricKVRepairs, "Objects bucket entries found disagreeing with the published state (an entry of a deleted object back, "+
			"or a published object's entry gone) and written again."),
		kvAudits: counter(metricKVAudits, "Completed comparisons of the objects bucket with the published state."),
		rebuilds: counter(metricRebuilds, "Terms that found the objects bucket lacking objects the events stream holds (the bucket lost while no informer ran) "+
			"and rebuilt the cache from each object's last event, so deletes made meanwhile are announced."),
	}
	h, err := m.Float64Histogram(metricPublishTime, metric.WithUnit("s"),
		metric.WithDescription("Time from publish to JetStream ack."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	out.publishTime = h
	for r := range out.byKind {
		for t := range out.byKind[r] {
			out.byKind[r][t] = newPublishAttrs(eventsv1.Resource(r), eventsv1.EventType(t))
		}
	}
	if err := errors.Join(append(errs, err)...); err != nil {
		return nil, fmt.Errorf("create instruments: %w", err)
	}
	return out, nil
}

// ObserveState exports the live state of rs and of the lease (leader: is
// this replica leading; terms: how often it became leader) as gauges.
func (m *Metrics) ObserveState(rs []Leader, leader func() bool, terms func() int64) error {
	var errs []error
	gauge := func(name, desc string) metric.Int64ObservableGauge {
		g, err := m.meter.Int64ObservableGauge(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	cache := gauge(metricCacheObjects, "Objects in the informer cache (leader only).")
	depth := gauge(metricQueueDepth, "Objects waiting to be published.")
	lead := gauge(metricLeader, "1 while this replica holds the lease, else 0 (standby).")
	termCount, err := m.meter.Int64ObservableCounter(metricTerms, metric.WithDescription("Times this replica became leader."))
	if err := errors.Join(append(errs, err)...); err != nil {
		return fmt.Errorf("create instruments: %w", err)
	}
	_, err = m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, r := range rs {
			set := resAttr(r.Kind())
			o.ObserveInt64(cache, int64(r.CacheSize()), set)
			o.ObserveInt64(depth, int64(r.QueueDepth()), set)
		}
		var l int64
		if leader() {
			l = 1
		}
		o.ObserveInt64(lead, l)
		o.ObserveInt64(termCount, terms())
		return nil
	}, cache, depth, lead, termCount)
	if err != nil {
		return fmt.Errorf("register gauges: %w", err)
	}
	return nil
}

func resAttr(r eventsv1.Resource) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String(attrResource, events.ResourceToken(r)))
}

// zero records 0 on every counter of res, so their series exist from the
// start of a term, as docs/operations.md#metrics promises: an alert on
// rate() or increase() sees 0, not "no data", until the first event,
// failure or audit. The counters with a second label get a series for each
// of its values, or the first of each would still start from no data.
func (m *Metrics) zero(ctx context.Context, res eventsv1.Resource) {
	for _, c := range []metric.Int64Counter{m.duplicates, m.publishErrs, m.conflicts, m.kvConflicts, m.unpublishable, m.reconnects,
		m.relists, m.listSkipped, m.stale, m.backward, m.unknownDel, m.kvRepairs, m.kvAudits, m.rebuilds} {
		c.Add(ctx, 0, resAttr(res))
	}
	for _, typ := range []eventsv1.EventType{eventsv1.EventType_EVENT_TYPE_ADDED, eventsv1.EventType_EVENT_TYPE_MODIFIED, eventsv1.EventType_EVENT_TYPE_DELETED} {
		m.published.Add(ctx, 0, m.attrs(res, typ).resType)
	}
	for _, what := range []string{events.OmittedOldObject, omittedFields, events.OmittedObject} {
		m.omitted.Add(ctx, 0, omittedAttr(res, what))
	}
}

// ObserveKVConflict records one objects-bucket write of res refused for a
// wrong last revision (publish.Config.ObserveKVConflict).
func (m *Metrics) ObserveKVConflict(ctx context.Context, res eventsv1.Resource) {
	m.kvConflicts.Add(ctx, 1, resAttr(res))
}

// ObservePublish records one acked event (publish.Config.Observe). The
// attribute sets are made once per resource and type: this runs per event.
func (m *Metrics) ObservePublish(ctx context.Context, res eventsv1.Resource, typ eventsv1.EventType, took time.Duration, duplicate bool) {
	a := m.attrs(res, typ)
	m.published.Add(ctx, 1, a.resType)
	m.publishTime.Record(ctx, took.Seconds(), a.res)
	if duplicate {
		m.duplicates.Add(ctx, 1, a.res)
	}
}

// publishAttrs are the attribute options of one resource and event type.
type publishAttrs struct {
	res, resType metric.MeasurementOption
}

func (m *Metrics) attrs(res eventsv1.Resource, typ eventsv1.EventType) publishAttrs {
	if int(res) < len(m.byKind) && int(typ) < len(m.byKind[0]) {
		return m.byKind[res][typ]
	}
	return newPublishAttrs(res, typ)
}

func newPublishAttrs(res eventsv1.Resource, typ eventsv1.EventType) publishAttrs {
	return publishAttrs{
		res: metric.WithAttributeSet(attribute.NewSet(attribute.String(attrResource, events.ResourceToken(res)))),
		resType: metric.WithAttributeSet(attribute.NewSet(
			attribute.String(attrResource, events.ResourceToken(res)), attribute.String(attrEventType, events.TypeName(typ)))),
	}
}

// omittedFields is the "omitted" value of events that left out fields of
// a deleted object.
const omittedFields = "fields"

// omittedAttr is the attribute set of an omission of what from an event
// of r: zero and observeOmitted must make the same series.
func omittedAttr(r eventsv1.Resource, what string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String(attrResource, events.ResourceToken(r)), attribute.String(attrOmitted, what))
}

// observeOmitted counts what an event left out to fit the payload limit.
func (m *Metrics) observeOmitted(ctx context.Context, r eventsv1.Resource, om events.Omission) {
	add := func(what string) {
		m.omitted.Add(ctx, 1, omittedAttr(r, what))
	}
	if om.OldObject {
		add(events.OmittedOldObject)
	}
	if len(om.Fields) > 0 {
		add(omittedFields)
	}
	if om.Object {
		add(events.OmittedObject)
	}
}
