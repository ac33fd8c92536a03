package app

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// resourceVersions snapshots the namespace, its RoleBindings and CRs.
func (h *harness) resourceVersions(t *testing.T, ns string) map[string]string {
	t.Helper()
	ctx := t.Context()
	out := map[string]string{}
	n, err := h.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out["ns"] = n.ResourceVersion
	rbs, err := h.kube.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, rb := range rbs.Items {
		out["rb/"+rb.Name] = rb.ResourceVersion
	}
	crs, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range crs.Items {
		out["cr/"+c.GetName()] = c.GetResourceVersion()
	}
	return out
}

// replayAll publishes every event in the stream again, times times, under new
// message ids (so JetStream does not drop them as duplicates).
func (h *harness) replayAll(t *testing.T, times int) int {
	t.Helper()
	ctx := t.Context()
	s, err := h.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*nats.Msg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	}
	for i := range times {
		for _, m := range msgs {
			out := nats.NewMsg(m.Subject)
			out.Data = m.Data
			for k, v := range m.Header {
				out.Header[k] = v
			}
			out.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s/replay-%d", m.Header.Get(jetstream.MsgIDHeader), i))
			if _, err := h.js.PublishMsg(ctx, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	return len(msgs) * times
}

// TestReplayTwiceNoWrites: replaying every event twice changes nothing: no
// resourceVersion moves and no status is written.
func TestReplayTwiceNoWrites(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "rp1", nil, nil)
	ctx := t.Context()
	name := unique("rp")
	p := h.project(t, name)
	pid := p.GetMetadata().GetId()
	if _, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
		GroupAccess: ptr(`[{"group":"a","role":"ambient-project-view"},{"group":"b","role":"cluster-admin"}]`)}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprint("s", i), ProjectId: ptr(pid), Repos: ptr(`[{"url":"u"}]`)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.GetMetadata().GetId())
		if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: s.GetMetadata().GetId(), Prompt: ptr("again")}); err != nil {
			t.Fatal(err)
		}
	}
	bad, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "bad", ProjectId: ptr(pid), Labels: ptr(`{`)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		for _, id := range append(ids, bad.GetMetadata().GetId()) {
			s, err := h.cl.GetSession(ctx, id)
			if err != nil {
				return err
			}
			if s.GetKubeNamespace() == "" && s.GetPhase() != "Failed" {
				return fmt.Errorf("session %s not reconciled yet", id)
			}
		}
		return nil
	})
	h.quiesce(t, r)
	before := h.resourceVersions(t, name)
	calls := h.api.CallCount(updateStatusMethod)

	h.replayAll(t, 2)
	h.quiesce(t, r)
	if diff := diffMaps(before, h.resourceVersions(t, name)); diff != "" {
		t.Errorf("replay wrote to Kubernetes: %s", diff)
	}
	if n := h.api.CallCount(updateStatusMethod); n != calls {
		t.Errorf("replay made %d UpdateSessionStatus calls", n-calls)
	}
}

func diffMaps(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, fmt.Sprintf("%s: %s -> %s", k, v, b[k]))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k+": new")
		}
	}
	return strings.Join(out, ", ")
}

// TestTwoReplicasShareAndFailover: two replicas share 200 sessions; one is
// stopped mid-run (gracefully, or by cutting its NATS connection as a crash
// would); every CR still ends in the newest state.
func TestTwoReplicasShareAndFailover(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) { twoReplicas(t, crash) })
	}
}

func twoReplicas(t *testing.T, crash bool) {
	h := newHarness(t)
	a := h.start(t, "ra", nil, nil)
	b := h.start(t, "rb", nil, nil)
	ctx := t.Context()
	name := unique("two")
	p := h.project(t, name)
	pid := p.GetMetadata().GetId()
	const n = 200
	ids := make([]string, n)
	parallel(t, n, func(i int) error {
		s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprint("s", i), ProjectId: ptr(pid), Prompt: ptr("v1")})
		if err != nil {
			return err
		}
		ids[i] = s.GetMetadata().GetId()
		return nil
	})
	update := func(from, to int, prompt string) {
		parallel(t, to-from, func(i int) error {
			_, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: ids[from+i], Prompt: ptr(prompt)})
			return err
		})
	}
	update(0, n, "v2")
	// Stop a once it has done some work, while events are still flowing.
	testenv.Eventually(t, wait, func() error {
		if got := a.stats.Snapshot().Acked; got < 20 {
			return fmt.Errorf("replica a acked %d", got)
		}
		return nil
	})
	if crash {
		a.crash()
	} else {
		a.stop()
	}
	update(0, n, "final")
	testenv.Eventually(t, 90*time.Second, func() error {
		list, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(name).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		final := 0
		for _, u := range list.Items {
			if got, _, _ := unstructured.NestedString(u.Object, "spec", "initialPrompt"); got == "final" {
				final++
			}
		}
		if final != n || len(list.Items) != n {
			return fmt.Errorf("%d CRs, %d in the final state, want %d", len(list.Items), final, n)
		}
		return nil
	})
	t.Logf("UpdateSessionStatus calls: %d for %d sessions (one real change each: kube_cr_uid/kube_namespace)", h.api.CallCount(updateStatusMethod), n)
	if sa, sb := a.stats.Snapshot(), b.stats.Snapshot(); sa.Acked == 0 || sb.Acked == 0 {
		t.Errorf("replicas did not share: a acked %d, b acked %d", sa.Acked, sb.Acked)
	}
}

