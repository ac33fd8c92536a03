package stack

import (
	"path/filepath"
	"time"
)

// service is one child process of the stack.
type service struct {
	name     string
	binary   string
	args     []string
	env      map[string]string
	readyURL string
	// stage orders start-up: a stage starts once every earlier stage is
	// ready, and shutdown runs in reverse.
	stage int
}

// services lists the children in start order. Environment names are the
// services' own configuration variables (docs/configuration.md).
func (c Config) services() []service {
	common := func(offset int, extra map[string]string) map[string]string {
		env := map[string]string{
			"AMBIENT_API_TOKEN":        c.Token,
			"AMBIENT_GRPC_SERVER_ADDR": c.APIGRPCAddr(),
			"NATS_URL":                 c.NATSURL(),
			"LOG_LEVEL":                c.LogLevel,
			// Each service names itself: one OTEL_SERVICE_NAME exported in
			// the shell would give every service of the stack one name.
			"OTEL_SERVICE_NAME": "",
		}
		if offset > 0 {
			env["METRICS_ADDR"] = c.addr(c.MetricsPortBase + offset)
		}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}
	svcs := []service{
		{
			name: "api", binary: "memapi", stage: 0,
			env: map[string]string{
				"AMBIENT_API_TOKEN": c.Token,
				"MEMAPI_GRPC_ADDR":  c.APIGRPCAddr(),
				"MEMAPI_REST_ADDR":  c.addr(c.APIRESTPort),
				"LOG_LEVEL":         c.LogLevel,
				"OTEL_SERVICE_NAME": "",
			},
			readyURL: c.APIRESTURL() + "/api/ambient/v1/projects?size=1",
		},
		{
			name: "informer", binary: "informer", stage: 1,
			env:      common(offsetInformer, map[string]string{"INSTANCE_ID": "devstack-informer"}),
			readyURL: c.MetricsURL(offsetInformer) + "/readyz",
		},
		{
			name: "event-tally", binary: "event-tally", stage: 2,
			env:      common(offsetEventTally, map[string]string{"MEMBER_ID": "event-tally-0"}),
			readyURL: c.MetricsURL(offsetEventTally) + "/readyz",
		},
		{
			name: "runner-manager", binary: "runner-manager", stage: 2,
			env: common(offsetRunnerManager, map[string]string{
				"MEMBER_ID":            "runner-manager-0",
				"LOCAL_RUNNER_COMMAND": c.RunnerCommandLine(),
				"LOCAL_WORKSPACE_ROOT": filepath.Join(c.StateDir, "workspaces"),
				"LOCAL_PORT_RANGE":     c.RunnerPorts,
				"LOCAL_STOP_GRACE":     c.runnerStopGrace().String(),
				// The platform's runner POSTs its first prompt to
				// BACKEND_API_URL/projects/.../agui/run: agui-proxy serves
				// that path and hands the run to the runner's own POST /.
				// AGUI_AUTH=none here, so no bot token is needed.
				"RUNNER_BACKEND_API_URL": c.ProxyURL(),
			}),
			readyURL: c.MetricsURL(offsetRunnerManager) + "/readyz",
		},
		{
			name: "agui-proxy", binary: "agui-proxy", stage: 2,
			env: common(offsetAGUIProxy, map[string]string{
				"LOCAL_PROXY_ADDR": c.addr(c.ProxyPort),
				"AGUI_AUTH":        "none",
			}),
			readyURL: c.MetricsURL(offsetAGUIProxy) + "/readyz",
		},
	}
	if c.Kubeconfig != "" {
		svcs = append(svcs, service{
			name: "kube-reconciler", binary: "kube-reconciler", stage: 3,
			env: common(offsetKubeReconciler, map[string]string{
				"KUBECONFIG": c.Kubeconfig, "MEMBER_ID": "kube-reconciler-0", "KUBE_SESSION_SELECTOR": c.KubeSessions,
			}),
			readyURL: c.MetricsURL(offsetKubeReconciler) + "/readyz",
		})
	}
	return svcs
}

// runnerStopGrace is runner-manager's LOCAL_STOP_GRACE: half of --stop-grace.
// runner-manager stops its runners' process groups (SIGTERM, SIGKILL after
// this) before it exits; were it longer than --stop-grace, devstack would
// SIGKILL runner-manager first, and a runner's child still handling SIGTERM
// would outlive the stack.
func (c Config) runnerStopGrace() time.Duration {
	if half := c.StopGrace / 2; half > 0 {
		return half
	}
	return c.StopGrace // 1ns: runner-manager wants > 0
}
