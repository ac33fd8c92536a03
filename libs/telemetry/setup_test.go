package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// collector is a minimal OTLP gRPC trace receiver on a loopback port.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	got chan *collectortrace.ExportTraceServiceRequest // buffered; see newCollector
}

func (c *collector) Export(ctx context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	select {
	case c.got <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// newCollector starts a collector on 127.0.0.1:0 and returns it with its
// address; it stops at test cleanup.
func newCollector(t testing.TB) (*collector, string) {
	t.Helper()
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	// 16 export batches is far more than a test sends; Export still selects
	// on ctx so a full buffer cannot wedge the server.
	c := &collector{got: make(chan *collectortrace.ExportTraceServiceRequest, 16)}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	done := make(chan error, 1)
	// Owned by this helper: ends when Stop closes the listener, awaited in cleanup.
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("collector serve: %v", err)
		}
	})
	return c, lis.Addr().String()
}

// httpCollector is a minimal OTLP/HTTP receiver: POST /v1/traces and
// /v1/metrics with protobuf bodies, as the Collector's otlphttp receiver.
type httpCollector struct {
	traces  chan *collectortrace.ExportTraceServiceRequest     // buffered; see newHTTPCollector
	metrics chan *collectormetrics.ExportMetricsServiceRequest // buffered; see newHTTPCollector
}

// newHTTPCollector starts an OTLP/HTTP receiver and returns it with its
// base URL; it stops at test cleanup.
func newHTTPCollector(t testing.TB) (*httpCollector, string) {
	t.Helper()
	// 64 batches is far more than a test sends; the handler drops beyond it
	// rather than block the exporter.
	c := &httpCollector{
		traces:  make(chan *collectortrace.ExportTraceServiceRequest, 64),
		metrics: make(chan *collectormetrics.ExportMetricsServiceRequest, 64),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		req := &collectortrace.ExportTraceServiceRequest{}
		if !readOTLP(w, r, req) {
			return
		}
		select {
		case c.traces <- req:
		default:
		}
		writeOTLP(w, &collectortrace.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		req := &collectormetrics.ExportMetricsServiceRequest{}
		if !readOTLP(w, r, req) {
			return
		}
		select {
		case c.metrics <- req:
		default:
		}
		writeOTLP(w, &collectormetrics.ExportMetricsServiceResponse{})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return c, srv.URL
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
	_, _ = w.Write(b) //nolint:errcheck // the exporter retries a short answer
}

// traceNames returns the service.name and span names of req.
func traceNames(req *collectortrace.ExportTraceServiceRequest) (string, []string) {
	var service string
	var names []string
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				names = append(names, s.GetName())
			}
		}
	}
	return service, names
}

// metricNames returns the metric names of req.
func metricNames(req *collectormetrics.ExportMetricsServiceRequest) []string {
	var names []string
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				names = append(names, m.GetName())
			}
		}
	}
	return names
}

// setOTelEnv sets the standard variables for one test (no t.Parallel:
// the SDK reads the process environment) and returns what LoadEnv makes
// of them.
func setOTelEnv(t *testing.T, env map[string]string) Export {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	l := envconfig.New(nil)
	exp := LoadEnv(l)
	if err := l.Err(); err != nil {
		t.Fatalf("LoadEnv: %v", err)
	}
	return exp
}

