package app

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// waitRefused waits until session id is Failed with a Reconciled=False
// condition of reason.
func (h *harness) waitRefused(t *testing.T, id, reason string) {
	t.Helper()
	testenv.Eventually(t, wait, func() error {
		s, err := h.cl.GetSession(t.Context(), id)
		if err != nil {
			return err
		}
		if s.GetPhase() != "Failed" || !strings.Contains(s.GetConditions(), `"reason":"`+reason+`"`) {
			return fmt.Errorf("session %s: phase %q conditions %s", id, s.GetPhase(), s.GetConditions())
		}
		return nil
	})
}

// waitProjectStatus waits until project id's status contains want.
func (h *harness) waitProjectStatus(t *testing.T, id string, want func(status string) bool) string {
	t.Helper()
	var got string
	testenv.Eventually(t, wait, func() error {
		p, err := h.cl.GetProject(t.Context(), id)
		if err != nil {
			return err
		}
		if got = p.GetStatus(); !want(got) {
			return fmt.Errorf("project %s status %q", id, got)
		}
		return nil
	})
	return got
}

// TestNamespacesAdoptedOnlyWhenOurs (issue 12, point 2): a project named
// kube-system or default (deny-list) and a project whose namespace exists
// without our labels get no write in Kubernetes at all: the namespaces, their
// RoleBindings (also one that looks like ours) and their AgenticSessions stay
// exactly as they were. The refusal shows on the project's status, on each
// session (Failed, Reconciled=False) and in the rejected metric. Once an
// operator hands the namespace over (our labels), the project and its
// sessions reconcile again and the status is cleared.
func TestNamespacesAdoptedOnlyWhenOurs(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "ten1", nil, nil)
	ctx := t.Context()

	foreign := unique("foreign")
	if _, err := h.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: foreign, Labels: map[string]string{"team": "x"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, rb := range []*rbacv1.RoleBinding{
		{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: foreign}},
		// Looks like one of ours for this very project: still not ours to prune,
		// because the namespace is not.
		{ObjectMeta: metav1.ObjectMeta{Name: "ambient-old-ambient-project-view", Namespace: foreign, Labels: spec.ManagedLabels(foreign)}},
	} {
		rb.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"}
		rb.Subjects = []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "g"}}
		if _, err := h.kube.RbacV1().RoleBindings(foreign).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct{ project, reason string }{
		{"kube-system", reconcile.ReasonNamespaceDenied},
		{"default", reconcile.ReasonNamespaceDenied},
		{foreign, reconcile.ReasonNamespaceNotOwned},
	}
	before := map[string]map[string]string{}
	for _, tc := range cases {
		before[tc.project] = h.resourceVersions(t, tc.project)
	}
	sessions := map[string]string{}
	for _, tc := range cases {
		pid := h.project(t, tc.project).GetMetadata().GetId()
		if _, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
			GroupAccess: ptr(`[{"group":"devs","role":"ambient-project-edit"}]`)}); err != nil {
			t.Fatal(err)
		}
		s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(pid), Prompt: ptr("hi")})
		if err != nil {
			t.Fatal(err)
		}
		sessions[tc.project] = s.GetMetadata().GetId()
	}
	for _, tc := range cases {
		h.waitRefused(t, sessions[tc.project], tc.reason)
		st := h.waitProjectStatus(t, tc.project, func(s string) bool { return strings.Contains(s, tc.reason) })
		if !strings.Contains(st, `namespace \"`+tc.project+`\"`) {
			t.Errorf("project %s status does not name the namespace: %s", tc.project, st)
		}
	}
	h.quiesce(t, r)
	for _, tc := range cases {
		if diff := diffMaps(before[tc.project], h.resourceVersions(t, tc.project)); diff != "" {
			t.Errorf("namespace %s written: %s", tc.project, diff)
		}
		ns, err := h.kube.CoreV1().Namespaces().Get(ctx, tc.project, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for k := range ns.Labels {
			if strings.HasPrefix(k, "ambient-code.io/") {
				t.Errorf("namespace %s got label %s", tc.project, k)
			}
		}
	}
	body := get(t, "http://"+r.addr.String()+"/metrics")
	for _, want := range [][2]string{
		{`reason="namespace_denied"`, `resource="projects"`},
		{`reason="namespace_not_owned"`, `resource="projects"`},
		{`reason="namespace_denied"`, `resource="sessions"`},
		{`reason="namespace_not_owned"`, `resource="project_settings"`},
	} {
		if _, ok := testenv.MetricSum(body, "ambient_kube_reconciler_rejected_total", want[0], want[1]); !ok {
			t.Errorf("/metrics lacks ambient_kube_reconciler_rejected_total{%s,%s}", want[0], want[1])
		}
	}
	if got := r.logs.Grep("project namespace refused"); len(got) == 0 {
		t.Error("no error log for the refused projects")
	}

	// The operator hands the foreign namespace over; the next events of the
	// project and the session reconcile it and clear the project's status.
	ns, err := h.kube.CoreV1().Namespaces().Get(ctx, foreign, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels[spec.LabelManagedBy], ns.Labels[spec.LabelProjectID] = spec.ManagedByValue, foreign
	if _, err := h.kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cl.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: foreign, Description: ptr("adopted")}); err != nil {
		t.Fatal(err)
	}
	h.waitProjectStatus(t, foreign, func(s string) bool { return s == "" })
	if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: sessions[foreign], Prompt: ptr("again")}); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, foreign, lower(sessions[foreign]), nil)
}