// parallel runs fn(0..n-1) on 8 goroutines and fails t on the first error.
func parallel(t testing.TB, n int, fn func(i int) error) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	next := make(chan int) // unbuffered: workers take one index at a time
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
}

// TestMalformedSessionFails: malformed JSON fields and invalid names make the
// session Failed with a condition naming the field; no CR; the service keeps
// working for the next session.
func TestMalformedSessionFails(t *testing.T) {
	h := newHarness(t)
	h.start(t, "mf1", nil, nil)
	ctx := t.Context()
	name := unique("mf")
	pid := h.project(t, name).GetMetadata().GetId()
	tests := []struct {
		name  string
		req   *ambientv1.CreateSessionRequest
		field string
	}{
		{"repos", &ambientv1.CreateSessionRequest{Repos: ptr(`[{"url":`)}, "repos"},
		{"labels", &ambientv1.CreateSessionRequest{Labels: ptr(`{"a": 1}`)}, "labels"},
		{"annotations", &ambientv1.CreateSessionRequest{Annotations: ptr(`[]`)}, "annotations"},
		{"resource_overrides", &ambientv1.CreateSessionRequest{ResourceOverrides: ptr(`"big"`)}, "resource_overrides"},
		{"environment_variables", &ambientv1.CreateSessionRequest{EnvironmentVariables: ptr(`{"1BAD":"x"}`)}, "environment_variables"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Name, tc.req.ProjectId = tc.name, ptr(pid)
			s, err := h.cl.CreateSession(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, wait, func() error {
				got, err := h.cl.GetSession(ctx, s.GetMetadata().GetId())
				if err != nil {
					return err
				}
				if got.GetPhase() != "Failed" || !strings.Contains(got.GetConditions(), "field "+tc.field) || !strings.Contains(got.GetConditions(), "InvalidSpec") {
					return fmt.Errorf("phase %q conditions %s", got.GetPhase(), got.GetConditions())
				}
				return nil
			})
			if _, err := h.cr(t, name, lower(s.GetKubeCrName())); !apierrors.IsNotFound(err) {
				t.Errorf("CR of a malformed session: %v", err)
			}
		})
	}
	ok, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "fine", ProjectId: ptr(pid)})
	if err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, name, lower(ok.GetKubeCrName()), nil)
}