// TestSetupExportsOverEitherProtocol: the standard variables alone choose
// OTLP/gRPC or OTLP/HTTP (issue 16: http/protobuf was ignored and the
// gRPC exporter met an HTTP server), and metrics are pushed too.
func TestSetupExportsOverEitherProtocol(t *testing.T) {
	grpcC, grpcAddr := newCollector(t)
	httpC, httpURL := newHTTPCollector(t)
	tests := []struct {
		name   string
		env    map[string]string
		traces func() (*collectortrace.ExportTraceServiceRequest, bool)
	}{
		{
			name: "grpc",
			env:  map[string]string{EnvOTLPEndpoint: "http://" + grpcAddr, EnvOTLPProtocol: ProtocolGRPC, EnvMetricsExporter: ExporterNone},
			traces: func() (*collectortrace.ExportTraceServiceRequest, bool) {
				select {
				case r := <-grpcC.got:
					return r, true
				case <-time.After(10 * time.Second):
					return nil, false
				}
			},
		},
		{
			name: "http/protobuf",
			env:  map[string]string{EnvOTLPEndpoint: httpURL, EnvOTLPProtocol: ProtocolHTTPProtobuf},
			traces: func() (*collectortrace.ExportTraceServiceRequest, bool) {
				select {
				case r := <-httpC.traces:
					return r, true
				case <-time.After(10 * time.Second):
					return nil, false
				}
			},
		},
		{
			name: "per-signal traces endpoint over http, the default protocol",
			env:  map[string]string{EnvOTLPTracesEndpoint: httpURL + "/v1/traces", EnvMetricsExporter: ExporterNone},
			traces: func() (*collectortrace.ExportTraceServiceRequest, bool) {
				select {
				case r := <-httpC.traces:
					return r, true
				case <-time.After(10 * time.Second):
					return nil, false
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp := setOTelEnv(t, tc.env)
			if !exp.Traces {
				t.Fatalf("LoadEnv = %+v, want traces exported", exp)
			}
			p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Version: "v1", Export: exp})
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			_, span := p.Tracer.Start(t.Context(), "op")
			span.End()
			counter, err := p.Meter.Int64Counter("test.ops")
			if err != nil {
				t.Fatal(err)
			}
			counter.Add(t.Context(), 1)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			// Shutdown flushes the batch processor and the metric reader.
			if err := shutdown(ctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			req, ok := tc.traces()
			if !ok {
				t.Fatal("collector received no spans within 10s")
			}
			if service, names := traceNames(req); service != "svc-test" || !slices.Equal(names, []string{"op"}) {
				t.Errorf("export = service %q spans %v, want svc-test [op]", service, names)
			}
			if exp.Metrics {
				select {
				case m := <-httpC.metrics:
					if !slices.Contains(metricNames(m), "test.ops") {
						t.Errorf("metrics export %v lacks test.ops", metricNames(m))
					}
				case <-time.After(10 * time.Second):
					t.Error("collector received no metrics within 10s")
				}
			}
			if err := shutdown(ctx); err != nil {
				t.Errorf("second shutdown = %v, want nil (cleanups run once)", err)
			}
		})
	}
}

// TestSetupUnreachableEndpointShutdownBounded checks that a collector that
// is down cannot hang shutdown past its ctx, and that the lost batch is
// reported as an error rather than dropped silently.
func TestSetupUnreachableEndpointShutdownBounded(t *testing.T) {
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil { // nothing listens there now
		t.Fatal(err)
	}
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			// Export timeouts of two minutes: a shutdown that did not end
			// the export at its ctx's end would wait for them (a minute of
			// gRPC retries at least), far past the bound below; one that
			// does returns after about 300ms, however loaded the machine.
			exp := setOTelEnv(t, map[string]string{EnvOTLPEndpoint: "http://" + addr, EnvOTLPProtocol: protocol,
				envOTLPPrefix + "TIMEOUT": "120000", EnvBSPExportTimeout: "120000", EnvMetricExportTime: "120000"})
			p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Export: exp})
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			_, span := p.Tracer.Start(t.Context(), "lost")
			span.End()
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err = shutdown(ctx)
			if took := time.Since(start); took > 20*time.Second {
				t.Fatalf("shutdown took %v with a 300ms ctx: it waited for the export timeouts (2 minutes)", took)
			}
			// Nothing reached a collector: a shutdown that reports success
			// would hide lost telemetry. gRPC retries until the ctx ends;
			// HTTP fails at once on the refused connection.
			if err == nil {
				t.Fatal("shutdown with an unreachable collector = nil, want the lost export's error")
			}
			if protocol == ProtocolGRPC && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("shutdown = %v, want an error wrapping %v", err, context.DeadlineExceeded)
			}
		})
	}
}

