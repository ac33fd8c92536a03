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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
)

// BenchmarkEndToEnd1000 measures the whole path for 1,000 new sessions: API
// create -> test informer -> JetStream -> consumer group -> AgenticSession on
// the real kube-apiserver, with one replica (the chart-bound user) and the
// status write-back running. It reports sessions/s from the first create
// until all 1,000 CRs exist: with the Kubernetes client limits the direct
// benchmark (reconcile's BenchmarkReconcileSessions, envtest's client) has
// (kube-qps=1000), and with the service's defaults (KUBE_QPS 50, KUBE_BURST
// 100), which bound one replica to about 50 applies/s. It also reports the
// CPU per session of the kube-apiserver and etcd (child processes) and of
// the benchmark process, which holds the reconciler with NATS, the API and
// the test informer (an upper bound of the reconciler's own), and the
// ambient API calls of the status write-back per session (GetSession and
// UpdateSessionStatus, counted once every event was handled). replicas=2
// runs two replicas with kube-qps=1000 on the same machine: not a scaling
// figure (they share its two cores), but the API calls show whether the
// replicas share the status write-back or each do it.
func BenchmarkEndToEnd1000(b *testing.B) {
	for _, c := range []struct {
		name       string
		qps, burst string
		replicas   int
	}{{"kube-qps=1000", "1000", "2000", 1}, {"kube-qps=default", "", "", 1}, {"replicas=2", "1000", "2000", 2}} {
		b.Run(c.name, func(b *testing.B) {
			env := map[string]string{}
			if c.qps != "" {
				env[config.EnvKubeQPS], env[config.EnvKubeBurst] = c.qps, c.burst
			}
			benchEndToEnd(b, env, c.replicas)
		})
	}
}

func benchEndToEnd(b *testing.B, env map[string]string, replicas int) {
	b.Helper()
	for b.Loop() {
		b.StopTimer()
		h := newHarness(b)
		members := make([]*replica, replicas)
		for i := range members {
			members[i] = h.start(b, fmt.Sprint("bench-", i), nil, env)
		}
		name := unique("bench")
		pid := h.project(b, name).GetMetadata().GetId()
		// Counted from a watch: polling with a List of up to 1,000 CRs
		// every few milliseconds loads the API server more than the
		// reconciler does. The server may end a watch; it is then resumed
		// after one List.
		crs := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(name)
		w, err := crs.Watch(b.Context(), metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		reads0, writes0 := h.api.CallCount(getSessionMethod), h.api.CallCount(updateStatusMethod)
		b.StartTimer()
		cpu0 := testenv.CPUByProcess(b, "bench-process", "kube-apiserver", "etcd")
		start := time.Now()
		const n = 1000
		parallel(b, n, func(i int) error {
			_, err := h.cl.CreateSession(b.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprint("s", i), ProjectId: ptr(pid), Prompt: ptr("go")})
			return err
		})
		created := time.Since(start)
		seen := map[string]bool{}
		timeout := time.After(5 * time.Minute)
		for len(seen) < n {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					list, err := crs.List(b.Context(), metav1.ListOptions{})
					if err != nil {
						b.Fatal(err)
					}
					for _, u := range list.Items {
						seen[u.GetName()] = true
					}
					if w, err = crs.Watch(b.Context(), metav1.ListOptions{ResourceVersion: list.GetResourceVersion()}); err != nil {
						b.Fatal(err)
					}
					continue
				}
				if u, isU := ev.Object.(*unstructured.Unstructured); isU && ev.Type == watch.Added {
					seen[u.GetName()] = true
				}
			case <-timeout:
				b.Fatalf("%d of %d CRs after 5m", len(seen), n)
			}
		}
		w.Stop()
		for name, used := range testenv.CPUByProcess(b, "bench-process", "kube-apiserver", "etcd") {
			b.ReportMetric(float64((used-cpu0[name]).Microseconds())/n, name+"-cpu-µs/session")
		}
		b.ReportMetric(float64(n)/created.Seconds(), "creates/s")
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "sessions/s")
		b.StopTimer()
		// Each new session gets one status write (kube_cr_uid and
		// kube_namespace); count once all are in and their echoes handled.
		testenv.Eventually(b, time.Minute, func() error {
			if got := h.api.CallCount(updateStatusMethod) - writes0; got < n {
				return fmt.Errorf("%d of %d status writes", got, n)
			}
			return nil
		})
		h.quiesce(b, members...)
		b.ReportMetric(float64(h.api.CallCount(getSessionMethod)-reads0)/n, "api-reads/session")
		b.ReportMetric(float64(h.api.CallCount(updateStatusMethod)-writes0)/n, "status-writes/session")
		b.StartTimer()
	}
}
