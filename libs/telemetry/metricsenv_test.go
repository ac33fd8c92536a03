package telemetry

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// TestLoadEnvMetrics: the exemplar filter, the metric producers and the
// SDK's experimental metric switches take what the SDK reads, spelled as
// it reads them; what it would silently ignore or misread is refused.
func TestLoadEnvMetrics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		badVars []string
	}{
		// The SDK lowers and trims the filter; spaces alone are unset.
		{name: "exemplar filters", env: map[string]string{EnvMetricsExemplarFilter: "always_off"}},
		{name: "exemplar filter any case", env: map[string]string{EnvMetricsExemplarFilter: "ALWAYS_ON"}},
		{name: "exemplar filter with spaces", env: map[string]string{EnvMetricsExemplarFilter: " Trace_Based\t"}},
		{name: "exemplar filter only spaces", env: map[string]string{EnvMetricsExemplarFilter: "  "}},
		// The SDK would keep trace_based, without a word.
		{name: "exemplar filter hyphen", env: map[string]string{EnvMetricsExemplarFilter: "always-off"}, badVars: []string{EnvMetricsExemplarFilter}},
		{name: "exemplar filter without underscore", env: map[string]string{EnvMetricsExemplarFilter: "alwayson"}, badVars: []string{EnvMetricsExemplarFilter}},
		{name: "exemplar filter on", env: map[string]string{EnvMetricsExemplarFilter: "on"}, badVars: []string{EnvMetricsExemplarFilter}},
		{name: "exemplar filter none", env: map[string]string{EnvMetricsExemplarFilter: "none"}, badVars: []string{EnvMetricsExemplarFilter}},
		{name: "exemplar filter trace-based", env: map[string]string{EnvMetricsExemplarFilter: "trace-based"}, badVars: []string{EnvMetricsExemplarFilter}},

		{name: "producers", env: map[string]string{EnvMetricsProducers: "prometheus"}},
		{name: "producers none", env: map[string]string{EnvMetricsProducers: "none"}},
		{name: "producers list", env: map[string]string{EnvMetricsProducers: "prometheus,none,prometheus"}},
		// autoexport would fail at Setup, only with metrics pushed, and
		// without naming the variable: refused at start whatever the
		// exporter, as an unknown exporter is.
		{name: "producers capitalised", env: map[string]string{EnvMetricsProducers: "Prometheus"}, badVars: []string{EnvMetricsProducers}},
		{name: "producers with a space", env: map[string]string{EnvMetricsProducers: " prometheus"}, badVars: []string{EnvMetricsProducers}},
		{name: "producers space after a comma", env: map[string]string{EnvMetricsProducers: "prometheus, none"}, badVars: []string{EnvMetricsProducers}},
		{name: "producers trailing comma", env: map[string]string{EnvMetricsProducers: "prometheus,"}, badVars: []string{EnvMetricsProducers}},
		{name: "producers only a comma", env: map[string]string{EnvMetricsProducers: ","}, badVars: []string{EnvMetricsProducers}},
		{name: "producers unknown", env: map[string]string{EnvMetricsProducers: "opencensus"}, badVars: []string{EnvMetricsProducers}},
		{name: "producers unknown with metrics pushed", env: map[string]string{EnvMetricsProducers: "otlp", EnvOTLPEndpoint: "http://collector:4318"}, badVars: []string{EnvMetricsProducers}},
		{name: "producers unknown with the SDK disabled", env: map[string]string{EnvMetricsProducers: "x", EnvSDKDisabled: "true"}, badVars: []string{EnvMetricsProducers}},

		// The SDK trims the limit and reads it with strconv.Atoi; 0 and
		// below are its no limit.
		{name: "cardinality limit", env: map[string]string{EnvGoXCardinalityLimit: "5000"}},
		{name: "cardinality limit with spaces and sign", env: map[string]string{EnvGoXCardinalityLimit: " +300\n"}},
		{name: "cardinality limit none", env: map[string]string{EnvGoXCardinalityLimit: "0"}},
		{name: "cardinality limit negative", env: map[string]string{EnvGoXCardinalityLimit: "-1"}},
		{name: "cardinality limit only spaces", env: map[string]string{EnvGoXCardinalityLimit: " "}},
		{name: "cardinality limit largest", env: map[string]string{EnvGoXCardinalityLimit: "9223372036854775807"}},
		// The SDK would keep 2000, telling only the OTel error handler.
		{name: "cardinality limit suffix", env: map[string]string{EnvGoXCardinalityLimit: "3k"}, badVars: []string{EnvGoXCardinalityLimit}},
		{name: "cardinality limit exponent", env: map[string]string{EnvGoXCardinalityLimit: "1e4"}, badVars: []string{EnvGoXCardinalityLimit}},
		{name: "cardinality limit underscore", env: map[string]string{EnvGoXCardinalityLimit: "10_000"}, badVars: []string{EnvGoXCardinalityLimit}},
		{name: "cardinality limit fraction", env: map[string]string{EnvGoXCardinalityLimit: "2.5"}, badVars: []string{EnvGoXCardinalityLimit}},
		{name: "cardinality limit hex", env: map[string]string{EnvGoXCardinalityLimit: "0x100"}, badVars: []string{EnvGoXCardinalityLimit}},
		{name: "cardinality limit out of range", env: map[string]string{EnvGoXCardinalityLimit: "9223372036854775808"}, badVars: []string{EnvGoXCardinalityLimit}},

		{name: "per-series start timestamps", env: map[string]string{EnvGoXPerSeriesStartTimestamps: "true"}},
		{name: "per-series start timestamps any case", env: map[string]string{EnvGoXPerSeriesStartTimestamps: "TRUE"}},
		{name: "per-series start timestamps off", env: map[string]string{EnvGoXPerSeriesStartTimestamps: "False"}},
		// The SDK would read each as false, without a word.
		{name: "per-series start timestamps 1", env: map[string]string{EnvGoXPerSeriesStartTimestamps: "1"}, badVars: []string{EnvGoXPerSeriesStartTimestamps}},
		{name: "per-series start timestamps yes", env: map[string]string{EnvGoXPerSeriesStartTimestamps: "yes"}, badVars: []string{EnvGoXPerSeriesStartTimestamps}},
		{name: "per-series start timestamps leading space", env: map[string]string{EnvGoXPerSeriesStartTimestamps: " true"}, badVars: []string{EnvGoXPerSeriesStartTimestamps}},
		{name: "per-series start timestamps trailing space", env: map[string]string{EnvGoXPerSeriesStartTimestamps: "true "}, badVars: []string{EnvGoXPerSeriesStartTimestamps}},

		// Not checked: no value has an effect with Setup (see
		// TestSetupIgnoresObservabilityAndResourceSwitches).
		{name: "switches without effect", env: map[string]string{
			"OTEL_GO_X_OBSERVABILITY": "1", "OTEL_GO_X_SELF_OBSERVABILITY": "yes", "OTEL_GO_X_RESOURCE": "on",
		}},

		{name: "all malformed", env: map[string]string{
			EnvMetricsExemplarFilter: "sometimes", EnvMetricsProducers: "prometheus;none",
			EnvGoXCardinalityLimit: "many", EnvGoXPerSeriesStartTimestamps: "enabled",
		}, badVars: []string{EnvMetricsExemplarFilter, EnvMetricsProducers, EnvGoXCardinalityLimit, EnvGoXPerSeriesStartTimestamps}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkLoadEnvErr(t, tc.env, tc.badVars)
		})
	}
}

