package proxy

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names (the Prometheus exporter adds _total and unit suffixes).
const (
	meterName          = "github.com/ambient-code/control-plane/services/agui-proxy/internal/proxy"
	metricRequests     = "agui_proxy_requests"
	metricActive       = "agui_proxy_active_streams"
	metricBytes        = "agui_proxy_streamed_bytes"
	metricLatency      = "agui_proxy_upstream_latency"
	metricStreamsEnded = "agui_proxy_streams_evicted"
	metricRefused      = "agui_proxy_runner_refused"
	refusedNetwork     = "network"
	attrRoute          = "route"
	attrCode           = "code"
)

type metrics struct {
	requests metric.Int64Counter
	active   metric.Int64UpDownCounter
	bytes    metric.Int64Counter
	latency  metric.Float64Histogram
	evicted  metric.Int64Counter
	refusals metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter(meterName)
	var (
		out metrics
		err error
	)
	if out.requests, err = m.Int64Counter(metricRequests,
		metric.WithDescription("Requests to session routes by route and status code.")); err != nil {
		return nil, fmt.Errorf("metric %s: %w", metricRequests, err)
	}
	if out.active, err = m.Int64UpDownCounter(metricActive,
		metric.WithDescription("Streams being relayed from runners.")); err != nil {
		return nil, fmt.Errorf("metric %s: %w", metricActive, err)
	}
	if out.bytes, err = m.Int64Counter(metricBytes, metric.WithUnit("By"),
		metric.WithDescription("Bytes relayed from runners to clients on streaming routes.")); err != nil {
		return nil, fmt.Errorf("metric %s: %w", metricBytes, err)
	}
	if out.latency, err = m.Float64Histogram(metricLatency, metric.WithUnit("s"),
		metric.WithDescription("Time from sending a request to a runner to its response headers."),
		metric.WithExplicitBucketBoundaries(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)); err != nil {
		return nil, fmt.Errorf("metric %s: %w", metricLatency, err)
	}
	if out.evicted, err = m.Int64Counter(metricStreamsEnded,
		metric.WithDescription("Streams ended because their runner endpoint left the routing table.")); err != nil {
		return nil, fmt.Errorf("metric %s: %w", metricStreamsEnded, err)
	}
	if out.refusals, err = m.Int64Counter(metricRefused,
		metric.WithDescription("Routing records refused by reason (network: the runner address is outside RUNNER_ALLOWED_NETWORKS).")); err != nil {
		return nil, fmt.Errorf("metric %s: %w", metricRefused, err)
	}
	return &out, nil
}

func (m *metrics) refused(ctx context.Context, reason string) {
	m.refusals.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

func (m *metrics) request(ctx context.Context, route string, code int) {
	m.requests.Add(ctx, 1, metric.WithAttributes(attribute.String(attrRoute, route), attribute.Int(attrCode, code)))
}

func (m *metrics) upstreamLatency(ctx context.Context, route string, d time.Duration) {
	m.latency.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String(attrRoute, route)))
}

func (m *metrics) streamStarted(ctx context.Context, route string) func(bytes int64) {
	attrs := metric.WithAttributes(attribute.String(attrRoute, route))
	m.active.Add(ctx, 1, attrs)
	return func(bytes int64) {
		m.active.Add(ctx, -1, attrs)
		m.bytes.Add(ctx, bytes, attrs)
	}
}

// recorder remembers the status written through it. Unwrap lets
// http.ResponseController reach the server's writer (Flush, deadlines).
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
