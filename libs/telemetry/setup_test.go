package telemetry

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
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

// spanNames waits (bounded) for one export and returns its resource's
// service.name and the span names in it.
func spanNames(t *testing.T, c *collector) (string, []string) {
	t.Helper()
	select {
	case req := <-c.got:
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
	case <-time.After(10 * time.Second):
		t.Fatal("collector received no export within 10s")
		return "", nil
	}
}

func TestSetupExportsToOTLP(t *testing.T) {
	tests := []struct {
		name     string
		endpoint func(addr string) string
	}{
		{name: "http url", endpoint: func(addr string) string { return "http://" + addr }},
		{name: "bare host port", endpoint: func(addr string) string { return addr }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, addr := newCollector(t)
			p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Version: "v1", OTLPEndpoint: tc.endpoint(addr)})
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			_, span := p.Tracer.Start(t.Context(), "op")
			span.End()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			// Shutdown flushes the batch processor, so the span is sent now.
			if err := shutdown(ctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			service, names := spanNames(t, c)
			if service != "svc-test" || len(names) != 1 || names[0] != "op" {
				t.Errorf("export = service %q spans %v, want svc-test [op]", service, names)
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
	p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", OTLPEndpoint: "http://" + addr})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	_, span := p.Tracer.Start(t.Context(), "lost")
	span.End()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = shutdown(ctx)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %v with a 300ms ctx", took)
	}
	// The span never reached a collector: a shutdown that reports success
	// would hide lost telemetry, so the cut-short flush must say why.
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown with an unreachable collector = %v, want an error wrapping %v", err, context.DeadlineExceeded)
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
		opts Options
	}{
		{name: "no service name", opts: Options{}},
		{name: "endpoint without port", opts: Options{ServiceName: "s", OTLPEndpoint: "collector"}},
		{name: "endpoint with other scheme", opts: Options{ServiceName: "s", OTLPEndpoint: "ftp://collector:21"}},
		{name: "endpoint url without host", opts: Options{ServiceName: "s", OTLPEndpoint: "http://"}},
		{name: "endpoint named port", opts: Options{ServiceName: "s", OTLPEndpoint: "collector:otlp"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
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
