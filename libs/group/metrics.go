package group

import (
	"context"
	"fmt"
	"math"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names, the same for every consumer group (Prometheus adds _total to
// the counters). Each carries the attributes group=<Config.Group> and
// member=<Config.Member>: a member's lag and in-flight messages are those
// of the partitions it owns (consumer_group.partitions), so together they
// give the backlog per group and partition range. Unowned partitions are
// the group's, the same in every member's report.
const (
	MetricDelivered    = "consumer_group.delivered"
	MetricHandled      = "consumer_group.handled"
	MetricRetried      = "consumer_group.retried"
	MetricDeadLettered = "consumer_group.dead_lettered"
	MetricLag          = "consumer_group.lag"
	MetricCoalesced    = "consumer_group.coalesced"
	MetricReordered    = "consumer_group.reordered"
	MetricInFlight     = "consumer_group.in_flight"
	MetricParked       = "consumer_group.parked"
	MetricParkedNow    = "consumer_group.parked_objects"
	MetricPartitions   = "consumer_group.partitions"
	MetricUnowned      = "consumer_group.partitions_unowned"
	MetricBacklog      = "consumer_group.partition.backlog"
	MetricJoined       = "consumer_group.joined"
)

// RegisterMetrics exports cfg.Stats through cfg.Meter as the
// consumer_group.* instruments, labelled with cfg.Group and cfg.Member;
// the returned func unregisters them. Run does this itself, for the time
// it runs, when its Config has a Meter. A caller that runs a member again
// after Run returned (a rejoin loop, like libs/service's) registers once
// here and passes Run a Config without a Meter instead: the metrics then
// stay on /metrics between two Runs, reading joined 0, rather than
// vanishing exactly while the member is out of its group. cfg.Stats and
// cfg.Meter must be set.
func RegisterMetrics(cfg Config) (unregister func() error, err error) {
	if cfg.Meter == nil || cfg.Stats == nil {
		return nil, fmt.Errorf("consumer group metrics need a Meter and Stats: %w", ErrInvalidConfig)
	}
	m := cfg.Meter
	delivered, err := m.Int64ObservableCounter(MetricDelivered, metric.WithDescription("Event deliveries to this member, retries included."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricDelivered, err)
	}
	handled, err := m.Int64ObservableCounter(MetricHandled, metric.WithDescription("Events whose handler succeeded and whose ack the server confirmed."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricHandled, err)
	}
	retried, err := m.Int64ObservableCounter(MetricRetried, metric.WithDescription("Events naked for a retry with backoff after a handler error."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricRetried, err)
	}
	dead, err := m.Int64ObservableCounter(MetricDeadLettered, metric.WithDescription("Events sent to the dead-letter subject and terminated."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricDeadLettered, err)
	}
	lag, err := m.Int64ObservableGauge(MetricLag, metric.WithDescription("Events waiting in this member's consumer behind the last delivery."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricLag, err)
	}
	coalesced, err := m.Int64ObservableCounter(MetricCoalesced, metric.WithDescription("Events acked without a handler call of their own: a newer event of the same object stood for them."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricCoalesced, err)
	}
	reordered, err := m.Int64ObservableCounter(MetricReordered, metric.WithDescription("Events delivered before an older unsettled event of the same object; each waited for it."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricReordered, err)
	}
	parked, err := m.Int64ObservableCounter(MetricParked, metric.WithDescription("Events acked after a failed try, their retries held in the member's memory (the consumer's head-room was used up by lanes in backoff)."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricParked, err)
	}
	parkedNow, err := m.Int64ObservableGauge(MetricParkedNow, metric.WithDescription("Objects whose failed work this member holds in memory now, waiting for its next try."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricParkedNow, err)
	}
	inFlight, err := m.Int64ObservableGauge(MetricInFlight, metric.WithDescription("Events this member holds now: delivered, not yet acked, dead-lettered or released."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricInFlight, err)
	}
	parts, err := m.Int64ObservableGauge(MetricPartitions, metric.WithDescription("Partitions the group's config gives this member."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricPartitions, err)
	}
	unowned, err := m.Int64ObservableGauge(MetricUnowned, metric.WithDescription("Partitions of the group no member consumes as (only canaries alive, or none): their events wait."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricUnowned, err)
	}
	backlog, err := m.Int64ObservableGauge(MetricBacklog, metric.WithDescription("Events of one partition in the group's work queue, waiting or being handled (attribute partition), reported by the partition's owner."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricBacklog, err)
	}
	joined, err := m.Int64ObservableGauge(MetricJoined, metric.WithDescription("1 once this member has joined its group (heartbeat written, consumer started), 0 while it is still joining: what its consumer_group readiness check reports."))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricJoined, err)
	}
	attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("group", cfg.Group), attribute.String("member", cfg.Member)))
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := cfg.Stats.Snapshot()
		o.ObserveInt64(delivered, clamp(s.Delivered), attrs)
		o.ObserveInt64(handled, clamp(s.Acked), attrs)
		o.ObserveInt64(retried, clamp(s.Retried), attrs)
		o.ObserveInt64(dead, clamp(s.DeadLettered), attrs)
		o.ObserveInt64(lag, clamp(s.Lag), attrs)
		o.ObserveInt64(coalesced, clamp(s.Coalesced), attrs)
		o.ObserveInt64(reordered, clamp(s.Reordered), attrs)
		o.ObserveInt64(inFlight, clamp(s.InFlight), attrs)
		o.ObserveInt64(parked, clamp(s.Parked), attrs)
		o.ObserveInt64(parkedNow, int64(s.ParkedObjects), attrs)
		o.ObserveInt64(parts, int64(s.Partitions), attrs)
		o.ObserveInt64(unowned, int64(s.Unowned), attrs)
		if s.Joined {
			o.ObserveInt64(joined, 1, attrs)
		} else {
			o.ObserveInt64(joined, 0, attrs)
		}
		for p, n := range s.Backlog {
			o.ObserveInt64(backlog, clamp(n), metric.WithAttributes(attribute.String("group", cfg.Group),
				attribute.String("member", cfg.Member), attribute.Int("partition", p)))
		}
		return nil
	}, delivered, handled, retried, dead, lag, coalesced, reordered, parked, parkedNow, inFlight, parts, unowned, backlog, joined)
	if err != nil {
		return nil, fmt.Errorf("register consumer group metrics: %w", err)
	}
	return reg.Unregister, nil
}

// clamp converts a counter to the int64 OTel observes; 2^63 events are out
// of reach, but a wrapped negative counter would read as a reset.
func clamp(v uint64) int64 { return int64(min(v, math.MaxInt64)) }