// TestRenameStaysInItsNamespace (issue 12, point 2): a project's namespace
// follows its id, so renaming project B to the name of project A's namespace
// (A renamed first, as the real API keeps names unique) neither moves B into
// A's namespace nor binds B's groups there nor prunes A's bindings; B's
// settings and sessions keep landing in B's own namespace, and no namespace
// is made from a new name.
func TestRenameStaysInItsNamespace(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "ren1", nil, nil)
	ctx := t.Context()
	a, b := unique("rna"), unique("rnb")
	h.project(t, a)
	h.project(t, b)
	if _, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: a, GroupAccess: ptr(`[{"group":"ga","role":"ambient-project-view"}]`)}); err != nil {
		t.Fatal(err)
	}
	psB, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: b, GroupAccess: ptr(`[{"group":"gb","role":"ambient-project-view"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	bindings := func(ns string, want ...string) func() error {
		return func() error {
			list, err := h.kube.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{LabelSelector: spec.ManagedSelector})
			if err != nil {
				return err
			}
			var got []string
			for _, rb := range list.Items {
				got = append(got, rb.Name+"/"+rb.Labels[spec.LabelProjectID])
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				return fmt.Errorf("bindings in %s = %v, want %v", ns, got, want)
			}
			return nil
		}
	}
	testenv.Eventually(t, wait, bindings(a, "ambient-ga-ambient-project-view/"+a))
	testenv.Eventually(t, wait, bindings(b, "ambient-gb-ambient-project-view/"+b))
	h.quiesce(t, r)
	beforeA := h.resourceVersions(t, a)

	if _, err := h.cl.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: a, Name: ptr(a + "-renamed")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cl.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: b, Name: ptr(a)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cl.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: psB.GetMetadata().GetId(), GroupAccess: ptr(`[{"group":"gb2","role":"ambient-project-view"}]`)}); err != nil {
		t.Fatal(err)
	}
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "after-rename", ProjectId: ptr(b)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, bindings(b, "ambient-gb2-ambient-project-view/"+b))
	h.waitCR(t, b, lower(s.GetMetadata().GetId()), nil)
	h.quiesce(t, r)
	if diff := diffMaps(beforeA, h.resourceVersions(t, a)); diff != "" {
		t.Errorf("project A's namespace written after B took A's name: %s", diff)
	}
	if _, err := h.kube.CoreV1().Namespaces().Get(ctx, a+"-renamed", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a namespace was made from a new project name: %v", err)
	}
}

// TestFixedSessionClearsFailure: a session refused for an invalid field
// (phase Failed, Reconciled=False InvalidSpec) that is then fixed gets its
// CR, and the API no longer says it failed: Reconciled=True (Applied) and
// phase Pending, the CR having no phase yet.
func TestFixedSessionClearsFailure(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "fx1", nil, nil)
	ctx := t.Context()
	name := unique("fx")
	pid := h.project(t, name).GetMetadata().GetId()
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(pid), Repos: ptr("not json")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	h.waitRefused(t, id, reconcile.ReasonInvalidSpec)
	if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Repos: ptr(`[{"url":"https://g/x"}]`)}); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, name, lower(s.GetKubeCrName()), nil)
	h.waitSession(t, id, func(s *ambientv1.Session) error {
		c, ok := reconciledCondition(s)
		if !ok || c.Status != session.StatusTrue || c.Reason != reconcile.ReasonApplied {
			return fmt.Errorf("conditions %s, want Reconciled=True Applied", s.GetConditions())
		}
		return wantPhase(s, "Pending")
	})
	h.quiesce(t, r)
}

func reconciledCondition(s *ambientv1.Session) (session.Condition, bool) {
	conds, err := session.ParseConditions(s.GetConditions())
	if err != nil {
		return session.Condition{}, false
	}
	return conds.Get(reconcile.ConditionReconciled)
}

// TestProjectIDsDifferingInCaseShareANamespace: the real API accepts a
// session whose project_id names no project ("Future-N") and puts its CR in
// the namespace of the lower-cased project_id. A project created later with
// the lower-case name (its id), that project's settings and sessions, and
// the first session again, all use that one namespace: none is refused as
// NamespaceNotOwned, and its ownership label is the lower-cased id.
func TestProjectIDsDifferingInCaseShareANamespace(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "case1", nil, nil)
	ctx := t.Context()
	ns := unique("future")
	early := h.sessionIn(t, strings.ToUpper(ns[:1])+ns[1:])
	h.waitReconciled(t, ns, early)

	pid := h.project(t, ns).GetMetadata().GetId()
	if _, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
		GroupAccess: ptr(`[{"group":"devs","role":"ambient-project-view"}]`)}); err != nil {
		t.Fatal(err)
	}
	late := h.sessionIn(t, pid)
	h.waitReconciled(t, ns, late)
	if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: early, Prompt: ptr("again")}); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, ns, lower(early), func(u *unstructured.Unstructured) error {
		if p, _, _ := unstructured.NestedString(u.Object, "spec", "initialPrompt"); p != "again" {
			return fmt.Errorf("initialPrompt %q, want the update", p)
		}
		return nil
	})
	testenv.Eventually(t, wait, func() error {
		_, err := h.kube.RbacV1().RoleBindings(ns).Get(ctx, "ambient-devs-ambient-project-view", metav1.GetOptions{})
		return err
	})
	h.quiesce(t, r)
	if p, err := h.cl.GetProject(ctx, pid); err != nil || p.GetStatus() != "" {
		t.Errorf("project %s status %q, %v; want no refusal", pid, p.GetStatus(), err)
	}
	got, err := h.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels[spec.LabelProjectID] != ns {
		t.Errorf("namespace %s labels %v, want %s=%s", ns, got.Labels, spec.LabelProjectID, ns)
	}
}

// sessionIn creates a session with project_id projectID and returns its id.
func (h *harness) sessionIn(t *testing.T, projectID string) string {
	t.Helper()
	s, err := h.cl.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(projectID), Prompt: ptr("hi")})
	if err != nil {
		t.Fatal(err)
	}
	return s.GetMetadata().GetId()
}

// waitReconciled waits until session id has its CR in namespace ns, and
// fails at once when it is refused (Reconciled=False) instead, so a refusal
// shows its reason rather than a timeout.
func (h *harness) waitReconciled(t *testing.T, ns, id string) {
	t.Helper()
	var refused session.Condition
	testenv.Eventually(t, wait, func() error {
		s, err := h.cl.GetSession(t.Context(), id)
		if err != nil {
			return err
		}
		if c, ok := reconciledCondition(s); ok && c.Status == session.StatusFalse {
			refused = c
			return nil
		}
		_, err = h.cr(t, ns, lower(id))
		return err
	})
	if refused.Reason != "" {
		t.Fatalf("session %s refused: Reconciled=False %s: %s", id, refused.Reason, refused.Message)
	}
}

// TestRoleBindingOfTheSameNameNotTakenOver: a RoleBinding someone else made
// in the project's namespace under the name a group_access entry maps to
// (ambient-<group>-<role>) is left exactly as it was: not deleted and
// recreated for its other roleRef, its subjects not replaced by the
// entry's group. The entry is counted as refused; the others are bound,
// and removing the settings prunes only ours.
func TestRoleBindingOfTheSameNameNotTakenOver(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "rbown1", nil, nil)
	ctx := t.Context()
	name := unique("rbown")
	pid := h.project(t, name).GetMetadata().GetId()
	testenv.Eventually(t, wait, func() error {
		_, err := h.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return err
	})
	user := func(rbName, role string) *rbacv1.RoleBinding {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: rbName, Namespace: name, Labels: map[string]string{"team": "x"}},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "alice"}},
		}
		got, err := h.kube.RbacV1().RoleBindings(name).Create(ctx, rb, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	theirs := []*rbacv1.RoleBinding{
		user("ambient-devs-ambient-project-edit", "view"),                // another roleRef
		user("ambient-ops-ambient-project-view", "ambient-project-view"), // the same roleRef
	}
	settings, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
		GroupAccess: ptr(`[{"group":"devs","role":"ambient-project-edit"},{"group":"ops","role":"ambient-project-view"},{"group":"ok","role":"ambient-project-view"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		_, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, "ambient-ok-ambient-project-view", metav1.GetOptions{})
		return err
	})
	h.quiesce(t, r)
	unchanged := func() {
		t.Helper()
		for _, want := range theirs {
			got, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, want.Name, metav1.GetOptions{})
			if err != nil {
				t.Errorf("%s: %v", want.Name, err)
				continue
			}
			if got.UID != want.UID || got.ResourceVersion != want.ResourceVersion {
				t.Errorf("%s changed: uid %s -> %s, resourceVersion %s -> %s, roleRef %s, subjects %v, labels %v",
					want.Name, want.UID, got.UID, want.ResourceVersion, got.ResourceVersion, got.RoleRef.Name, got.Subjects, got.Labels)
			}
		}
	}
	unchanged()
	body := get(t, "http://"+r.addr.String()+"/metrics")
	if n, _ := testenv.MetricSum(body, "ambient_kube_reconciler_rejected_total", `reason="rolebinding_not_owned"`, `resource="project_settings"`); n < 2 {
		t.Errorf("refusals counted in /metrics: %v, want at least 2", n)
	}
	if err := h.cl.DeleteProjectSettings(ctx, settings.GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		_, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, "ambient-ok-ambient-project-view", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("our binding not pruned: %v", err)
		}
		return nil
	})
	unchanged()
}

