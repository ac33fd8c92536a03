package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// metricValue returns the sum of /metrics' samples named name whose
// labels include every label (each a `key="value"` pair), and whether any
// matched.
func metricValue(t testing.TB, metricsURL, name string, labels ...string) (float64, bool) {
	t.Helper()
	return testenv.MetricSum(bodyOf(t, metricsURL), name, labels...)
}

// TestMetrics: requests by route and code, active streams, bytes streamed
// and upstream latency are exported on /metrics.
func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-metrics", "DEMO_WORD_DELAY=50ms")
	e.register(t, r.endpoint(t, "s-metrics"))
	p := startProxy(t, e.proxyCfg())
	metrics := "http://" + p.app.MetricsAddr() + "/metrics"

	statusOf(t, p.session("s-metrics", "/health"))
	statusOf(t, p.session("nope", "/health"))
	resp := postRun(context.Background(), t, p.session("s-metrics", "/agui/run"), runInput(words(10)))
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if v, _ := metricValue(t, metrics, "agui_proxy_active_streams", `route="run"`); v != 1 {
			return errorf("active streams %v, want 1", v)
		}
		return nil
	})
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if v, _ := metricValue(t, metrics, "agui_proxy_active_streams", `route="run"`); v != 0 {
			return errorf("active streams %v, want 0", v)
		}
		return nil
	})
	tests := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{name: "health 200", metric: "agui_proxy_requests_total", labels: []string{`route="health"`, `code="200"`}, want: 1},
		{name: "health 404", metric: "agui_proxy_requests_total", labels: []string{`route="health"`, `code="404"`}, want: 1},
		{name: "run 200", metric: "agui_proxy_requests_total", labels: []string{`route="run"`, `code="200"`}, want: 1},
		{name: "bytes", metric: "agui_proxy_streamed_bytes_total", labels: []string{`route="run"`}, want: float64(n + 1)},
		{name: "latency samples", metric: "agui_proxy_upstream_latency_seconds_count", labels: []string{`route="run"`}, want: 1},
	}
	for _, tc := range tests {
		if v, ok := metricValue(t, metrics, tc.metric, tc.labels...); !ok || v != tc.want {
			t.Errorf("%s: %s%v = %v (found %v), want %v", tc.name, tc.metric, tc.labels, v, ok, tc.want)
		}
	}
}

// TestMetricsHaveNoPerRunnerLabels: calls to two runners on different
// ports leave no series labelled with a runner's address or port. otelhttp's
// http_client_* metrics carried server_address and server_port: one series
// set per session port and runner-manager pod, kept until a restart.
func TestMetricsHaveNoPerRunnerLabels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, id := range []string{"s-label-a", "s-label-b"} {
		e.register(t, startRunner(t, id).endpoint(t, id))
	}
	p := startProxy(t, e.proxyCfg())
	for _, id := range []string{"s-label-a", "s-label-b"} {
		if code := statusOf(t, p.session(id, "/health")); code != http.StatusOK {
			t.Fatalf("health of %s through the proxy: %d, want 200", id, code)
		}
	}
	body := bodyOf(t, "http://"+p.app.MetricsAddr()+"/metrics")
	if _, ok := testenv.MetricSum(body, "agui_proxy_upstream_latency_seconds_count", `route="health"`); !ok {
		t.Fatal("no agui_proxy_upstream_latency_seconds sample for the runner calls: the scrape proves nothing")
	}
	var perRunner []string
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, "#") && (strings.Contains(line, "server_port=") || strings.Contains(line, "server_address=")) {
			perRunner = append(perRunner, strings.TrimSpace(line))
		}
	}
	if len(perRunner) > 0 {
		t.Errorf("%d samples labelled per runner (server_address, server_port), the first: %s", len(perRunner), perRunner[0])
	}
}