// loadEnvAccepts reports whether LoadEnv takes name=value.
func loadEnvAccepts(name, value string) bool {
	l := envconfig.New(envconfig.Map(map[string]string{name: value}))
	LoadEnv(l)
	return l.Err() == nil
}

// collectSum records through record on a fresh meter provider built from
// the process environment, as Setup's is, and returns the sum's points.
func collectSum(t *testing.T, record func(metric.Int64Counter)) []metricdata.DataPoint[int64] {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	defer func() {
		if err := mp.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	c, err := mp.Meter("test").Int64Counter("c")
	if err != nil {
		t.Fatal(err)
	}
	record(c)
	var rm metricdata.ResourceMetrics
	if err := r.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64]).DataPoints
}

// TestMetricsEnvAgreesWithSDK: LoadEnv accepts a value exactly when the
// SDK (and autoexport) in use reads it as meant, measured on the SDK
// itself: a value that works is never refused, and one the SDK would
// ignore is never accepted.
func TestMetricsEnvAgreesWithSDK(t *testing.T) {
	// Cardinality limits the SDK cannot parse go to the OTel error
	// handler; keep them out of the test output.
	prev := otel.GetErrorHandler()
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	t.Cleanup(func() { otel.SetErrorHandler(prev) })

	// Each value in a subtest of its own, which restores the environment.
	check := func(name, value string, applied func(t *testing.T) bool) {
		t.Run(name+"="+value, func(t *testing.T) {
			t.Setenv(name, value)
			if accepted, applied := loadEnvAccepts(name, value), applied(t); accepted != applied {
				t.Errorf("%s=%q: LoadEnv accepts it %v, the SDK applies it %v", name, value, accepted, applied)
			}
		})
	}

	// always_on keeps an exemplar of a measurement outside any span;
	// the default, trace_based, does not.
	alwaysOn := func(t *testing.T) bool {
		pts := collectSum(t, func(c metric.Int64Counter) { c.Add(context.Background(), 1) })
		return len(pts[0].Exemplars) == 1
	}
	for _, v := range []string{"always_on", "ALWAYS_ON", " Always_On\t", "always-on", "alwayson", "always_on_", "on", "1"} {
		check(EnvMetricsExemplarFilter, v, alwaysOn)
	}
	// always_off keeps none of a measurement in a sampled span;
	// trace_based does.
	sampled := trace.ContextWithSpanContext(context.Background(), remoteParent(t))
	alwaysOff := func(t *testing.T) bool {
		pts := collectSum(t, func(c metric.Int64Counter) { c.Add(sampled, 1) })
		return len(pts[0].Exemplars) == 0
	}
	for _, v := range []string{"always_off", "Always_Off ", "always-off", "off", "none", "0"} {
		check(EnvMetricsExemplarFilter, v, alwaysOff)
	}

	// 2001 attribute sets: the default limit keeps 2000 points.
	limited := func(t *testing.T) bool {
		pts := collectSum(t, func(c metric.Int64Counter) {
			for i := range 2001 {
				c.Add(context.Background(), 1, metric.WithAttributes(attribute.Int("i", i)))
			}
		})
		return len(pts) != 2000
	}
	for _, v := range []string{"3", " 3 ", "+3", "03", "\t3\n", "0", "-1", "3k", "1e3", "3.0", "0x3", "1_000", "three", "99999999999999999999"} {
		check(EnvGoXCardinalityLimit, v, limited)
	}

	// With the switch, a series starts at its first measurement; without
	// it every series starts with the instrument.
	perSeries := func(t *testing.T) bool {
		pts := collectSum(t, func(c metric.Int64Counter) {
			c.Add(context.Background(), 1, metric.WithAttributes(attribute.Int("i", 1)))
			for t0 := time.Now().Round(0); !time.Now().Round(0).After(t0); {
				runtime.Gosched()
			}
			c.Add(context.Background(), 1, metric.WithAttributes(attribute.Int("i", 2)))
		})
		return !pts[0].StartTime.Equal(pts[1].StartTime)
	}
	for _, v := range []string{"true", "TRUE", "True", " true", "true ", "1", "yes", "on", "enabled"} {
		check(EnvGoXPerSeriesStartTimestamps, v, perSeries)
	}

	// autoexport builds the OTLP push with the producers, or fails.
	t.Setenv(EnvMetricsExporter, ExporterOTLP)
	t.Setenv(EnvOTLPMetricsEndpoint, "http://127.0.0.1:1/v1/metrics")
	builds := func(t *testing.T) bool {
		r, err := autoexport.NewMetricReader(t.Context())
		if err != nil {
			return false
		}
		if err := r.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		return true
	}
	for _, v := range []string{"prometheus", "none", "prometheus,none", "none,prometheus,none", "Prometheus", "PROMETHEUS", " prometheus", "prometheus ", "prometheus,", "prometheus, none", ",", "otlp"} {
		check(EnvMetricsProducers, v, builds)
	}
}

