package deploytest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// loaderEnv is the environment a Deployment's container starts with, as
// its service's config loader would see it: secrets and downward API
// values replaced by plausible values, files under the container's mounts
// created (see materialize).
func loaderEnv(t *testing.T, r rendered, d *appsv1.Deployment) map[string]string {
	t.Helper()
	env := envOf(t, r, d)
	for k, v := range env {
		switch {
		case v == "fieldRef:metadata.name":
			env[k] = d.Name + "-5d8f9c7b6-x2x4q"
		case v == "fieldRef:status.podIP":
			env[k] = "10.244.1.17"
		case v == "fieldRef:metadata.namespace":
			env[k] = d.Namespace
		case v == "fieldRef:spec.nodeName":
			env[k] = "node-a"
		case strings.HasPrefix(v, "secret:") && strings.HasPrefix(k, "OTEL_EXPORTER_OTLP_") && strings.HasSuffix(k, "_HEADERS"):
			// OTLP headers: key=value pairs, values URL-encoded.
			env[k] = "authorization=Bearer%20s3cret-value"
		case strings.HasPrefix(v, "secret:"):
			env[k] = "s3cret-value"
		}
	}
	// The kubelet expands $(NAME) references to the container's other
	// variables (OTEL_RESOURCE_ATTRIBUTES names the pod through them) in
	// env, not in the ConfigMaps of envFrom.
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom == nil {
			env[e.Name] = expandVars(env[e.Name], env)
		}
	}
	var mounts []string
	for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounts = append(mounts, m.MountPath)
	}
	materialize(t, env, mounts)
	return env
}

