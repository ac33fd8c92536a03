package app

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReadiness: /readyz checks NATS, the API, Kubernetes and the
// AgenticSession CRD. As the chart-bound user it is ready; as a user without
// the ClusterRole neither the AgenticSession informer nor the CRD watcher can
// list (Forbidden), so it is not.
func TestReadiness(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name    string
		user    string
		failing []string
	}{
		{name: "with the chart role", user: ""},
		{name: "without it", user: "nobody-ready", failing: []string{"crd", "kubernetes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := restricted(t, kube.Env(t))
			if tc.user != "" {
				cfg = kube.Env(t).User(t, tc.user)
			}
			r := h.start(t, "ready-"+fmt.Sprint(len(tc.failing)), cfg, nil)
			testenv.Eventually(t, wait, func() error {
				var rep health.Report
				if err := json.Unmarshal([]byte(get(t, "http://"+r.addr.String()+"/readyz")), &rep); err != nil {
					return err
				}
				for _, c := range []string{"nats", "api", "kubernetes", "crd"} {
					if _, ok := rep.Checks[c]; !ok {
						return fmt.Errorf("check %s missing: %+v", c, rep)
					}
				}
				if !slices.Equal(rep.Failing, tc.failing) {
					return fmt.Errorf("failing = %v, want %v (%+v)", rep.Failing, tc.failing, rep)
				}
				return nil
			})
			r.stop()
		})
	}
}
