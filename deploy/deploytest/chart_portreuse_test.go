package deploytest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
)

// The chart's rule across two services: runner-manager hands a released
// runner port to no other runner for PORT_REUSE_DELAY
// (runnerManager.portReuseDelay) because an agui-proxy cut off from NATS
// keeps routing by its last table for ROUTES_STALE_AFTER
// (aguiProxy.routesStaleAfter) plus its 2 s heartbeat; a shorter delay lets
// that proxy send a released session's clients to another session's runner
// on the same port. The tests render the local-runners values, which
// deploy both services.

// refusedValues is a local-runners values overlay the chart must refuse,
// and a part of the render error that must name why.
type refusedValues struct{ name, values, wantErr string }

// wantRefused renders each case's values in a parallel subtest and fails
// it unless the render fails with an error containing its wantErr.
func wantRefused(t *testing.T, tests []refusedValues) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := render(t, localRunnersWith(t, tc.values))
			if err == nil {
				t.Fatalf("values accepted:\n%s", tc.values)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestChartPortReuseDefaults: both settings reach their services with the
// services' own defaults, which keep the rule (30s > 10s + 2s).
func TestChartPortReuseDefaults(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, ""))
	if got := envOf(t, r, deployment(t, r, name("agui-proxy")))["ROUTES_STALE_AFTER"]; got != "10s" {
		t.Errorf("agui-proxy ROUTES_STALE_AFTER = %q, want 10s (the proxy's default)", got)
	}
	if got := envOf(t, r, deployment(t, r, name("runner-manager")))["PORT_REUSE_DELAY"]; got != "30s" {
		t.Errorf("runner-manager PORT_REUSE_DELAY = %q, want 30s (runner-manager's default)", got)
	}
}

// TestChartRefusesPortReuseWithinStaleRoutes: a delay not greater than
// routesStaleAfter + 2s fails the render with a message naming both values,
// the bound and why, when the release runs both services.
func TestChartRefusesPortReuseWithinStaleRoutes(t *testing.T) {
	t.Parallel()
	tests := []refusedValues{
		{
			"delay equal to the bound", `runnerManager: {portReuseDelay: 12s}`,
			`runnerManager.portReuseDelay (12s) must be greater than aguiProxy.routesStaleAfter (10s) plus 2s, the proxy's heartbeat (12s in all): ` +
				`an agui-proxy cut off from NATS keeps routing by its last table that long, and would send a released session's clients to the runner of another session that took its port. ` +
				`Raise runnerManager.portReuseDelay above 12s or lower aguiProxy.routesStaleAfter; "0" turns the delay off, and this check with it (services/runner-manager/README.md, Runner ports)`,
		},
		{"delay equal to the bound in ms", `runnerManager: {portReuseDelay: 12000ms}`, "runnerManager.portReuseDelay (12000ms) must be greater than aguiProxy.routesStaleAfter (10s) plus 2s"},
		{"delay below the stale bound", `runnerManager: {portReuseDelay: 5s}`, "runnerManager.portReuseDelay (5s) must be greater than aguiProxy.routesStaleAfter (10s)"},
		{"stale bound raised past the default delay", `aguiProxy: {routesStaleAfter: 1m}`, "runnerManager.portReuseDelay (30s) must be greater than aguiProxy.routesStaleAfter (1m) plus 2s, the proxy's heartbeat (62s in all)"},
		{"mixed units", "runnerManager: {portReuseDelay: 1m2s}\naguiProxy: {routesStaleAfter: 1m}", "Raise runnerManager.portReuseDelay above 62s"},
		{"bound in ms", "runnerManager: {portReuseDelay: 3500ms}\naguiProxy: {routesStaleAfter: 1500ms}", "aguiProxy.routesStaleAfter (1500ms) plus 2s, the proxy's heartbeat (3500ms in all)"},
		{"hours", "runnerManager: {portReuseDelay: 1h}\naguiProxy: {routesStaleAfter: 1h}", "runnerManager.portReuseDelay (1h) must be greater than aguiProxy.routesStaleAfter (1h) plus 2s"},
	}
	wantRefused(t, tests)
}

// TestChartAcceptsSafePortReuse: a delay above the bound renders, both
// values reaching the services as written; so do "0" (no delay: the
// operator took the risk, nothing to compare) and any delay when this
// release runs no agui-proxy.
func TestChartAcceptsSafePortReuse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, values         string
		wantStale, wantDelay string // "" when the service is not deployed
	}{
		{"just above the bound", "runnerManager: {portReuseDelay: 12001ms}", "10s", "12001ms"},
		{"both custom", "runnerManager: {portReuseDelay: 1m30s}\naguiProxy: {routesStaleAfter: 1m}", "1m", "1m30s"},
		{"smallest stale bound", "runnerManager: {portReuseDelay: 3001ms}\naguiProxy: {routesStaleAfter: 1s}", "1s", "3001ms"},
		{"hours", "runnerManager: {portReuseDelay: 1h}\naguiProxy: {routesStaleAfter: 59m57s}", "59m57s", "1h"},
		{"delay off", "runnerManager: {portReuseDelay: \"0\"}\naguiProxy: {routesStaleAfter: 1m}", "1m", "0"},
		{"delay off with a unit", "runnerManager: {portReuseDelay: 0s}", "10s", "0s"},
		{"no agui-proxy here", "runnerManager: {portReuseDelay: 1s}\naguiProxy: {enabled: false}", "", "1s"},
		{"no runner-manager here", "runnerManager: {enabled: false, portReuseDelay: 1s}\nkubeReconciler: {sessionSelector: all}", "10s", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := render(t, localRunnersWith(t, tc.values))
			if err != nil {
				t.Fatalf("values refused: %v\n%s", err, tc.values)
			}
			for _, want := range []struct{ component, envVar, value string }{
				{"agui-proxy", "ROUTES_STALE_AFTER", tc.wantStale},
				{"runner-manager", "PORT_REUSE_DELAY", tc.wantDelay},
			} {
				if want.value == "" {
					if r.find("Deployment", name(want.component)) != nil {
						t.Errorf("%s deployed, want it disabled by these values", want.component)
					}
					continue
				}
				if got := envOf(t, r, deployment(t, r, name(want.component)))[want.envVar]; got != want.value {
					t.Errorf("%s %s = %q, want %q", want.component, want.envVar, got, want.value)
				}
			}
		})
	}
}

