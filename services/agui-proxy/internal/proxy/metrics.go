package proxy

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/route"
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
	routeUnknown       = "unknown" // the route label of paths that name no endpoint
	attrCode           = "code"
)

type metrics struct {
	requests metric.Int64Counter
	active   metric.Int64UpDownCounter
	bytes    metric.Int64Counter
	latency  metric.Float64Histogram
	evicted  metric.Int64Counter
	refusals metric.Int64Counter

	// Attribute sets are built once: building one (sorting, hashing, an
	// allocation) on every request cost more than recording the value.
	byRoute map[string]metric.MeasurementOption // filled by newMetrics, never modified
	mu      sync.RWMutex
	byCode  map[routeCode]metric.AddOption // guarded by mu
}

// routeCode keys the attribute sets of agui_proxy_requests. The routes are
// route.Endpoints and "unknown", the codes those of HTTP: a bounded set.
type routeCode struct {
	route string
	code  int
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter(meterName)
	var (
		out = metrics{byRoute: map[string]metric.MeasurementOption{}, byCode: map[routeCode]metric.AddOption{}}
		err error
	)
	for _, e := range append(route.Endpoints(), route.Endpoint{Name: routeUnknown}) {
		out.byRoute[e.Name] = metric.WithAttributeSet(attribute.NewSet(attribute.String(attrRoute, e.Name)))
	}
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
	k := routeCode{route: route, code: code}
	m.mu.RLock()
	opt, ok := m.byCode[k]
	m.mu.RUnlock()
	if !ok {
		opt = metric.WithAttributeSet(attribute.NewSet(attribute.String(attrRoute, route), attribute.Int(attrCode, code)))
		m.mu.Lock()
		m.byCode[k] = opt
		m.mu.Unlock()
	}
	m.requests.Add(ctx, 1, opt)
}

// routeAttrs returns the attribute set of a route name.
func (m *metrics) routeAttrs(route string) metric.MeasurementOption {
	if opt, ok := m.byRoute[route]; ok {
		return opt
	}
	return metric.WithAttributes(attribute.String(attrRoute, route))
}

func (m *metrics) upstreamLatency(ctx context.Context, route string, d time.Duration) {
	m.latency.Record(ctx, d.Seconds(), m.routeAttrs(route))
}

func (m *metrics) streamStarted(ctx context.Context, route string) func(bytes int64) {
	attrs := m.routeAttrs(route)
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
