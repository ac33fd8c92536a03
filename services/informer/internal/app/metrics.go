package app

import (
	"context"
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
	metricPublishTime  = "informer.publish.duration"
	metricReconnects   = "informer.watch.reconnects"
	metricRelists      = "informer.relists"
	metricStale        = "informer.watch.stale"
	metricUnknownDel   = "informer.watch.unknown_deletes"
	metricCacheObjects = "informer.cache.objects"
	metricQueueDepth   = "informer.queue.depth"
	metricLeader       = "informer.lease.leader"
	metricTerms        = "informer.lease.terms"
)

// Attribute keys of the metrics.
const (
	attrResource  = "resource"
	attrEventType = "type"
)

// metrics holds the informer's instruments. All are safe for concurrent use.
type metrics struct {
	published   metric.Int64Counter
	duplicates  metric.Int64Counter
	publishErrs metric.Int64Counter
	publishTime metric.Float64Histogram
	reconnects  metric.Int64Counter
	relists     metric.Int64Counter
	stale       metric.Int64Counter
	unknownDel  metric.Int64Counter
}

// gauges read live state when metrics are collected.
type gauges struct {
	cacheObjects func(r eventsv1.Resource) int
	queueDepth   func(r eventsv1.Resource) int
	leader       func() bool
	terms        func() int64
}

func newMetrics(m metric.Meter, g gauges) (*metrics, error) {
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	out := &metrics{
		published:   counter(metricPublished, "Events published and acked, by resource and type."),
		duplicates:  counter(metricDuplicates, "Publishes JetStream dropped as duplicates (republish after a crash or failover)."),
		publishErrs: counter(metricPublishErrs, "Failed publish attempts (retried)."),
		reconnects:  counter(metricReconnects, "Watch streams that ended or failed and were reopened."),
		relists:     counter(metricRelists, "Completed full lists (start, reconnect, resync)."),
		stale:       counter(metricStale, "Watch events dropped because they were not newer than the cache."),
		unknownDel:  counter(metricUnknownDel, "DELETED watch events for ids never seen (ignored)."),
	}
	h, err := m.Float64Histogram(metricPublishTime, metric.WithUnit("s"),
		metric.WithDescription("Time from publish to JetStream ack."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	errs = append(errs, err)
	out.publishTime = h

	cache, err := m.Int64ObservableGauge(metricCacheObjects, metric.WithDescription("Objects in the informer cache (leader only)."))
	errs = append(errs, err)
	depth, err := m.Int64ObservableGauge(metricQueueDepth, metric.WithDescription("Objects waiting to be published."))
	errs = append(errs, err)
	leader, err := m.Int64ObservableGauge(metricLeader, metric.WithDescription("1 while this replica holds the lease, else 0 (standby)."))
	errs = append(errs, err)
	terms, err := m.Int64ObservableCounter(metricTerms, metric.WithDescription("Times this replica became leader."))
	errs = append(errs, err)
	for _, e := range errs {
		if e != nil {
			return nil, fmt.Errorf("create instruments: %w", e)
		}
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, r := range events.Resources {
			set := metric.WithAttributes(attribute.String(attrResource, events.ResourceToken(r)))
			o.ObserveInt64(cache, int64(g.cacheObjects(r)), set)
			o.ObserveInt64(depth, int64(g.queueDepth(r)), set)
		}
		var l int64
		if g.leader() {
			l = 1
		}
		o.ObserveInt64(leader, l)
		o.ObserveInt64(terms, g.terms())
		return nil
	}, cache, depth, leader, terms)
	if err != nil {
		return nil, fmt.Errorf("register gauges: %w", err)
	}
	return out, nil
}

func resAttr(r eventsv1.Resource) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String(attrResource, events.ResourceToken(r)))
}

// observePublish records one acked event.
func (m *metrics) observePublish(ctx context.Context, ev *eventsv1.ResourceEvent, took time.Duration, duplicate bool) {
	m.published.Add(ctx, 1, metric.WithAttributes(
		attribute.String(attrResource, events.ResourceToken(ev.GetResource())),
		attribute.String(attrEventType, events.TypeName(ev.GetType()))))
	m.publishTime.Record(ctx, took.Seconds(), resAttr(ev.GetResource()))
	if duplicate {
		m.duplicates.Add(ctx, 1, resAttr(ev.GetResource()))
	}
}