// TestInstallationsDoNotShareAProjectNamespace: two installations on one
// cluster, each reading its own API, both have a project of the same name
// (ids equal names on the real server). The first to reconcile it owns the
// namespace (labelled with its CONTROL_PLANE_INSTANCE); the second is
// refused (NamespaceNotOwned, naming the other installation) and writes
// nothing there: neither its sessions' AgenticSessions nor RoleBindings for
// its groups, which would reach the first installation's sessions.
func TestInstallationsDoNotShareAProjectNamespace(t *testing.T) {
	first, second := newHarness(t), newHarness(t)
	r1 := first.start(t, "inst-a", nil, nil)
	r2 := second.start(t, "inst-b", nil, nil)
	ctx := t.Context()
	name := unique("shared")

	pid := first.project(t, name).GetMetadata().GetId()
	mine := first.sessionIn(t, pid)
	first.waitReconciled(t, name, mine)

	if second.project(t, name).GetMetadata().GetId() != pid {
		t.Fatalf("the second API gave project %s another id", name)
	}
	if _, err := second.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
		GroupAccess: ptr(`[{"group":"outsiders","role":"ambient-project-admin"}]`)}); err != nil {
		t.Fatal(err)
	}
	theirs := second.sessionIn(t, pid)
	second.waitRefused(t, theirs, reconcile.ReasonNamespaceNotOwned)
	st := second.waitProjectStatus(t, name, func(s string) bool { return strings.Contains(s, reconcile.ReasonNamespaceNotOwned) })
	if !strings.Contains(st, first.instance) {
		t.Errorf("the refusal does not name the installation that owns the namespace (%s): %s", first.instance, st)
	}
	first.quiesce(t, r1)
	second.quiesce(t, r2)

	ns, err := first.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ns.Labels[spec.LabelInstance]; got != first.instance {
		t.Errorf("namespace %s: %s=%q, want the first installation's %q", name, spec.LabelInstance, got, first.instance)
	}
	if _, err := first.cr(t, name, lower(theirs)); !apierrors.IsNotFound(err) {
		t.Errorf("the second installation's session got an AgenticSession in the first's namespace: %v", err)
	}
	rbs, err := first.kube.RbacV1().RoleBindings(name).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, rb := range rbs.Items {
		for _, s := range rb.Subjects {
			if s.Name == "outsiders" {
				t.Errorf("RoleBinding %s binds the second installation's group %q in the first's namespace", rb.Name, s.Name)
			}
		}
	}
	if _, err := first.cr(t, name, lower(mine)); err != nil {
		t.Errorf("the first installation's AgenticSession: %v", err)
	}
}

// TestProjectEventReassertsNamespaceLabels: a managed label of a project's
// namespace changed by someone (ownership kept: managed-by and project-id
// stay) is put back by the project's next event, not only by the next
// resync pass (5 minutes by default).
func TestProjectEventReassertsNamespaceLabels(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "relabel1", nil, nil)
	ctx := t.Context()
	name := unique("relabel")
	h.project(t, name)
	waitNS := func() {
		t.Helper()
		testenv.Eventually(t, wait, func() error {
			ns, err := h.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if ns.Labels[spec.LabelManaged] != "true" || ns.Labels[spec.LabelInstance] != h.instance {
				return fmt.Errorf("namespace %s labels %v", name, ns.Labels)
			}
			return nil
		})
	}
	waitNS()
	h.quiesce(t, r)

	ns, err := h.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels[spec.LabelManaged] = "false"
	if _, err := h.kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cl.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: name, Description: ptr("touched")}); err != nil {
		t.Fatal(err)
	}
	waitNS()
}