func TestSetupWithoutEndpoint(t *testing.T) {
	p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Version: "v1.2.3"})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() {
		if err := shutdown(context.WithoutCancel(t.Context())); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	_, span := p.Tracer.Start(t.Context(), "op")
	defer span.End()
	if !span.SpanContext().IsValid() || !span.IsRecording() {
		t.Error("span from an SDK provider without export is not valid and recording")
	}

	counter, err := p.Meter.Int64Counter("test.requests", metric.WithUnit("{request}"))
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(t.Context(), 3)
	families, err := p.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	found := map[string]bool{}
	for _, mf := range families {
		found[mf.GetName()] = true
		if mf.GetName() == "test_requests_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 3 {
				t.Errorf("test_requests_total = %v, want 3", v)
			}
		}
	}
	for _, name := range []string{"test_requests_total", "go_goroutines", "process_cpu_seconds_total", "target_info"} {
		if !found[name] {
			t.Errorf("registry lacks %s", name)
		}
	}
}

func TestSetupInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		opts Options
	}{
		{name: "no service name", opts: Options{}},
		// LoadEnv refuses these first; Setup must not build a half
		// provider from them either.
		{name: "unknown protocol", env: map[string]string{EnvOTLPProtocol: "http/json"}, opts: Options{ServiceName: "s", Export: Export{Traces: true}}},
		{name: "unknown traces exporter", env: map[string]string{EnvTracesExporter: "zipkin"}, opts: Options{ServiceName: "s", Export: Export{Traces: true}}},
		{name: "unknown metrics exporter", env: map[string]string{EnvMetricsExporter: "jaeger"}, opts: Options{ServiceName: "s", Export: Export{Metrics: true}}},
		// The SDK would drop the entry, reporting it only to the OTel
		// error handler.
		{name: "resource attribute without value", env: map[string]string{EnvResourceAttributes: "deployment.environment=prod,k8s.pod.name"}, opts: Options{ServiceName: "s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, shutdown, err := Setup(t.Context(), tc.opts)
			if !errors.Is(err, ErrInvalidOptions) || shutdown != nil {
				t.Fatalf("Setup(%+v) err = %v, shutdown nil = %v; want ErrInvalidOptions and nil", tc.opts, err, shutdown == nil)
			}
		})
	}
}

// TestPropagationRoundTrip injects a span and baggage through the global
// propagator, as the events codec does into NATS headers, and extracts them
// on the "receiving" side.
func TestPropagationRoundTrip(t *testing.T) {
	p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test"})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() {
		if err := shutdown(context.WithoutCancel(t.Context())); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	member, err := baggage.NewMember("tenant", "proj-1")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := p.Tracer.Start(baggage.ContextWithBaggage(t.Context(), bag), "publish")
	defer span.End()

	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	if tp := carrier.Get("traceparent"); !strings.Contains(tp, span.SpanContext().TraceID().String()) {
		t.Fatalf("traceparent %q lacks trace id %s", tp, span.SpanContext().TraceID())
	}

	got := otel.GetTextMapPropagator().Extract(context.WithoutCancel(t.Context()), carrier)
	remote := trace.SpanContextFromContext(got)
	if !remote.IsRemote() || remote.TraceID() != span.SpanContext().TraceID() || remote.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("extracted span context %+v, want remote copy of %+v", remote, span.SpanContext())
	}
	if v := baggage.FromContext(got).Member("tenant").Value(); v != "proj-1" {
		t.Errorf("baggage tenant = %q, want proj-1", v)
	}
	_, child := otel.Tracer("consumer").Start(got, "handle")
	defer child.End()
	if child.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Error("child span started from the global tracer provider is not in the same trace")
	}
}
