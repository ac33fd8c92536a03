package reconcile

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Metric names (Prometheus adds the _total suffix).
const (
	metricTakeovers     = "runner_manager.takeovers"
	metricCapacityWaits = "runner_manager.capacity_waits"
)

// metrics count the reconciler's decisions.
type metrics struct {
	takeovers     metric.Int64Counter
	capacityWaits metric.Int64Counter
}

func newMetrics(m metric.Meter) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("runner-manager")
	}
	takeovers, err1 := m.Int64Counter(metricTakeovers, metric.WithDescription("Claims taken over from dead owners, by outcome."))
	waits, err2 := m.Int64Counter(metricCapacityWaits, metric.WithDescription("Sessions deferred for lack of capacity, by reason."))
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	return &metrics{takeovers: takeovers, capacityWaits: waits}, nil
}

func (m *metrics) takeover(ctx context.Context, outcome string) {
	m.takeovers.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}

func (m *metrics) capacityWait(ctx context.Context, reason string) {
	m.capacityWaits.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}