// TestRoleOffAllowListRefused: cluster-admin (or any role off the allow-list)
// is never bound; the refusal is reported in metrics; valid entries still are.
func TestRoleOffAllowListRefused(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "ca1", nil, nil)
	ctx := t.Context()
	name := unique("ca")
	pid := h.project(t, name).GetMetadata().GetId()
	if _, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
		GroupAccess: ptr(`[{"group":"evil","role":"cluster-admin"},{"group":"evil","role":"admin"},{"group":"ok","role":"ambient-project-view"}]`)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		list, err := h.kube.RbacV1().RoleBindings(name).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(list.Items) != 1 || list.Items[0].RoleRef.Name != "ambient-project-view" {
			return fmt.Errorf("bindings = %d (%v)", len(list.Items), list.Items)
		}
		return nil
	})
	h.quiesce(t, r)
	body := get(t, "http://"+r.addr.String()+"/metrics")
	if n, _ := testenv.MetricSum(body, "ambient_kube_reconciler_rejected_total", `reason="group_access_entry"`, `resource="project_settings"`); n != 2 {
		t.Errorf("rejections counted in /metrics: %v, want 2", n)
	}
	// Through OTel like every service (the exporter's scope label), and
	// the group's counters only once: as consumer_group_*.
	if _, ok := testenv.MetricSum(body, "ambient_kube_reconciler_reconciles_total", `otel_scope_name="kube-reconciler"`); !ok {
		t.Errorf("reconciles not exported through the OTel meter")
	}
	if _, ok := testenv.MetricSum(body, "consumer_group_delivered_total", `group="kube-reconciler"`); !ok {
		t.Errorf("/metrics lacks consumer_group_delivered_total{group=\"kube-reconciler\"}")
	}
	for _, gone := range []string{"ambient_kube_reconciler_events_delivered_total", "ambient_kube_reconciler_event_retries_total", "ambient_kube_reconciler_dead_letters_total"} {
		if _, ok := testenv.MetricSum(body, gone); ok {
			t.Errorf("/metrics still has %s (a copy of consumer_group_*)", gone)
		}
	}
	if !strings.Contains(get(t, "http://"+r.addr.String()+"/readyz"), "ok") {
		t.Errorf("not ready")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRBAC: the chart's ClusterRole is enough for everything (every other
// test runs as that user) and is least privilege: without it every write is
// Forbidden, and with it binding cluster-admin is Forbidden too.
func TestRBAC(t *testing.T) {
	ctx := t.Context()
	nobody := kube.Env(t).User(t, "nobody")
	cs, err := kubernetes.NewForConfig(nobody)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(nobody)
	if err != nil {
		t.Fatal(err)
	}
	a := apply.New(cs, dyn, kube.Env(t).Watcher(t, slog.New(slog.DiscardHandler)))
	ns := unique("rbac")
	unlabeled := spec.Owner{AdoptUnlabeled: true} // the bindings carry no instance label
	if err := a.Namespace(ctx, spec.Namespace{Name: ns, Labels: spec.ManagedLabels("p")}); !apierrors.IsForbidden(err) {
		t.Errorf("namespace apply without role: %v, want Forbidden", err)
	}
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "x"}, Name: "n", ProjectId: ptr("p")}
	desired, err := spec.Session(s, "default")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Session(ctx, desired); !apierrors.IsForbidden(err) {
		t.Errorf("agenticsession apply without role: %v, want Forbidden", err)
	}
	if _, err := a.RoleBindings(ctx, "default", spec.ManagedLabels("p"), []spec.RoleBinding{{Name: "ambient-g-ambient-project-view", Group: "g", Role: "ambient-project-view"}}, unlabeled); !apierrors.IsForbidden(err) {
		t.Errorf("rolebinding apply without role: %v, want Forbidden", err)
	}

	// With the chart's role: allowed roles bind, cluster-admin does not.
	rcs, err := kubernetes.NewForConfig(restricted(t, kube.Env(t)))
	if err != nil {
		t.Fatal(err)
	}
	ra := apply.New(rcs, nil, nil)
	if err := ra.Namespace(ctx, spec.Namespace{Name: ns, Labels: spec.ManagedLabels("p")}); err != nil {
		t.Fatalf("namespace apply with role: %v", err)
	}
	// RBAC changes take effect after a few ms: poll.
	testenv.Eventually(t, wait, func() error {
		_, err := ra.RoleBindings(ctx, ns, spec.ManagedLabels("p"), []spec.RoleBinding{{Name: "ambient-g-ambient-project-view", Group: "g", Role: "ambient-project-view"}}, unlabeled)
		return err
	})
	_, err = ra.RoleBindings(ctx, ns, spec.ManagedLabels("p"), []spec.RoleBinding{{Name: "ambient-g-cluster-admin", Group: "g", Role: "cluster-admin"}}, unlabeled)
	if !apierrors.IsForbidden(err) {
		t.Errorf("binding cluster-admin with the chart role: %v, want Forbidden", err)
	}
	if _, err := rcs.RbacV1().RoleBindings(ns).Get(ctx, "ambient-g-cluster-admin", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("cluster-admin binding exists: %v", err)
	}
}

// TestGroupNamesKubernetesAccepts: group names with upper-case letters or
// ':' (OIDC groups, system:authenticated) are bound: a RoleBinding name need
// only be a valid path segment, as the RBAC API validates it. A name that
// is not one ('/') is refused, the others still bound.
func TestGroupNamesKubernetesAccepts(t *testing.T) {
	h := newHarness(t)
	h.start(t, "gn1", nil, nil)
	ctx := t.Context()
	name := unique("gn")
	pid := h.project(t, name).GetMetadata().GetId()
	if _, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
		GroupAccess: ptr(`[{"group":"MyTeam","role":"ambient-project-edit"},{"group":"system:authenticated","role":"ambient-project-view"},{"group":"a/b","role":"ambient-project-view"}]`)}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ambient-MyTeam-ambient-project-edit": "MyTeam", "ambient-system:authenticated-ambient-project-view": "system:authenticated"}
	testenv.Eventually(t, wait, func() error {
		list, err := h.kube.RbacV1().RoleBindings(name).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, rb := range list.Items {
			if len(rb.Subjects) == 1 {
				got[rb.Name] = rb.Subjects[0].Name
			}
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("bindings %v, want %v", got, want)
		}
		return nil
	})
}
