package app

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/nats-io/nats.go/jetstream"
	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// faultyUser is a reconciler identity bound to a ClusterRole of its own with
// the chart's rules, so a test can take rights away (a Kubernetes outage as
// the reconciler sees it: every delete fails) and give them back.
type faultyUser struct {
	h     *harness
	role  string
	user  string
	rules []rbacv1.PolicyRule
}

func newFaultyUser(t *testing.T, h *harness) (*faultyUser, *rest.Config) {
	t.Helper()
	rules, err := kubetest.ReconcilerRules()
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyUser{h: h, role: unique("kr-faulty"), user: unique("system:serviceaccount:ambient-code:faulty"), rules: rules}
	if err := h.env.BindReconcilerRole(t.Context(), f.role, f.user); err != nil {
		t.Fatal(err)
	}
	return f, h.env.User(t, f.user)
}

// withoutDelete takes (or, with false, gives back) the delete verb on
// agenticsessions and rolebindings, and waits until the authorizer agrees.
func (f *faultyUser) withoutDelete(t *testing.T, broken bool) {
	t.Helper()
	ctx := t.Context()
	rules := make([]rbacv1.PolicyRule, 0, len(f.rules))
	for _, r := range f.rules {
		r = *r.DeepCopy()
		if broken {
			r.Verbs = slices.DeleteFunc(r.Verbs, func(v string) bool { return v == "delete" })
		}
		rules = append(rules, r)
	}
	role, err := f.h.kube.RbacV1().ClusterRoles().Get(ctx, f.role, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	role.Rules = rules
	if _, err := f.h.kube.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		for _, ra := range []authzv1.ResourceAttributes{
			{Verb: "delete", Group: spec.Group, Resource: spec.Resource, Namespace: "x"},
			{Verb: "delete", Group: rbacv1.GroupName, Resource: "rolebindings", Namespace: "x"},
		} {
			sar, err := f.h.kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
				Spec: authzv1.SubjectAccessReviewSpec{User: f.user, ResourceAttributes: &ra}}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			if sar.Status.Allowed == broken {
				return fmt.Errorf("delete %s allowed=%v", ra.Resource, sar.Status.Allowed)
			}
		}
		return nil
	})
}