// counterSeries returns the series of the counter family name in p's
// registry, and how many of them carry an exemplar.
func counterSeries(t *testing.T, p Providers, name string) (series, exemplars int) {
	t.Helper()
	families, err := p.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			series++
			if m.GetCounter().GetExemplar() != nil {
				exemplars++
			}
		}
	}
	return series, exemplars
}

// TestSetupMetricsFromEnvironment: the exemplar filter and the
// cardinality limit take effect on Setup's meter provider, /metrics
// included (Setup sets neither, which would override them).
func TestSetupMetricsFromEnvironment(t *testing.T) {
	record := func(t *testing.T, env map[string]string) Providers {
		t.Helper()
		p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Export: setOTelEnv(t, env)})
		if err != nil {
			t.Fatalf("Setup: %v", err)
		}
		t.Cleanup(func() {
			if err := shutdown(context.Background()); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
		c, err := p.Meter.Int64Counter("requests")
		if err != nil {
			t.Fatal(err)
		}
		ctx := trace.ContextWithSpanContext(t.Context(), remoteParent(t))
		for i := range 5 {
			c.Add(ctx, 1, metric.WithAttributes(attribute.Int("i", i)))
		}
		return p
	}
	t.Run("default", func(t *testing.T) {
		if series, exemplars := counterSeries(t, record(t, map[string]string{}), "requests_total"); series != 5 || exemplars != 5 {
			t.Errorf("%d series, %d with an exemplar; want 5 and 5", series, exemplars)
		}
	})
	t.Run(EnvMetricsExemplarFilter, func(t *testing.T) {
		if series, exemplars := counterSeries(t, record(t, map[string]string{EnvMetricsExemplarFilter: " ALWAYS_OFF"}), "requests_total"); series != 5 || exemplars != 0 {
			t.Errorf("%d series, %d with an exemplar; want 5 and 0", series, exemplars)
		}
	})
	t.Run(EnvGoXCardinalityLimit, func(t *testing.T) {
		p := record(t, map[string]string{EnvGoXCardinalityLimit: "3"})
		if series, _ := counterSeries(t, p, "requests_total"); series != 3 {
			t.Errorf("%d series, want 3 (2 and the overflow)", series)
		}
	})
}

