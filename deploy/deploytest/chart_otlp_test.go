package deploytest

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// otlpPerSignal sends traces and metrics to two backends, each with its
// own credentials (OTLP headers) from an existing Secret, plus headers for
// both from a third: the values of the "otlp-per-signal" value set.
const otlpPerSignal = `
global:
  otlpProtocol: grpc
  otlpHeadersSecret: {name: otlp-auth, key: headers}
  otlpTraces: {endpoint: "http://tempo.monitoring:4317"}
  otlpMetrics:
    endpoint: "https://mimir.example.com/otlp/v1/metrics"
    protocol: http/protobuf
    headersSecret: {name: mimir-auth, key: otlp-headers}
networkPolicy:
  otlpTo: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
`

// TestChartOTLPPerSignal: the per-signal OTLP endpoints and protocols
// (global.otlpTraces, global.otlpMetrics) become every service's
// OTEL_EXPORTER_OTLP_{TRACES,METRICS}_{ENDPOINT,PROTOCOL}, a signal's
// protocol defaulting to global.otlpProtocol; OTLP headers come from
// existing Secrets (global.otlpHeadersSecret and each signal's
// headersSecret), never through the ConfigMap: as files of acp-secrets
// (OTEL_EXPORTER_OTLP_*HEADERS_FILE), in runner-manager as secretKeyRef
// variables (TestChartSecretsAsFiles); every service's NetworkPolicy lets
// it reach each endpoint's port; the schema refuses what the services
// would.
func TestChartOTLPPerSignal(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, otlpPerSignal))
	wantEnv := map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":  "http://tempo.monitoring:4317",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL":  "grpc",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://mimir.example.com/otlp/v1/metrics",
		"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
	}
	wantHeaders := map[string]string{
		"OTEL_EXPORTER_OTLP_HEADERS":         "otlp-auth/headers",
		"OTEL_EXPORTER_OTLP_METRICS_HEADERS": "mimir-auth/otlp-headers",
	}
	collector := peers(t, "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]")
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		env := envOf(t, r, d)
		for k, want := range wantEnv {
			if env[k] != want {
				t.Errorf("%s: %s = %q, want %q", d.Name, k, env[k], want)
			}
		}
		for k, key := range wantHeaders {
			if got, _ := secretFileOf(t, d, env[k+"_FILE"]); got != key && env[k] != "secret:"+key {
				t.Errorf("%s: %s_FILE=%q holds %q and %s=%q, want the Secret key %s", d.Name, k, env[k+"_FILE"], got, k, env[k], key)
			}
		}
		for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE"} {
			if v, ok := env[k]; ok {
				t.Errorf("%s: %s = %q, but it was not asked for", d.Name, k, v)
			}
		}
	}
	for _, cm := range r.ofKind("ConfigMap") {
		data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
		for k := range data {
			if strings.HasSuffix(k, "_HEADERS") {
				t.Errorf("ConfigMap %s holds %s: OTLP headers carry credentials, they come from Secrets", cm.GetName(), k)
			}
		}
	}
	for _, comp := range components {
		egress := egressByPort(t, r, comp)
		for _, port := range []int32{4317, 443} {
			if !slices.ContainsFunc(egress[port], func(to []networkingv1.NetworkPolicyPeer) bool { return cmp.Equal(to, collector) }) {
				t.Errorf("%s: egress on the OTLP port %d goes to %+v, want networkPolicy.otlpTo", comp, port, egress[port])
			}
		}
	}

	for _, bad := range []struct{ values, wantErr string }{
		{`global: {otlpTraces: {endpoint: "tempo:4317"}}`, "/global/otlpTraces/endpoint"},
		{`global: {otlpMetrics: {endpoint: "http://"}}`, "/global/otlpMetrics/endpoint"},
		{`global: {otlpMetrics: {endpoint: "http://m:4318/v1/metrics", protocol: http/json}}`, "/global/otlpMetrics/protocol"},
		{`global: {otlpTraces: {endpoint: "http://t:4317", headers: "authorization=x"}}`, "headers"},
		{`global: {otlpHeadersSecret: {name: Bad_Name, key: headers}}`, "/global/otlpHeadersSecret/name"},
		{`global: {otlpHeadersSecret: {name: otlp-auth, key: "a b"}}`, "/global/otlpHeadersSecret/key"},
		{`global: {otlpMetrics: {headersSecret: {name: mimir-auth, key: ".."}}}`, "/global/otlpMetrics/headersSecret/key"},
	} {
		_, err := render(t, parseValues(t, bad.values))
		if err == nil || !strings.Contains(err.Error(), bad.wantErr) {
			t.Errorf("values %s: error %v, want one naming %s", bad.values, err, bad.wantErr)
		}
	}
}

// TestChartOTLPSignalProtocol: a signal's protocol (global.otlpTraces.protocol,
// global.otlpMetrics.protocol) is passed on whenever that signal is
// exported, also without the signal's own endpoint: the SDK then sends the
// signal to global.otlpEndpoint with that protocol (one endpoint serving
// both, as OTLP gateways do on 443). With no endpoint for the signal
// nothing is exported and the protocol would be silently ignored: refused.
func TestChartOTLPSignalProtocol(t *testing.T) {
	t.Parallel()
	r := mustRender(t, parseValues(t, `
global:
  otlpEndpoint: "https://otlp.example.com"
  otlpProtocol: grpc
  otlpMetrics: {protocol: http/protobuf}
`))
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		env := envOf(t, r, d)
		if got := env["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"]; got != "http/protobuf" {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_METRICS_PROTOCOL = %q, want http/protobuf (global.otlpMetrics.protocol)", d.Name, got)
		}
		if v, ok := env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]; ok {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = %q, but traces follow OTEL_EXPORTER_OTLP_PROTOCOL", d.Name, v)
		}
		for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
			if v, ok := env[k]; ok {
				t.Errorf("%s: %s = %q, but no signal endpoint was asked for", d.Name, k, v)
			}
		}
	}
	for _, bad := range []struct{ values, wantErr string }{
		{`global: {otlpTraces: {protocol: grpc}}`, "global.otlpTraces.protocol"},
		{`global: {otlpTraces: {endpoint: "http://tempo:4317"}, otlpMetrics: {protocol: grpc}}`, "global.otlpMetrics.protocol"},
	} {
		if _, err := render(t, parseValues(t, bad.values)); err == nil || !strings.Contains(err.Error(), bad.wantErr) {
			t.Errorf("values %s: error %v, want one naming %s", bad.values, err, bad.wantErr)
		}
	}
}