// TestLostDeleteRepairedByResync (issue 14, finding 2): while Kubernetes
// refuses every delete, a session and its project settings are deleted and
// another project's settings lose a group_access entry; the events fail
// GROUP_MAX_DELIVER times and are dead-lettered, and the AgenticSession and
// RoleBindings outlive them. Once deletes work again the
// periodic resync removes all three within one interval (the cache no longer has
// their source), without any event or restart; the namespace stays. A CR
// deleted by hand is re-created by the same resync.
func TestLostDeleteRepairedByResync(t *testing.T) {
	h := newHarness(t)
	faulty, restCfg := newFaultyUser(t, h)
	const interval = 3 * time.Second
	r := h.start(t, "lost1", restCfg, map[string]string{
		config.EnvResyncInterval: interval.String(),
		group.EnvMaxDeliver:      "2",
	})
	ctx := t.Context()
	name := unique("lost")
	h.project(t, name)
	ps, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: name, GroupAccess: ptr(`[{"group":"g","role":"ambient-project-view"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "gone", ProjectId: ptr(name)})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "kept", ProjectId: ptr(name)})
	if err != nil {
		t.Fatal(err)
	}
	goneCR, keptCR := lower(gone.GetMetadata().GetId()), lower(kept.GetMetadata().GetId())
	h.waitCR(t, name, goneCR, nil)
	h.waitCR(t, name, keptCR, nil)
	const binding = "ambient-g-ambient-project-view"
	testenv.Eventually(t, wait, func() error {
		_, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, binding, metav1.GetOptions{})
		return err
	})
	// A second project whose settings lose one group_access entry.
	edited := unique("lost-edit")
	h.project(t, edited)
	eps, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: edited,
		GroupAccess: ptr(`[{"group":"g","role":"ambient-project-view"},{"group":"h","role":"ambient-project-edit"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	const removed, stays = "ambient-h-ambient-project-edit", "ambient-g-ambient-project-view"
	testenv.Eventually(t, wait, func() error {
		for _, b := range []string{removed, stays} {
			if _, err := h.kube.RbacV1().RoleBindings(edited).Get(ctx, b, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		return nil
	})

	faulty.withoutDelete(t, true)
	dead := r.stats.Snapshot().DeadLettered
	if err := h.cl.DeleteSession(ctx, gone.GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	if err := h.cl.DeleteProjectSettings(ctx, ps.GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cl.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: eps.GetMetadata().GetId(),
		GroupAccess: ptr(`[{"group":"g","role":"ambient-project-view"}]`)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if got := r.stats.Snapshot().DeadLettered - dead; got < 3 {
			return fmt.Errorf("%d events dead-lettered", got)
		}
		return nil
	})
	if n := dlqCount(t, h, "kube-reconciler"); n < 3 {
		t.Fatalf("%d dead letters of kube-reconciler in %s, want 3", n, bus.DLQStreamName)
	}
	if _, err := h.cr(t, name, goneCR); err != nil {
		t.Fatalf("the outage did not keep the CR (the test proves nothing): %v", err)
	}
	if _, err := h.kube.RbacV1().RoleBindings(edited).Get(ctx, removed, metav1.GetOptions{}); err != nil {
		t.Fatalf("the outage did not keep the removed entry's binding (the test proves nothing): %v", err)
	}

	faulty.withoutDelete(t, false)
	repaired := time.Now()
	// One interval (+10% jitter) after the outage, plus the pass itself
	// (seconds on a loaded 2-core machine under -race).
	testenv.Eventually(t, interval+interval/10+5*time.Second, func() error {
		if _, err := h.cr(t, name, goneCR); !apierrors.IsNotFound(err) {
			return fmt.Errorf("CR of the deleted session still there: %v", err)
		}
		if _, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, binding, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("binding of the deleted settings still there: %v", err)
		}
		if _, err := h.kube.RbacV1().RoleBindings(edited).Get(ctx, removed, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("binding of the removed group_access entry still there: %v", err)
		}
		return nil
	})
	if _, err := h.kube.RbacV1().RoleBindings(edited).Get(ctx, stays, metav1.GetOptions{}); err != nil {
		t.Errorf("the kept entry's binding was deleted: %v", err)
	}
	t.Logf("repaired %s after the outage (interval %s)", time.Since(repaired).Round(10*time.Millisecond), interval)
	if _, err := h.cr(t, name, keptCR); err != nil {
		t.Errorf("the live session's CR was deleted: %v", err)
	}
	if _, err := h.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Errorf("namespace deleted: %v", err)
	}
	waitResyncDeletion(t, r, gone.GetMetadata().GetId())

	// Drift the other way: a CR deleted by hand while its session lives.
	if err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(name).Delete(ctx, keptCR, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, name, keptCR, nil)
}

// dlqCount counts the dead letters of group in AMBIENT_DLQ.
func dlqCount(t *testing.T, h *harness, grp string) uint64 {
	t.Helper()
	s, err := h.js.Stream(t.Context(), bus.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter("ambient.dlq."+grp+".>"))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// TestResyncSharesPartitions: with two replicas each object is resynced by
// exactly one of them, the owner of its partition (group.Assignment), and a
// pass over sessions whose CRs are as desired writes nothing to Kubernetes.
func TestResyncSharesPartitions(t *testing.T) {
	h := newHarness(t)
	env := map[string]string{config.EnvResyncInterval: "2s"}
	a := h.start(t, "rs-a", nil, env)
	b := h.start(t, "rs-b", nil, env)
	name := unique("share")
	h.project(t, name)
	ids := h.createSessions(t, name, 24)
	for _, id := range ids {
		h.waitCR(t, name, lower(id), nil)
	}
	h.quiesce(t, a, b)
	before := h.resourceVersions(t, name)
	// Both replicas have handled events, so both own partitions now; passes
	// that ran while only one had joined (it owned everything) are behind
	// this mark and not counted.
	mark := map[*replica]int{a: len(a.logs.Lines(t, "object resynced", nil)), b: len(b.logs.Lines(t, "object resynced", nil))}
	resynced := func(r *replica) map[string]bool {
		out := map[string]bool{}
		for _, rec := range r.logs.Lines(t, "object resynced", nil)[mark[r]:] {
			if rec["resource"] == "sessions" {
				out[rec["object_id"].(string)] = true
			}
		}
		return out
	}
	// Partitions reach the second replica when the group next reconciles
	// its membership, not when it first handles an event: wait until both
	// resync something, then count only passes after that.
	testenv.Eventually(t, 30*time.Second, func() error {
		if len(resynced(a)) == 0 || len(resynced(b)) == 0 {
			return fmt.Errorf("replicas resynced a %d, b %d sessions; want both to own some", len(resynced(a)), len(resynced(b)))
		}
		return nil
	})
	mark = map[*replica]int{a: len(a.logs.Lines(t, "object resynced", nil)), b: len(b.logs.Lines(t, "object resynced", nil))}
	// Wait until every session was resynced at least once by someone.
	testenv.Eventually(t, 30*time.Second, func() error {
		ra, rb := resynced(a), resynced(b)
		for _, id := range ids {
			if !ra[id] && !rb[id] {
				return fmt.Errorf("session %s not resynced yet", id)
			}
		}
		return nil
	})
	ra, rb := resynced(a), resynced(b)
	const partitions = 4 // the harness's GROUP_PARTITIONS
	for _, id := range ids {
		if ra[id] && rb[id] {
			t.Errorf("session %s (partition %d) resynced by both replicas", id, group.PartitionOf(id, partitions))
		}
	}
	if len(ra) == 0 || len(rb) == 0 {
		t.Errorf("one replica resynced nothing: a %d, b %d", len(ra), len(rb))
	}
	if diff := diffMaps(before, h.resourceVersions(t, name)); diff != "" {
		t.Errorf("resync of unchanged objects wrote to Kubernetes: %s", diff)
	}
	// A pass may still apply (a no-op on the server, as the resource
	// versions above show) while the watch cache of the CRs trails the
	// cluster; a later pass, 2 s on, finds them unchanged.
	testenv.Eventually(t, 20*time.Second, func() error {
		body := get(t, "http://"+a.addr.String()+"/metrics") + get(t, "http://"+b.addr.String()+"/metrics")
		if _, ok := testenv.MetricSum(body, "ambient_kube_reconciler_resync_objects_total", `resource="sessions"`, `result="unchanged"`); !ok {
			return errors.New("no unchanged resync counted")
		}
		return nil
	})
}

// TestStatusCacheBounded (issue 14, point 6): the status write-back keeps at
// most STATUS_CACHE_SIZE sessions in memory, however many it has seen, and
// still writes each real change exactly once.
func TestStatusCacheBounded(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "cache1", nil, map[string]string{config.EnvStatusCacheSize: "3"})
	ctx := t.Context()
	name := unique("cache")
	h.project(t, name)
	const n = 12
	ids := h.createSessions(t, name, n)
	testenv.Eventually(t, wait, func() error {
		for _, id := range ids {
			s, err := h.cl.GetSession(ctx, id)
			if err != nil {
				return err
			}
			if s.GetKubeNamespace() != name {
				return fmt.Errorf("session %s: kube_namespace %q", id, s.GetKubeNamespace())
			}
		}
		return nil
	})
	h.quiesce(t, r)
	if got := h.api.CallCount(updateStatusMethod); got != n {
		t.Errorf("UpdateSessionStatus calls = %d, want %d (one real change each)", got, n)
	}
	body := get(t, "http://"+r.addr.String()+"/metrics")
	cached, ok := testenv.MetricSum(body, "ambient_kube_reconciler_status_cached_sessions")
	if !ok || cached < 1 || cached > 3 {
		t.Errorf("status write-back remembers %v sessions, want 1..3", cached)
	}
}

// TestDeleteLostInOutageRepairedByResync (issue 14, finding 2, as reported):
// the kube-apiserver becomes unreachable (every connection of the
// reconciler cut, watches included), a session is deleted, its DELETED
// event fails GROUP_MAX_DELIVER times and is dead-lettered; the API server
// comes back and the AgenticSession disappears within one resync interval,
// with no event and no restart. Without the resync the CR stays for good
// (the informer has nothing left to announce).
func TestDeleteLostInOutageRepairedByResync(t *testing.T) {
	h := newHarness(t)
	outage, restCfg := kubetest.Behind(t, restricted(t, h.env))
	const interval = 3 * time.Second
	r := h.start(t, "outage1", restCfg, map[string]string{
		config.EnvResyncInterval: interval.String(),
		group.EnvMaxDeliver:      "2",
	})
	ctx := t.Context()
	name := unique("outage")
	h.project(t, name)
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "gone", ProjectId: ptr(name)})
	if err != nil {
		t.Fatal(err)
	}
	cr := lower(s.GetMetadata().GetId())
	h.waitCR(t, name, cr, nil)
	h.quiesce(t, r)

	outage.Down()
	dead := r.stats.Snapshot().DeadLettered
	if err := h.cl.DeleteSession(ctx, s.GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if got := r.stats.Snapshot().DeadLettered - dead; got < 1 {
			return fmt.Errorf("%d events dead-lettered", got)
		}
		return nil
	})
	if _, err := h.cr(t, name, cr); err != nil {
		t.Fatalf("the CR is gone before the outage ended (the test proves nothing): %v", err)
	}

	outage.Up()
	back := time.Now()
	// One interval (+10% jitter), plus the client's reconnect and the pass
	// itself on a loaded 2-core machine under -race.
	testenv.Eventually(t, interval+interval/10+10*time.Second, func() error {
		if _, err := h.cr(t, name, cr); !apierrors.IsNotFound(err) {
			return fmt.Errorf("CR of the deleted session still there: %v", err)
		}
		return nil
	})
	t.Logf("repaired %s after the outage (interval %s)", time.Since(back).Round(10*time.Millisecond), interval)
	waitResyncDeletion(t, r, s.GetMetadata().GetId())
}

