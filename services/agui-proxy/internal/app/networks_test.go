package app_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
)

// TestForgedRegistryEntryRefused: an entry in KV ambient-runners naming a
// host outside RUNNER_ALLOWED_NETWORKS (default: loopback), as anyone able
// to write the bucket could forge, is refused with 502 and a JSON reason
// and counted, instead of being dialed (SSRF into the cluster).
func TestForgedRegistryEntryRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register(t, registry.Endpoint{SessionID: "forged", Owner: "test-manager", Host: "10.96.0.1", Port: 443,
		StartedAt: time.Now().UTC(), State: registry.StateRunning})
	p := startProxy(t, e.proxyCfg())
	code, msg, reason := call(t, p.session("forged", ""), sessionRoutes()[4])
	if code != http.StatusBadGateway || msg != "runner address not allowed" || reason == "" {
		t.Fatalf("forged entry: %d %q %q", code, msg, reason)
	}
	if got, ok := metricValue(t, "http://"+p.app.MetricsAddr()+"/metrics", "agui_proxy_runner_refused_total", `reason="network"`); !ok || got != 1 {
		t.Fatalf("agui_proxy_runner_refused_total = %v %v, want 1", got, ok)
	}
}
