package reconcile

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Metric names (Prometheus adds the unit and _total suffixes).
const (
	metricRunners        = "runner_manager.runners"
	metricSpawns         = "runner_manager.spawns"
	metricFailures       = "runner_manager.failures"
	metricHealthLatency  = "runner_manager.health_check.duration"
	metricEventToRunning = "runner_manager.event_to_running.duration"
	metricPortsInUse     = "runner_manager.ports.in_use"
	metricPortsTotal     = "runner_manager.ports.total"
	metricTakeovers      = "runner_manager.takeovers"
	metricStatusWrites   = "runner_manager.status_writes"
	metricCapacityWaits  = "runner_manager.capacity_waits"
)

type metrics struct {
	spawns         metric.Int64Counter
	failures       metric.Int64Counter
	healthLatency  metric.Float64Histogram
	eventToRunning metric.Float64Histogram
	takeovers      metric.Int64Counter
	statusWrites   metric.Int64Counter
	capacityWaits  metric.Int64Counter
	reg            metric.Registration
}

// gauges are read at collection time.
type gauges struct {
	runnersByState func() map[string]int
	portsInUse     func() int
	portsTotal     func() int
}

func newMetrics(m metric.Meter, g gauges) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("runner-manager")
	}
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
		errs = append(errs, err)
		return h
	}
	out := &metrics{
		spawns:         counter(metricSpawns, "Runner processes spawned."),
		failures:       counter(metricFailures, "Sessions failed by runner-manager, by reason."),
		healthLatency:  hist(metricHealthLatency, "Time from spawn to the first healthy /health answer."),
		eventToRunning: hist(metricEventToRunning, "Time from receiving a Pending event to writing phase Running."),
		takeovers:      counter(metricTakeovers, "Claims taken over from dead owners, by outcome."),
		statusWrites:   counter(metricStatusWrites, "UpdateSessionStatus calls, by phase and result."),
		capacityWaits:  counter(metricCapacityWaits, "Sessions deferred for lack of capacity, by reason."),
	}
	runners, err := m.Int64ObservableGauge(metricRunners, metric.WithDescription("Local runners by state."))
	errs = append(errs, err)
	inUse, err := m.Int64ObservableGauge(metricPortsInUse, metric.WithDescription("Ports of the pool in use."))
	errs = append(errs, err)
	total, err := m.Int64ObservableGauge(metricPortsTotal, metric.WithDescription("Ports in the pool."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for state, n := range g.runnersByState() {
			o.ObserveInt64(runners, int64(n), metric.WithAttributes(attribute.String("state", state)))
		}
		o.ObserveInt64(inUse, int64(g.portsInUse()))
		o.ObserveInt64(total, int64(g.portsTotal()))
		return nil
	}, runners, inUse, total)
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (m *metrics) spawn(ctx context.Context) { m.spawns.Add(ctx, 1) }

func (m *metrics) failure(ctx context.Context, reason string) {
	m.failures.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

func (m *metrics) health(ctx context.Context, d time.Duration, ok bool) {
	m.healthLatency.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.Bool("healthy", ok)))
}

func (m *metrics) running(ctx context.Context, d time.Duration) {
	m.eventToRunning.Record(ctx, d.Seconds())
}

func (m *metrics) takeover(ctx context.Context, outcome string) {
	m.takeovers.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}

func (m *metrics) statusWrite(ctx context.Context, phase, result string) {
	m.statusWrites.Add(ctx, 1, metric.WithAttributes(attribute.String("phase", phase), attribute.String("result", result)))
}

func (m *metrics) capacityWait(ctx context.Context, reason string) {
	m.capacityWaits.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}