// waitResyncDeletion waits until r logged the resync's deletion of session
// id's CR exactly once (the log line follows the delete the test saw).
func waitResyncDeletion(t *testing.T, r *replica, id string) {
	t.Helper()
	testenv.Eventually(t, wait, func() error {
		if got := r.logs.Lines(t, "agenticsession of a deleted session removed by resync", map[string]string{"session_id": id}); len(got) != 1 {
			return fmt.Errorf("%d resync deletions logged for the session, want 1", len(got))
		}
		return nil
	})
}

// TestResyncDeletesLegacyOrphans (issue 14): an AgenticSession written
// before instance labels existed, whose session is gone, is deleted by the
// resync of the installation that adopts unlabeled objects; another
// installation's orphan in the same namespace is left alone.
func TestResyncDeletesLegacyOrphans(t *testing.T) {
	h := newHarness(t)
	const interval = 2 * time.Second
	r := h.start(t, "legacy1", nil, map[string]string{
		config.EnvResyncInterval: interval.String(),
		config.EnvAdoptUnlabeled: "true",
	})
	ctx := t.Context()
	name := unique("legacy")
	h.project(t, name)
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "live", ProjectId: ptr(name)})
	if err != nil {
		t.Fatal(err)
	}
	live := lower(s.GetMetadata().GetId())
	u := h.waitCR(t, name, live, nil)
	// Copies of the live CR standing for sessions deleted long ago.
	orphan := func(suffix string, relabel func(l map[string]string)) (crName, sessionID string) {
		t.Helper()
		c := u.DeepCopy()
		c.SetName(live + "-" + suffix)
		c.SetResourceVersion("")
		c.SetUID("")
		c.SetCreationTimestamp(metav1.Time{})
		c.SetManagedFields(nil)
		delete(c.Object, "status")
		sessionID = "gone-" + suffix + "-" + name
		ann := c.GetAnnotations()
		ann[spec.AnnotationSessionID] = sessionID
		c.SetAnnotations(ann)
		l := c.GetLabels()
		relabel(l)
		c.SetLabels(l)
		if _, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(name).Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", c.GetName(), err)
		}
		return c.GetName(), sessionID
	}
	legacy, legacyID := orphan("legacy", func(l map[string]string) { delete(l, spec.LabelInstance) })
	foreign, _ := orphan("foreign", func(l map[string]string) { l[spec.LabelInstance] = "other-" + h.instance })

	waitResyncDeletion(t, r, legacyID)
	if _, err := h.cr(t, name, legacy); !apierrors.IsNotFound(err) {
		t.Fatalf("legacy orphan %s still there: %v", legacy, err)
	}
	// The pass that deleted the legacy orphan saw the others too.
	if _, err := h.cr(t, name, foreign); err != nil {
		t.Errorf("another installation's orphan was touched: %v", err)
	}
	if _, err := h.cr(t, name, live); err != nil {
		t.Errorf("the live session's CR is gone: %v", err)
	}
}