// TestChartValuesFollowServiceLoaders: for chart values passed to a service
// as they are, the chart (values.schema.json and the templates' checks)
// accepts a value exactly when the service's own config loader accepts it
// in that variable, as written. A value the chart took but the service
// refused would install and then crash-loop; one the service took as
// another value (RUNNER_ALLOWED_NETWORKS' 10.1.2.3/8 became 10.0.0.0/8 while
// the service masked host bits away) would silently mean something else
// than what was set; one the chart refused but the service took would make a working
// setting unusable.
func TestChartValuesFollowServiceLoaders(t *testing.T) {
	t.Parallel()
	type setting struct {
		component, envVar string
		base              string                     // values the component needs to be rendered
		values            func(v any) map[string]any // the values setting v
		candidates        []any
		// asWritten, when set, reports whether the service's view of an
		// accepted value (loaderViews) is the value as written; if not,
		// the service takes it as something else, which the chart must
		// refuse like a value the service refuses.
		asWritten func(t *testing.T, v any, view string) (bool, string)
	}
	settings := []setting{
		{
			component: "agui-proxy", envVar: "CORS_ALLOWED_ORIGIN",
			values: func(v any) map[string]any {
				return map[string]any{"aguiProxy": map[string]any{"corsAllowedOrigin": v}}
			},
			candidates: []any{
				"http://localhost:3000", "https://app.example.com", "https://app.example.com:8443",
				"*", "http://a.example.com, https://b.example.com", "HTTPS://App.Example.com",
				"http://[::1]:3000", "http://10.0.0.1:3000", "http://a.example.com,,https://b.example.com",
				"http://a.example.com,",
				// Refused by agui-proxy at start-up.
				"https://app.example.com/", "https://app.example.com/ui", "localhost:3000",
				"app.example.com", "ftp://files.example.com", "https://app.example.com?x=1",
				"https://app.example.com#top", "https://user@app.example.com", "http://", " , ",
				"http://a b.example.com", "https://app.example.com:port",
			},
		},
		{
			// One entry of the list; the chart puts the loopback ranges
			// first and joins the entries with ",". Entries with a comma
			// or spaces, which the list form cannot mean, and IPv6 zones
			// (TestChartRejectsBadValues) are left out.
			component: "agui-proxy", envVar: "RUNNER_ALLOWED_NETWORKS",
			values: func(v any) map[string]any {
				return map[string]any{"aguiProxy": map[string]any{"runnerAllowedNetworks": []any{v}}}
			},
			candidates: []any{
				"10.0.0.0/8", "10.244.0.0/16", "0.0.0.0/0", "192.168.1.17/32", "192.168.1.17",
				"255.255.255.255/32", "100.64.0.0/10", "fd00::/8", "::/0", "::1", "2001:db8::/32",
				"2001:DB8:0:0:0:0:0:1/128", "::10.0.0.1/128", "fe80::1",
				"1:2:3:4:5:6:1.2.3.4/128", "1:2:3:4:5:6:1.2.3.0/120", "0010::/16", "fd00:0:0:1::/64",
				"10.244.1.16/28", "10.244.1.17/32", "1:2:3:4:5:6:7:8/128", "2001:DB8::/32",
				// Refused by agui-proxy at start-up.
				"pods", "abc", "dead:beef", "10.0.0.0/33", "10.0.0/8", "256.0.0.0/8", "10.0.0.0/",
				"10.0.0.0/8/8", "10.00.0.0/8", "10.0.0.0/08", "10.0.0.0/-1", "fd00::/129", "::1/00",
				"1:2:3:4:5:6:7:8:9/64", "::1::/64", "00010::/16", "1:2:3:4:5:6:7:1.2.3.4/128",
				"1.2.3.4.5/32", "10.0.0.0/8a",
				// Refused by agui-proxy since it stopped masking the bits set
				// beyond the prefix length (10.1.2.3/8 was taken as
				// 10.0.0.0/8, the single address meant became a /8) and
				// taking IPv4-mapped entries (they matched no runner).
				"::ffff:10.0.0.0/104", "::ffff:0.0.0.0/96", "::ffff:10.0.0.1", "10.1.2.3/8", "10.244.1.17/16", "192.168.1.17/24", "10.244.1.17/31", "1.2.3.4/0",
				"255.255.255.255/1", "fd00::1/8", "::1/0", "::1/127", "1:2:3:4:5:6:7::/64",
				"1::2:3:4:5:6:7/64", "1:2:3:4:5::1.2.3.4/120", "2001:DB8::1/32", "::ffff:10.0.0.1/104",
			},
			asWritten: func(t *testing.T, v any, view string) (bool, string) {
				t.Helper()
				s := fmt.Sprint(v)
				want, err := netip.ParsePrefix(s) // not masked: as written
				if err != nil {
					a, aerr := netip.ParseAddr(s)
					if aerr != nil {
						t.Fatalf("%q: agui-proxy accepted what is neither a prefix nor an address (%v, %v)", s, err, aerr)
					}
					want = netip.PrefixFrom(a, a.BitLen())
				}
				var got []string
				if err := json.Unmarshal([]byte(view), &got); err != nil {
					t.Fatalf("agui-proxy's view %q: %v", view, err)
				}
				return len(got) == 1 && got[0] == want.String(), strings.Join(got, ",")
			},
		},
		{
			// Plain http only to a loopback host (the proxy's
			// IsLoopbackHost: "localhost" in any case, a loopback
			// address): the schema must anchor that host, not accept any
			// host that starts like it.
			component: "agui-proxy", envVar: "AGUI_JWKS_URL",
			base: `aguiProxy: {auth: {mode: jwt, jwt: {jwksURL: "https://id.example.com/jwks.json", issuer: "https://id.example.com", audience: ambient}}}`,
			values: func(v any) map[string]any {
				return map[string]any{"aguiProxy": map[string]any{"auth": map[string]any{"jwt": map[string]any{"jwksURL": v}}}}
			},
			candidates: []any{
				"https://id.example.com/jwks.json", "https://id.example.com:8443/certs", "http://localhost/jwks",
				"http://localhost:8080/jwks", "http://LocalHost:8080/jwks", "http://localhost", "http://localhost?x=1",
				"http://127.0.0.1:8080/jwks", "http://127.255.10.1/jwks", "http://[::1]:8443/jwks", "http://[::1]",
				// Refused by agui-proxy at start-up.
				"http://id.example.com/jwks", "http://10.0.0.1/jwks", "http://localhost.evil.example/jwks",
				"http://localhost@evil.example/jwks", "http://localhost-evil.example/jwks", "http://127.0.0.1.nip.io/jwks",
				"http://127.0.0.256/jwks", "http://127.1/jwks", "http://127.0.0.01/jwks", "http://[::1].evil.example/jwks",
				"http://[::1]evil/jwks", "http://localhost:99999/jwks", "ftp://localhost/jwks",
			},
		},
		{
			// 0 (off) or at least WATCH_BACKOFF_MAX, which the chart
			// leaves at the informer's 30s.
			component: "informer", envVar: "LEADER_UNSYNCED_TIMEOUT",
			values: func(v any) map[string]any {
				return map[string]any{"informer": map[string]any{"leaderUnsyncedTimeout": v}}
			},
			candidates: []any{
				"0", "0s", "0m0.0s", "30s", "30.5s", "0.5m", "30000ms", "59.999s", "1m", "1m30s", "2m", "1h", "72h",
				// Refused by the informer at start-up.
				"29s", "29.999999999s", "29999ms", "1s", "1ns", "500ms", "0.4m", "2", "-1m", "2 minutes", "1d",
			},
		},
		// The chart compares the two (acp.durationMillis), so it takes only
		// whole h, m, s and ms: fractions and us or ns, which the services
		// take, are refused on purpose and left out here
		// (TestChartRejectsBadPortReuseDurations).
		{
			component: "agui-proxy", envVar: "ROUTES_STALE_AFTER",
			values: func(v any) map[string]any {
				return map[string]any{"aguiProxy": map[string]any{"routesStaleAfter": v}}
			},
			candidates: []any{
				"1s", "1000ms", "10s", "1m", "1m30s", "1h", "2562047h",
				// Refused by agui-proxy at start-up.
				"0", "0s", "999ms", "1", "-1s", "10 s", "1d", "2562048h",
			},
		},
		{
			// Without the agui-proxy, which the chart compares it with
			// (TestChartRefusesPortReuseWithinStaleRoutes).
			component: "runner-manager", envVar: "PORT_REUSE_DELAY", base: localRunners + "aguiProxy: {enabled: false}\n",
			values: func(v any) map[string]any {
				return map[string]any{"runnerManager": map[string]any{"portReuseDelay": v}}
			},
			candidates: []any{
				"0", "0s", "0h0m", "1ms", "30s", "1m30s", "1h",
				// Refused by runner-manager at start-up.
				"30", "-30s", "-1ms", "30 s", "1d", "2562048h",
			},
		},
		{
			component: "runner-manager", envVar: "LOCAL_MAX_SESSIONS", base: localRunners,
			values: func(v any) map[string]any {
				return map[string]any{"runnerManager": map[string]any{"maxSessions": v}}
			},
			candidates: []any{1, 10, 10000, 0, 10001, 1000000},
		},
		{
			component: "runner-manager", envVar: "LOCAL_MAX_SESSIONS_PER_PROJECT", base: localRunners,
			values: func(v any) map[string]any {
				return map[string]any{"runnerManager": map[string]any{"maxSessionsPerProject": v}}
			},
			candidates: []any{0, 1, 10, 10000, -1, 10001},
		},
	}
	for _, s := range settings {
		baseVals := func() map[string]any { return parseValues(t, s.base) }
		r := mustRender(t, baseVals())
		d := deployment(t, r, name(s.component))
		var cases []envCase
		for i, v := range s.candidates {
			env := loaderEnv(t, r, d)
			env[s.envVar] = fmt.Sprint(v)
			cases = append(cases, envCase{ID: fmt.Sprint(i), Env: env})
		}
		res := checkEnvViews(t, s.component, cases)
		for i, v := range s.candidates {
			serviceAccepts, takenAs := true, ""
			r := res[fmt.Sprint(i)]
			for _, e := range r.Errors {
				if e.Var != s.envVar {
					t.Fatalf("%s=%q: %s refuses another variable of the chart's environment: %s", s.envVar, fmt.Sprint(v), s.component, e.Msg)
				}
				serviceAccepts = false
			}
			if serviceAccepts && s.asWritten != nil {
				var ok bool
				if ok, takenAs = s.asWritten(t, v, r.View); !ok {
					serviceAccepts = false
				}
			}
			_, err := render(t, mergeValues(baseVals(), s.values(v)))
			if chartAccepts := err == nil; chartAccepts != serviceAccepts {
				how := fmt.Sprintf("%s accepts = %v", s.component, serviceAccepts)
				if len(r.Errors) == 0 && !serviceAccepts {
					how = fmt.Sprintf("%s takes it as %s", s.component, takenAs)
				}
				t.Errorf("%s %s=%q: chart accepts = %v, %s (render error: %v)", s.component, s.envVar, fmt.Sprint(v), chartAccepts, how, err)
			}
		}
	}
}

// runnerManager.maxSessionsPerProject reaches runner-manager as
// LOCAL_MAX_SESSIONS_PER_PROJECT, 0 (no cap) by default.
func TestChartRunnerMaxSessionsPerProject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ values, want string }{
		{localRunners, "0"},
		{"kubeReconciler: {sessionSelector: none}\nrunnerManager: {enabled: true, maxSessionsPerProject: 3}\n", "3"},
	} {
		r := mustRender(t, parseValues(t, tc.values))
		env := loaderEnv(t, r, deployment(t, r, name("runner-manager")))
		if got, ok := env["LOCAL_MAX_SESSIONS_PER_PROJECT"]; !ok || got != tc.want {
			t.Errorf("values %q: LOCAL_MAX_SESSIONS_PER_PROJECT = %q (set %v), want %q", tc.values, got, ok, tc.want)
		}
	}
}
