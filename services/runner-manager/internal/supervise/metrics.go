package supervise

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// Metric names (Prometheus adds the unit and _total suffixes).
const (
	metricRunners        = "runner_manager.runners"
	metricSpawns         = "runner_manager.spawns"
	metricHealthLatency  = "runner_manager.health_check.duration"
	metricEventToRunning = "runner_manager.event_to_running.duration"
	metricPortsInUse     = "runner_manager.ports.in_use"
	metricPortsTotal     = "runner_manager.ports.total"
)

// metrics are the runners' instruments.
type metrics struct {
	spawns         metric.Int64Counter
	healthLatency  metric.Float64Histogram
	eventToRunning metric.Float64Histogram
}

// newMetrics creates the instruments on m (nil: none); runnersByState and
// the pool are read at collection time.
func newMetrics(m metric.Meter, runnersByState func() map[string]int, pool *runner.Pool) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("runner-manager")
	}
	var errs []error
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
		errs = append(errs, err)
		return h
	}
	spawns, err := m.Int64Counter(metricSpawns, metric.WithDescription("Runner processes spawned."))
	errs = append(errs, err)
	out := &metrics{
		spawns:         spawns,
		healthLatency:  hist(metricHealthLatency, "Time from spawn to the first healthy /health answer."),
		eventToRunning: hist(metricEventToRunning, "Time from receiving a Pending event to writing phase Running."),
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
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for state, n := range runnersByState() {
			o.ObserveInt64(runners, int64(n), metric.WithAttributes(attribute.String("state", state)))
		}
		o.ObserveInt64(inUse, int64(pool.InUse()))
		o.ObserveInt64(total, int64(pool.Size()))
		return nil
	}, runners, inUse, total)
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (m *metrics) spawn(ctx context.Context) { m.spawns.Add(ctx, 1) }

func (m *metrics) health(ctx context.Context, d time.Duration, ok bool) {
	m.healthLatency.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.Bool("healthy", ok)))
}

func (m *metrics) running(ctx context.Context, d time.Duration) {
	m.eventToRunning.Record(ctx, d.Seconds())
}
