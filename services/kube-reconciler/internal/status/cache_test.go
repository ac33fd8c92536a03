package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// kube is the package's kube-apiserver with the operator's AgenticSession
// CRD; kube.Env(t) skips a test when the binaries are not built.
var kube kubetest.Shared

func TestMain(m *testing.M) { os.Exit(kube.Main(m)) }

// crFixture writes n AgenticSessions of installation instance into a new
// namespace the way they are written in a cluster: applied by the
// reconciler's field manager, their status set by the operator's, so each
// carries two managedFields entries. It returns the namespace.
func crFixture(tb testing.TB, env *kubetest.Env, instance string, n int) string {
	tb.Helper()
	ctx := tb.Context()
	kc, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		tb.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		tb.Fatal(err)
	}
	ns := fmt.Sprintf("cache-%d", time.Now().UnixNano()%1e9)
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	crs := dyn.Resource(apply.AgenticSessionGVR).Namespace(ns)
	for i := range n {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": apply.AgenticSessionGVR.GroupVersion().String(),
			"kind":       "AgenticSession",
			"metadata": map[string]any{
				"name":        fmt.Sprintf("s%d", i),
				"labels":      map[string]any{spec.LabelManagedBy: spec.ManagedByValue, spec.LabelInstance: instance, spec.LabelProjectID: ns},
				"annotations": map[string]any{spec.AnnotationSessionID: fmt.Sprintf("S%d", i)},
			},
			"spec": map[string]any{"initialPrompt": "a prompt of a realistic length, a sentence or two", "displayName": fmt.Sprintf("session %d", i),
				"timeout": int64(3600), "llmSettings": map[string]any{"model": "m", "temperature": 0.7, "maxTokens": int64(4000)}},
		}}
		got, err := crs.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "ambient-kube-reconciler", Force: true})
		if err != nil {
			tb.Fatal(err)
		}
		got.Object["status"] = map[string]any{"phase": "Running", "startTime": "2026-01-02T03:04:05Z",
			"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "Running", "lastTransitionTime": "2026-01-02T03:04:05Z"}}}
		if _, err := crs.UpdateStatus(ctx, got, metav1.UpdateOptions{FieldManager: "operator"}); err != nil {
			tb.Fatal(err)
		}
	}
	return ns
}

// newController builds a Controller of installation instance on env, with
// an in-memory API and an embedded NATS.
func newController(tb testing.TB, env *kubetest.Env, instance string) *Controller {
	tb.Helper()
	return newControllerVia(tb, env.Config, slog.New(slog.NewTextHandler(io.Discard, nil)), instance)
}

// newControllerVia builds a Controller of installation instance reaching
// the API server through cfg and logging to log.
func newControllerVia(tb testing.TB, cfg *rest.Config, log *slog.Logger, instance string) *Controller {
	tb.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	_, js := testenv.JetStream(tb, testenv.NATS(tb))
	objects, err := bus.EnsureKV(tb.Context(), js, bus.ObjectsBucket(1))
	if err != nil {
		tb.Fatal(err)
	}
	m, err := metrics.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := New(Config{Dynamic: dyn, API: testenv.APIClient(tb, testenv.API(tb)), Objects: objects, Metrics: m,
		Log: log, Owner: spec.Owner{Instance: instance}, DefaultNamespace: "ambient-code"})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// run runs c until the test ends and waits for its cache to sync.
func run(tb testing.TB, c *Controller) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1) // one send
	go func() { done <- c.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		// Run may still be in its own wait for the cache when cancelled.
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			tb.Error(err)
		}
	})
	testenv.Eventually(tb, 30*time.Second, func() error {
		if !c.HasSynced() {
			return errors.New("agenticsession cache not synced")
		}
		return nil
	})
}

// TestCacheWaitsForAStartingServer: a controller started while the API
// server is still starting (its first answers are 503) fills its cache once
// the server answers, retrying at kubewatch's pace; its reflector never sees
// the 503, so it does not back off for up to a minute. The refusals that
// follow (403) are answers: the reflector gets it and logs it to the
// service's log.
func TestCacheWaitsForAStartingServer(t *testing.T) {
	env := kube.Env(t)
	const instance = "starting-test"
	ns := crFixture(t, env, instance, 2)
	front, cfg := kubetest.StartingFront(t, env.Config, 503, 503, 503, 403, 403)
	logs, log := kubetest.NewLogs()
	c := newControllerVia(t, cfg, log, instance)
	run(t, c)
	if n := front.Requests(); n <= 5 {
		t.Fatalf("front had %d requests, want the 5 it answered and more", n)
	}
	kubetest.CheckOnlyRefusalsLogged(t, logs)
	for i := range 2 {
		if _, ok, err := c.informer.GetIndexer().GetByKey(ns + "/" + fmt.Sprint("s", i)); err != nil || !ok {
			t.Errorf("CR %s/s%d not in the cache (found %t, %v)", ns, i, ok, err)
		}
	}
}

// TestCacheHoldsNoManagedFields: the cached AgenticSessions carry
// everything the write-back and UpToDate read, but not managedFields, which
// the live objects have (two managers each).
func TestCacheHoldsNoManagedFields(t *testing.T) {
	env := kube.Env(t)
	const instance = "cache-test"
	ns := crFixture(t, env, instance, 3)
	c := newController(t, env, instance)
	run(t, c)
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		name := fmt.Sprintf("s%d", i)
		live, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(live.GetManagedFields()); n != 2 {
			t.Fatalf("live CR %s has %d managedFields entries, want 2 (the fixture's managers)", name, n)
		}
		cached, ok := c.CachedCR(types.NamespacedName{Namespace: ns, Name: name})
		if !ok {
			t.Fatalf("CR %s not cached", name)
		}
		if mf := cached.GetManagedFields(); mf != nil {
			t.Errorf("cached CR %s holds %d managedFields entries", name, len(mf))
		}
		if cached.GetUID() != live.GetUID() || cached.GetAnnotations()[spec.AnnotationSessionID] != fmt.Sprintf("S%d", i) {
			t.Errorf("cached CR %s: uid %s annotations %v", name, cached.GetUID(), cached.GetAnnotations())
		}
		if phase, _, _ := unstructured.NestedString(cached.Object, "status", "phase"); phase != "Running" {
			t.Errorf("cached CR %s: status.phase %q", name, phase)
		}
		if prompt, _, _ := unstructured.NestedString(cached.Object, "spec", "initialPrompt"); prompt == "" {
			t.Errorf("cached CR %s: spec.initialPrompt missing", name)
		}
	}
}

// BenchmarkCacheBytes reports the heap the status controller's cache holds
// per AgenticSession (1,000 CRs written as in a cluster: applied, status set
// by the operator): the process's live heap after a GC, with the cache
// synced, minus before the controller started.
func BenchmarkCacheBytes(b *testing.B) {
	env := kube.Env(b)
	const n = 1000
	for b.Loop() {
		instance := fmt.Sprintf("bench-%d", time.Now().UnixNano()%1e9)
		crFixture(b, env, instance, n)
		c := newController(b, env, instance)
		before := liveHeap()
		run(b, c)
		after := liveHeap()
		runtime.KeepAlive(c)
		b.ReportMetric(float64(after-before)/n, "heap-bytes/CR")
	}
}

// liveHeap returns the bytes of live heap objects after a full GC.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
