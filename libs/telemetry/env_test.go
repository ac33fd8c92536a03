package telemetry

import (
	"errors"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

func TestLoadEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    Export
		badVars []string // variables named in the error
	}{
		{name: "nothing set exports nothing", env: map[string]string{}},
		{name: "endpoint exports both", env: map[string]string{EnvOTLPEndpoint: "http://collector:4318"}, want: Export{Traces: true, Metrics: true}},
		{name: "metrics off", env: map[string]string{EnvOTLPEndpoint: "https://collector:4318", EnvMetricsExporter: "none"}, want: Export{Traces: true}},
		{name: "traces endpoint only", env: map[string]string{EnvOTLPTracesEndpoint: "http://collector:4318/v1/traces"}, want: Export{Traces: true}},
		{name: "metrics endpoint only", env: map[string]string{EnvOTLPMetricsEndpoint: "http://collector:4318/v1/metrics"}, want: Export{Metrics: true}},
		{name: "console exporter without endpoint", env: map[string]string{EnvTracesExporter: "console"}, want: Export{Traces: true}},
		{name: "traces none wins over endpoint", env: map[string]string{EnvOTLPEndpoint: "http://c:4317", EnvOTLPProtocol: "grpc", EnvTracesExporter: "none"}, want: Export{Metrics: true}},
		{name: "per-signal protocols", env: map[string]string{EnvOTLPEndpoint: "http://c:4317", EnvOTLPTracesProtocol: "grpc", EnvOTLPMetricsProtocol: "http/protobuf"}, want: Export{Traces: true, Metrics: true}},
		{name: "bare host port", env: map[string]string{EnvOTLPEndpoint: "collector:4317"}, badVars: []string{EnvOTLPEndpoint}},
		{name: "other scheme", env: map[string]string{EnvOTLPTracesEndpoint: "ftp://collector:21"}, badVars: []string{EnvOTLPTracesEndpoint}},
		{name: "unknown protocol", env: map[string]string{EnvOTLPProtocol: "http/json", EnvOTLPMetricsProtocol: "GRPC"}, badVars: []string{EnvOTLPProtocol, EnvOTLPMetricsProtocol}},
		{name: "SDK variables well formed", env: map[string]string{
			"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20x,x-tenant=a", "OTEL_EXPORTER_OTLP_TIMEOUT": "5000",
			"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip", EnvBSPScheduleDelay: "200", EnvMetricExportPeriod: "60000",
		}},
		// The SDK keeps its default for each of these, at most logging it.
		{name: "SDK variables malformed", env: map[string]string{
			"OTEL_EXPORTER_OTLP_HEADERS": "garbage", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "=x", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=%zz",
			"OTEL_EXPORTER_OTLP_TIMEOUT": "abc", "OTEL_EXPORTER_OTLP_COMPRESSION": "bogus",
			"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": "/nonexistent",
			EnvBSPScheduleDelay: "abc", EnvBSPMaxQueueSize: "0", EnvMetricExportPeriod: "-1",
		}, badVars: []string{
			"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
			"OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_CERTIFICATE",
			"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", EnvBSPScheduleDelay, EnvBSPMaxQueueSize, EnvMetricExportPeriod,
		}},
		// The SDK keeps only HTTP token keys: "api key" would be dropped
		// and the collector would refuse every export unauthenticated.
		{name: "header key not a token", env: map[string]string{
			"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=a,api key=s3cret", "OTEL_EXPORTER_OTLP_HEADERS": "authorization:=s3cret",
		}, badVars: []string{"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"}},
		{name: "prometheus exporter refused", env: map[string]string{EnvMetricsExporter: "prometheus", EnvTracesExporter: "jaeger"}, badVars: []string{EnvMetricsExporter, EnvTracesExporter}},
		{name: "resource from the environment", env: map[string]string{
			EnvServiceName: "informer-eu", EnvResourceAttributes: "deployment.environment=prod, k8s.pod.name=informer-0,team=a%20b,empty=",
		}},
		// The SDK drops an entry without "=" (and errors only in Setup),
		// drops an empty key, and keeps a bad escape undecoded.
		{name: "resource entry without value", env: map[string]string{EnvResourceAttributes: "deployment.environment=prod,k8s.pod.name"}, badVars: []string{EnvResourceAttributes}},
		{name: "resource entry without key", env: map[string]string{EnvResourceAttributes: "=prod"}, badVars: []string{EnvResourceAttributes}},
		{name: "resource value bad escape", env: map[string]string{EnvResourceAttributes: "team=a%g1"}, badVars: []string{EnvResourceAttributes}},
		{name: "resource trailing comma", env: map[string]string{EnvResourceAttributes: "team=a,"}, badVars: []string{EnvResourceAttributes}},
		{name: "samplers", env: map[string]string{EnvTracesSampler: "PARENTBASED_TRACEIDRATIO", EnvTracesSamplerArg: "0.25"}},
		{name: "ratio sampler without argument", env: map[string]string{EnvTracesSampler: "traceidratio"}},
		{name: "sampler without argument", env: map[string]string{EnvTracesSampler: "always_off"}},
		// The SDK logs these once and samples everything instead.
		{name: "unknown sampler", env: map[string]string{EnvTracesSampler: "jaeger_remote"}, badVars: []string{EnvTracesSampler}},
		{name: "propagators as the services use them", env: map[string]string{EnvPropagators: "tracecontext, baggage"}},
		{name: "propagators trace context alone", env: map[string]string{EnvPropagators: "tracecontext"}},
		{name: "propagators b3", env: map[string]string{EnvPropagators: "b3"}, badVars: []string{EnvPropagators}},
		{name: "propagators with jaeger", env: map[string]string{EnvPropagators: "tracecontext,jaeger"}, badVars: []string{EnvPropagators}},
		{name: "propagators none", env: map[string]string{EnvPropagators: "none"}, badVars: []string{EnvPropagators}},
		{name: "propagators baggage alone", env: map[string]string{EnvPropagators: "baggage"}, badVars: []string{EnvPropagators}},
		{name: "ratio not a number", env: map[string]string{EnvTracesSampler: "traceidratio", EnvTracesSamplerArg: "10%"}, badVars: []string{EnvTracesSamplerArg}},
		{name: "ratio above 1", env: map[string]string{EnvTracesSampler: "parentbased_traceidratio", EnvTracesSamplerArg: "1.5"}, badVars: []string{EnvTracesSamplerArg}},
		{name: "ratio NaN", env: map[string]string{EnvTracesSampler: "traceidratio", EnvTracesSamplerArg: "NaN"}, badVars: []string{EnvTracesSamplerArg}},
		// The SDK ignores the argument: every trace would be sampled.
		{name: "ratio without a ratio sampler", env: map[string]string{EnvTracesSamplerArg: "0.1"}, badVars: []string{EnvTracesSamplerArg}},
		{name: "argument of a sampler without one", env: map[string]string{EnvTracesSampler: "parentbased_always_on", EnvTracesSamplerArg: "0.1"}, badVars: []string{EnvTracesSamplerArg}},
		{name: "SDK disabled", env: map[string]string{EnvSDKDisabled: "TRUE", EnvOTLPEndpoint: "http://collector:4318", EnvTracesExporter: "console"}, want: Export{Disabled: true}},
		// Checked all the same: turning the SDK back on must not fail.
		{name: "SDK disabled still checks", env: map[string]string{EnvSDKDisabled: "true", EnvOTLPProtocol: "http/json"}, badVars: []string{EnvOTLPProtocol}},
		{name: "SDK enabled", env: map[string]string{EnvSDKDisabled: "False", EnvOTLPEndpoint: "http://collector:4318"}, want: Export{Traces: true, Metrics: true}},
		// Other SDKs read anything but "true" as false: refused, not guessed.
		{name: "SDK disabled not a boolean", env: map[string]string{EnvSDKDisabled: "1"}, badVars: []string{EnvSDKDisabled}},
		{name: "SDK disabled yes", env: map[string]string{EnvSDKDisabled: "yes"}, badVars: []string{EnvSDKDisabled}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := envconfig.New(envconfig.Map(tc.env))
			got := LoadEnv(l)
			err := l.Err()
			if len(tc.badVars) == 0 {
				if err != nil || got != tc.want {
					t.Fatalf("LoadEnv = %+v, %v; want %+v, nil", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, envconfig.ErrInvalid) {
				t.Fatalf("LoadEnv error = %v, want ErrInvalid", err)
			}
			if strings.Contains(err.Error(), "garbage") || strings.Contains(err.Error(), "%zz") || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows a headers value", err)
			}
			for _, v := range tc.badVars {
				if !strings.Contains(err.Error(), v+":") {
					t.Errorf("error %q does not name %s", err, v)
				}
			}
		})
	}
}
