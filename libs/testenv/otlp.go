package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Protocols a Collector receives on, as OTEL_EXPORTER_OTLP_PROTOCOL
// spells them.
const (
	OTLPGRPC = "grpc"
	OTLPHTTP = "http/protobuf"
)

// Span is one span a Collector received.
type Span struct {
	// Service is the service.name of the span's resource.
	Service string
	// Protocol is OTLPGRPC or OTLPHTTP: how the span arrived.
	Protocol string
	*tracepb.Span
}

// Attr returns the string form of the span's attribute key ("" when
// absent).
func (s Span) Attr(key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return anyString(kv.GetValue())
		}
	}
	return ""
}

// TraceID and SpanID are the hex ids; ParentID is "" for a root span.
func (s Span) TraceID() string  { return fmt.Sprintf("%x", s.GetTraceId()) }
func (s Span) SpanID() string   { return fmt.Sprintf("%x", s.GetSpanId()) }
func (s Span) ParentID() string { return fmt.Sprintf("%x", s.GetParentSpanId()) }

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	default:
		return v.String()
	}
}

// Collector is a real OTLP receiver for tests, on loopback: the trace and
// metrics services over gRPC (OTLP/gRPC) and POST /v1/traces and /v1/metrics with
// protobuf bodies (OTLP/HTTP), as an OpenTelemetry Collector's otlp
// receiver serves them. It keeps everything it receives. Safe for
// concurrent use.
type Collector struct {
	collectortrace.UnimplementedTraceServiceServer
	grpcAddr string
	httpURL  string

	mu      sync.Mutex
	spans   []Span          // guarded by mu
	metrics map[string]bool // guarded by mu: metric names, by "<service> <name>"
}

// OTLP starts a Collector and stops it at test cleanup.
func OTLP(t testing.TB) *Collector {
	t.Helper()
	c := &Collector{metrics: map[string]bool{}}
	lis, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("otlp collector listen: %v", err)
	}
	c.grpcAddr = lis.Addr().String()
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, c)
	collectormetrics.RegisterMetricsServiceServer(gs, metricsService{c: c})
	done := make(chan error, 1) // the one Serve result
	// Owned by the cleanup below, which stops the server and waits.
	go func() { done <- gs.Serve(lis) }()

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		req := &collectortrace.ExportTraceServiceRequest{}
		if !readOTLP(w, r, req) {
			return
		}
		c.addSpans(req, OTLPHTTP)
		writeOTLP(w, &collectortrace.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		req := &collectormetrics.ExportMetricsServiceRequest{}
		if !readOTLP(w, r, req) {
			return
		}
		c.addMetrics(req)
		writeOTLP(w, &collectormetrics.ExportMetricsServiceResponse{})
	})
	hs := httptest.NewServer(mux)
	c.httpURL = hs.URL
	t.Cleanup(func() {
		hs.Close()
		gs.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("otlp collector serve: %v", err)
		}
	})
	return c
}

// Endpoint is the OTEL_EXPORTER_OTLP_ENDPOINT for protocol (OTLPGRPC or
// OTLPHTTP).
func (c *Collector) Endpoint(protocol string) string {
	if protocol == OTLPGRPC {
		return "http://" + c.grpcAddr
	}
	return c.httpURL
}

// Env is the environment that makes an OTel SDK export to c over
// protocol, promptly: spans batched for 100 ms, metrics every 500 ms.
func (c *Collector) Env(protocol string) map[string]string {
	return map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": c.Endpoint(protocol),
		"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
		"OTEL_METRIC_EXPORT_INTERVAL": "500",
	}
}

// Export is the gRPC trace service.
func (c *Collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.addSpans(req, OTLPGRPC)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// metricsService is the gRPC metrics service (its method is also named
// Export, so it cannot sit on Collector itself).
type metricsService struct {
	collectormetrics.UnimplementedMetricsServiceServer
	c *Collector
}

// Export records the metric names of req.
func (m metricsService) Export(_ context.Context, req *collectormetrics.ExportMetricsServiceRequest) (*collectormetrics.ExportMetricsServiceResponse, error) {
	m.c.addMetrics(req)
	return &collectormetrics.ExportMetricsServiceResponse{}, nil
}

func (c *Collector) addSpans(req *collectortrace.ExportTraceServiceRequest, protocol string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, Span{Service: service, Protocol: protocol, Span: s})
			}
		}
	}
}

func (c *Collector) addMetrics(req *collectormetrics.ExportMetricsServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		service := ""
		for _, kv := range rm.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				c.metrics[service+" "+m.GetName()] = true
			}
		}
	}
}

// Spans returns a copy of every span received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// HasMetric reports whether service pushed metric name (over either
// protocol).
func (c *Collector) HasMetric(service, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.metrics[service+" "+name]
}

// WaitSpan waits (up to timeout) for a span match accepts and returns it.
func (c *Collector) WaitSpan(t testing.TB, timeout time.Duration, what string, match func(Span) bool) Span {
	t.Helper()
	var found Span
	Eventually(t, timeout, func() error {
		for _, s := range c.Spans() {
			if match(s) {
				found = s
				return nil
			}
		}
		return fmt.Errorf("no span %s among %d received", what, len(c.Spans()))
	})
	return found
}

func readOTLP(w http.ResponseWriter, r *http.Request, m proto.Message) bool {
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = proto.Unmarshal(body, m)
	}
	if err != nil || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, fmt.Sprintf("bad OTLP request (%s): %v", r.Header.Get("Content-Type"), err), http.StatusBadRequest)
		return false
	}
	return true
}

func writeOTLP(w http.ResponseWriter, m proto.Message) {
	b, err := proto.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	// A short write only makes the exporter retry.
	_, _ = w.Write(b) //nolint:errcheck // see above
}
