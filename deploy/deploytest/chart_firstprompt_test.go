package deploytest

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// TestChartRunnersSendTheFirstPromptThroughTheProxy: the platform's
// runner POSTs its first prompt to BACKEND_API_URL (runner-manager's
// RUNNER_BACKEND_API_URL), which agui-proxy routes to the runner's own
// POST /. By default the chart points it at this release's agui-proxy
// Service, on the Service's port, and lets the runners reach the proxy
// pods on the port behind it; runnerManager.backendApiUrl replaces both
// (egress on its port); no agui-proxy, no URL. The token the runners send
// (RUNNER_BOT_TOKEN) comes from runnerManager.botTokenSecret as a
// variable, never a file the runners could read. Before, none of it was set.
func TestChartRunnersSendTheFirstPromptThroughTheProxy(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `{aguiProxy: {port: 9180, service: {port: 8081}}, runnerManager: {botTokenSecret: {name: agui-bot, key: tok}}}`))
	env := envOf(t, r, deployment(t, r, name("runner-manager")))
	if want := "http://" + name("agui-proxy") + "." + releaseNamespace + ".svc:8081"; env["RUNNER_BACKEND_API_URL"] != want {
		t.Errorf("RUNNER_BACKEND_API_URL = %q, want agui-proxy's Service %q", env["RUNNER_BACKEND_API_URL"], want)
	}
	if env["RUNNER_BOT_TOKEN"] != "secret:agui-bot/tok" {
		t.Errorf("RUNNER_BOT_TOKEN = %q, want from Secret agui-bot key tok", env["RUNNER_BOT_TOKEN"])
	}
	svc := toTyped[corev1.Service](t, r.find("Service", name("agui-proxy")))
	proxyPod := deployment(t, r, name("agui-proxy")).Spec.Template
	if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].Port != 8081 || !slices.ContainsFunc(proxyPod.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool {
		return p.Name == svc.Spec.Ports[0].TargetPort.StrVal && p.ContainerPort == 9180
	}) {
		t.Fatalf("agui-proxy Service ports %+v do not reach container port 9180", svc.Spec.Ports)
	}
	toProxy := slices.ContainsFunc(egressByPort(t, r, "runner-manager")[9180], func(to []networkingv1.NetworkPolicyPeer) bool {
		return slices.ContainsFunc(to, func(p networkingv1.NetworkPolicyPeer) bool {
			return p.PodSelector != nil && p.NamespaceSelector == nil && matches(p.PodSelector.MatchLabels, proxyPod.Labels)
		})
	})
	if !toProxy {
		t.Errorf("runner-manager egress on 9180 does not reach the agui-proxy pods: %v", egressByPort(t, r, "runner-manager")[9180])
	}

	r = mustRender(t, localRunnersWith(t, `runnerManager: {backendApiUrl: "https://proxy.example.com/base"}`))
	env = envOf(t, r, deployment(t, r, name("runner-manager")))
	if env["RUNNER_BACKEND_API_URL"] != "https://proxy.example.com/base" {
		t.Errorf("backendApiUrl set: RUNNER_BACKEND_API_URL = %q", env["RUNNER_BACKEND_API_URL"])
	}
	if _, ok := env["RUNNER_BOT_TOKEN"]; ok {
		t.Error("RUNNER_BOT_TOKEN set without runnerManager.botTokenSecret")
	}
	if rules := egressByPort(t, r, "runner-manager")[443]; !slices.ContainsFunc(rules, func(to []networkingv1.NetworkPolicyPeer) bool { return len(to) == 0 }) {
		t.Errorf("backendApiUrl https: no egress to port 443 anywhere: %v", rules)
	}

	r = mustRender(t, localRunnersWith(t, `aguiProxy: {enabled: false}`))
	if v, ok := envOf(t, r, deployment(t, r, name("runner-manager")))["RUNNER_BACKEND_API_URL"]; ok {
		t.Errorf("without agui-proxy: RUNNER_BACKEND_API_URL = %q, want unset", v)
	}
}