// TestSetupIgnoresObservabilityAndResourceSwitches: the SDK reads
// OTEL_GO_X_OBSERVABILITY and OTEL_GO_X_RESOURCE, but neither changes what
// Setup's providers record: the SDK's own metrics go to the global meter
// provider, which Setup does not set, and the resource switch only adds
// service.instance.id to resource.Default, which Setup's providers do not
// use. So LoadEnv does not check them (docs/configuration.md says so).
func TestSetupIgnoresObservabilityAndResourceSwitches(t *testing.T) {
	p, shutdown, err := Setup(t.Context(), Options{ServiceName: "svc-test", Export: setOTelEnv(t, map[string]string{
		"OTEL_GO_X_OBSERVABILITY": "true", "OTEL_GO_X_RESOURCE": "true",
	})})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer func() {
		if err := shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	_, span := p.Tracer.Start(t.Context(), "op")
	span.End()
	families, err := p.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range families {
		if strings.HasPrefix(mf.GetName(), "otel_sdk_") {
			t.Errorf("/metrics holds the SDK's own metric %s", mf.GetName())
		}
	}
	if labels := gatherLabels(t, p, "target_info"); labels == nil || labels["service_name"] != "svc-test" {
		t.Fatalf("target_info labels = %v, want service_name svc-test", labels)
	} else if id, ok := labels["service_instance_id"]; ok {
		t.Errorf("target_info has service_instance_id %q", id)
	}
}
