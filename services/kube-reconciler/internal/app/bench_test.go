package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkEndToEnd1000 measures the whole path for 1,000 new sessions: API
// create -> test informer -> JetStream -> consumer group -> AgenticSession on
// the real kube-apiserver, with one replica (the chart-bound user) and the
// status write-back running. It reports sessions/s from the first create
// until all 1,000 CRs exist: with the Kubernetes client limits the direct
// benchmark (reconcile's BenchmarkReconcileSessions, envtest's client) has
// (kube-qps=1000), and with the service's defaults (KUBE_QPS 50, KUBE_BURST
// 100), which bound one replica to about 50 applies/s.
func BenchmarkEndToEnd1000(b *testing.B) {
	for _, c := range []struct {
		name       string
		qps, burst string
	}{{"kube-qps=1000", "1000", "2000"}, {"kube-qps=default", "", ""}} {
		b.Run(c.name, func(b *testing.B) {
			env := map[string]string{}
			if c.qps != "" {
				env[config.EnvKubeQPS], env[config.EnvKubeBurst] = c.qps, c.burst
			}
			benchEndToEnd(b, env)
		})
	}
}

func benchEndToEnd(b *testing.B, env map[string]string) {
	for b.Loop() {
		b.StopTimer()
		h := newHarness(b)
		h.start(b, "bench", nil, env)
		name := unique("bench")
		pid := h.project(b, name).GetMetadata().GetId()
		b.StartTimer()
		start := time.Now()
		const n = 1000
		parallel(b, n, func(i int) error {
			_, err := h.cl.CreateSession(b.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprint("s", i), ProjectId: ptr(pid), Prompt: ptr("go")})
			return err
		})
		testenv.Eventually(b, 5*time.Minute, func() error {
			list, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(name).List(b.Context(), metav1.ListOptions{})
			if err != nil {
				return err
			}
			if len(list.Items) != n {
				return fmt.Errorf("%d CRs", len(list.Items))
			}
			return nil
		})
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "sessions/s")
	}
}
