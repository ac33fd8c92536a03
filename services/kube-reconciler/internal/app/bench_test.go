package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkEndToEnd1000 measures the whole path for 1,000 new sessions: API
// create -> test informer -> JetStream -> consumer group -> AgenticSession on
// the real kube-apiserver, with one replica (the chart-bound user) and the
// status write-back running. It reports sessions/s from the first create
// until all 1,000 CRs exist.
func BenchmarkEndToEnd1000(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		h := newHarness(b)
		h.start(b, "bench", nil, nil)
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
