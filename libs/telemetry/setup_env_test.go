package telemetry

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)

// remoteParent is a sampled span context as a consumer extracts it from an
// event's traceparent header.
func remoteParent(t *testing.T) trace.SpanContext {
	t.Helper()
	tid, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := trace.SpanIDFromHex("00f067aa0ba902b7")
	if err != nil {
		t.Fatal(err)
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// gatherLabels returns the labels of the first series of the metric family
// name in p's registry (nil when it has none).
func gatherLabels(t *testing.T, p Providers, name string) map[string]string {
	t.Helper()
	families, err := p.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		labels := map[string]string{}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		return labels
	}
	return nil
}

// TestSetupResourceFromEnvironment: OTEL_RESOURCE_ATTRIBUTES adds to the
// service's resource and, like OTEL_SERVICE_NAME (which wins over both),
// overrides what the service sets itself, as the specification says: on
// the exported spans and on /metrics' target_info alike.
func TestSetupResourceFromEnvironment(t *testing.T) {
	httpC, httpURL := newHTTPCollector(t)
	exp := setOTelEnv(t, map[string]string{
		EnvOTLPTracesEndpoint: httpURL + "/v1/traces",
		EnvServiceName:        "informer-eu",
		EnvResourceAttributes: "deployment.environment=staging,k8s.pod.name=informer-7d9f%2D0,service.name=ignored,service.version=v9",
	})
	p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Version: "v1", Export: exp})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	_, span := p.Tracer.Start(t.Context(), "op")
	span.End()
	target := gatherLabels(t, p, "target_info")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	var req *collectortrace.ExportTraceServiceRequest
	select {
	case req = <-httpC.traces:
	case <-time.After(10 * time.Second):
		t.Fatal("collector received no spans within 10s")
	}
	got := map[string]string{}
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			got[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
	}
	want := map[string]string{"service.name": "informer-eu", "service.version": "v9", "deployment.environment": "staging", "k8s.pod.name": "informer-7d9f-0"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("span resource %s = %q, want %q (resource %v)", k, got[k], v, got)
		}
		if l := promLabel(k); target[l] != v {
			t.Errorf("target_info %s = %q, want %q (labels %v)", l, target[l], v, target)
		}
	}
}

// hasCounter reports whether p's registry holds the counter name with
// value v.
func hasCounter(t *testing.T, p Providers, name string, v float64) bool {
	t.Helper()
	families, err := p.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 && mf.GetMetric()[0].GetCounter().GetValue() == v {
			return true
		}
	}
	return false
}

// promLabel is the Prometheus label of a resource attribute key.
func promLabel(key string) string {
	b := []byte(key)
	for i, c := range b {
		if c == '.' {
			b[i] = '_'
		}
	}
	return string(b)
}

// TestSetupSDKDisabled: OTEL_SDK_DISABLED=true makes tracing a no-op and
// exports nothing, although an endpoint is set, while /metrics keeps every
// metric and an incoming trace context still passes through.
func TestSetupSDKDisabled(t *testing.T) {
	httpC, httpURL := newHTTPCollector(t)
	exp := setOTelEnv(t, map[string]string{EnvSDKDisabled: "true", EnvOTLPEndpoint: httpURL})
	if want := (Export{Disabled: true}); exp != want {
		t.Fatalf("LoadEnv = %+v, want %+v", exp, want)
	}
	// Disabled wins over the signals of a hand-made Export.
	exp.Traces, exp.Metrics = true, true
	p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Export: exp})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	_, span := p.Tracer.Start(t.Context(), "op")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Errorf("span with the SDK disabled: recording %v, valid %v; want neither", span.IsRecording(), span.SpanContext().IsValid())
	}
	span.End()

	parent := remoteParent(t)
	ctx, child := p.Tracer.Start(trace.ContextWithRemoteSpanContext(t.Context(), parent), "handle")
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	child.End()
	if got, want := carrier.Get("traceparent"), "00-"+parent.TraceID().String()+"-"+parent.SpanID().String()+"-01"; got != want {
		t.Errorf("traceparent passed on = %q, want the incoming %q", got, want)
	}

	counter, err := p.Meter.Int64Counter("test.ops")
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(t.Context(), 2)
	if !hasCounter(t, p, "test_ops_total", 2) {
		t.Error("/metrics lacks test_ops_total 2 with the SDK disabled")
	}

	sctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// Shutdown flushes whatever an exporter held, so anything sent has
	// arrived by now.
	select {
	case r := <-httpC.traces:
		t.Errorf("collector received spans %v with the SDK disabled", r)
	case r := <-httpC.metrics:
		t.Errorf("collector received metrics %v with the SDK disabled", metricNames(r))
	default:
	}
}

// TestSetupSamplerFromEnvironment: OTEL_TRACES_SAMPLER and _ARG choose the
// sampler. The SDK reads them only because Setup sets no sampler itself;
// one set there would override them without a word.
func TestSetupSamplerFromEnvironment(t *testing.T) {
	tests := []struct {
		name              string
		env               map[string]string
		root, underParent bool // whether a root span and a child of a sampled remote parent are sampled
	}{
		{name: "default parentbased_always_on", env: map[string]string{}, root: true, underParent: true},
		{name: "always_off", env: map[string]string{EnvTracesSampler: "always_off"}},
		{name: "traceidratio 0 ignores the parent", env: map[string]string{EnvTracesSampler: "traceidratio", EnvTracesSamplerArg: "0"}},
		{name: "parentbased_traceidratio 0 follows the parent", env: map[string]string{EnvTracesSampler: "parentbased_traceidratio", EnvTracesSamplerArg: "0"}, underParent: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp := setOTelEnv(t, tc.env)
			p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Export: exp})
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			t.Cleanup(func() {
				if err := shutdown(context.WithoutCancel(t.Context())); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			})
			_, root := p.Tracer.Start(t.Context(), "root")
			root.End()
			_, child := p.Tracer.Start(trace.ContextWithRemoteSpanContext(t.Context(), remoteParent(t)), "child")
			child.End()
			if got := root.SpanContext().IsSampled(); got != tc.root {
				t.Errorf("root span sampled = %v, want %v", got, tc.root)
			}
			if got := child.SpanContext().IsSampled(); got != tc.underParent {
				t.Errorf("child of a sampled parent sampled = %v, want %v", got, tc.underParent)
			}
		})
	}
}