// TestChartRejectsBadPortReuseDurations: the schema takes only the forms
// acp.durationMillis reads (whole numbers of h, m, s and ms; "0" for the
// delay), and the chart refuses a stale bound the proxy refuses (below
// 1s): each error names the key.
func TestChartRejectsBadPortReuseDurations(t *testing.T) {
	t.Parallel()
	tests := []refusedValues{
		{"delay without a unit", `runnerManager: {portReuseDelay: "30"}`, "/runnerManager/portReuseDelay"},
		{"delay as a number", `runnerManager: {portReuseDelay: 30}`, "/runnerManager/portReuseDelay"},
		{"negative delay", `runnerManager: {portReuseDelay: "-30s"}`, "/runnerManager/portReuseDelay"},
		{"delay with a space", `runnerManager: {portReuseDelay: "30 s"}`, "/runnerManager/portReuseDelay"},
		{"delay in words", `runnerManager: {portReuseDelay: 30sec}`, "/runnerManager/portReuseDelay"},
		{"delay fraction", `runnerManager: {portReuseDelay: 30.5s}`, "/runnerManager/portReuseDelay"},
		{"delay in us", `runnerManager: {portReuseDelay: 30000000us}`, "/runnerManager/portReuseDelay"},
		{"empty delay", `runnerManager: {portReuseDelay: ""}`, "/runnerManager/portReuseDelay"},
		{"stale bound zero", `aguiProxy: {routesStaleAfter: "0"}`, "/aguiProxy/routesStaleAfter"},
		{"stale bound in days", `aguiProxy: {routesStaleAfter: 1d}`, "/aguiProxy/routesStaleAfter"},
		{"stale bound fraction", `aguiProxy: {routesStaleAfter: 1.5s}`, "/aguiProxy/routesStaleAfter"},
		{"stale bound in ns", `aguiProxy: {routesStaleAfter: 10000000000ns}`, "/aguiProxy/routesStaleAfter"},
		{"stale bound below 1s", `aguiProxy: {routesStaleAfter: 999ms}`, `aguiProxy.routesStaleAfter must be at least 1s, got "999ms"`},
		{"stale bound 0s", `aguiProxy: {routesStaleAfter: 0s}`, `aguiProxy.routesStaleAfter must be at least 1s, got "0s"`},
		{"delay past Go's largest duration", `runnerManager: {portReuseDelay: 2562048h}`, `runnerManager.portReuseDelay "2562048h" is longer than Go's largest duration`},
		{"delay with too many digits", `runnerManager: {portReuseDelay: 99999999999999999999s}`, `runnerManager.portReuseDelay "99999999999999999999s" is longer than Go's largest duration`},
	}
	wantRefused(t, tests)
}

// TestChartDurationMillis: acp.durationMillis reads every form the schema
// lets through as Go's time.ParseDuration does (whole milliseconds), up
// to Go's largest duration.
func TestChartDurationMillis(t *testing.T) {
	t.Parallel()
	values := []string{
		"0", "0s", "0ms", "0h0m0s", "1ms", "999ms", "1s", "10s", "12001ms", "1m", "1m30s", "90s",
		"1h", "1h1m1s1ms", "2h45m", "1s1s", "1m1h", "5m500ms", "010s", "007ms", "2562047h",
		"2562047h47m16s854ms", "9223372036854ms", "3600000000ms",
	}
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: zz-duration-millis}\ndata:\n")
	for i, v := range values {
		fmt.Fprintf(&b, "  d%d: {{ include \"acp.durationMillis\" (dict \"key\" \"test\" \"value\" %q) | quote }}\n", i, v)
	}
	c := loadChart(t)
	c.Templates = append(c.Templates, &chart.File{Name: "templates/zz-duration-millis.yaml", Data: []byte(b.String())})
	r, err := renderChart(t, c, map[string]any{})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	cm := r.find("ConfigMap", "zz-duration-millis")
	if cm == nil {
		t.Fatal("probe ConfigMap not rendered")
	}
	data, _ := cm.Object["data"].(map[string]any)
	for i, v := range values {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%q: not a Go duration: %v", v, err)
		}
		want := strconv.FormatInt(d.Milliseconds(), 10)
		if got := data[fmt.Sprintf("d%d", i)]; got != want {
			t.Errorf("acp.durationMillis %q = %v, want %s (time.ParseDuration)", v, got, want)
		}
	}
}
