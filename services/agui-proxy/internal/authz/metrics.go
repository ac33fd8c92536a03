package authz

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names (the Prometheus exporter adds _total and unit suffixes).
const (
	meterName      = "github.com/ambient-code/control-plane/services/agui-proxy/internal/authz"
	metricDecision = "agui_proxy_authz_decisions"
	metricLatency  = "agui_proxy_authz_latency"
)

// Results of a decision.
const (
	resultAllowed         = "allowed"
	resultDenied          = "denied"
	resultUnauthenticated = "unauthenticated"
	resultError           = "error"
)

type metrics struct {
	decisions metric.Int64Counter
	lat       metric.Float64Histogram
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter(meterName)
	var (
		out metrics
		err error
	)
	if out.decisions, err = m.Int64Counter(metricDecision,
		metric.WithDescription("Authorization decisions on session routes by mode, result (allowed, denied, unauthenticated, error) and whether the cache answered.")); err != nil {
		return nil, fmt.Errorf("metric %s: %w", metricDecision, err)
	}
	if out.lat, err = m.Float64Histogram(metricLatency, metric.WithUnit("s"),
		metric.WithDescription("Time the authority took to answer (cache misses only)."),
		metric.WithExplicitBucketBoundaries(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5)); err != nil {
		return nil, fmt.Errorf("metric %s: %w", metricLatency, err)
	}
	return &out, nil
}

func (m *metrics) decision(ctx context.Context, mode string, allowed, cached bool) {
	r := resultDenied
	if allowed {
		r = resultAllowed
	}
	m.decisions.Add(ctx, 1, metric.WithAttributes(attribute.String("mode", mode), attribute.String("result", r), attribute.Bool("cached", cached)))
}

func (m *metrics) result(ctx context.Context, mode, result string) {
	m.decisions.Add(ctx, 1, metric.WithAttributes(attribute.String("mode", mode), attribute.String("result", result), attribute.Bool("cached", false)))
}

func (m *metrics) latency(ctx context.Context, mode string, d time.Duration) {
	m.lat.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("mode", mode)))
}
