package app

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const wait = 30 * time.Second

func (h *harness) project(t testing.TB, name string) *ambientv1.Project {
	t.Helper()
	p, err := h.cl.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *harness) cr(t *testing.T, ns, name string) (*unstructured.Unstructured, error) {
	t.Helper()
	return h.dyn.Resource(apply.AgenticSessionGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
}

func (h *harness) waitCR(t *testing.T, ns, name string, check func(u *unstructured.Unstructured) error) *unstructured.Unstructured {
	t.Helper()
	var got *unstructured.Unstructured
	testenv.Eventually(t, wait, func() error {
		u, err := h.cr(t, ns, name)
		if err != nil {
			return err
		}
		got = u
		if check != nil {
			return check(u)
		}
		return nil
	})
	return got
}

// createSessions creates n sessions named 0..n-1 in project projectID and
// returns their ids in that order.
func (h *harness) createSessions(t *testing.T, projectID string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		s, err := h.cl.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: strconv.Itoa(i), ProjectId: ptr(projectID)})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = s.GetMetadata().GetId()
	}
	return ids
}

// setCRStatus sets the status of AgenticSession ns/name through the status
// subresource, as the operator does.
func (h *harness) setCRStatus(t *testing.T, ns, name string, st map[string]any) {
	t.Helper()
	u, err := h.cr(t, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	u.Object["status"] = st
	if _, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(ns).UpdateStatus(t.Context(), u, metav1.UpdateOptions{FieldManager: "operator"}); err != nil {
		t.Fatal(err)
	}
}

// waitSessions polls GetSession until ok holds for every session of ids
// (what names it in the failure) and returns the GetSession calls it made,
// for tests that count the replicas' calls apart from their own.
func (h *harness) waitSessions(t *testing.T, ids []string, what string, ok func(s *ambientv1.Session) bool) int {
	t.Helper()
	calls := 0
	testenv.Eventually(t, wait, func() error {
		for _, id := range ids {
			calls++
			s, err := h.cl.GetSession(t.Context(), id)
			if err != nil {
				return err
			}
			if !ok(s) {
				return fmt.Errorf("session %s: %s not written yet", id, what)
			}
		}
		return nil
	})
	return calls
}

// TestMapping: projects, settings and sessions created in the API become
// Namespaces, RoleBindings and AgenticSessions with the labels, subjects,
// roleRefs and spec fields of UPSTREAM-BEHAVIOUR.md, on the operator's CRD
// schema: a session with every field set (repos with names included) gets its
// AgenticSession, what the CRD cannot hold lands in labels and annotations,
// kube_cr_uid/kube_namespace are written back, and nothing is dropped,
// refused or retried on the way (the replica's log says so).
func TestMapping(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "m1", nil, nil)
	ctx := t.Context()
	// Lower case: the API refuses project names that are no DNS-1123 label,
	// like the real server.
	name := unique("map")
	p := h.project(t, name)
	ns := lower(name)
	if _, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: p.GetMetadata().GetId(),
		GroupAccess: ptr(`[{"group":"devs","role":"ambient-project-edit"},{"group":"leads","role":"ambient-project-admin"}]`)}); err != nil {
		t.Fatal(err)
	}

	testenv.Eventually(t, wait, func() error {
		got, err := h.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return err
		}
		want := map[string]string{"ambient-code.io/managed": "true", "ambient-code.io/managed-by": "ambient-control-plane", "ambient-code.io/project-id": name}
		for k, v := range want {
			if got.Labels[k] != v {
				return fmt.Errorf("namespace label %s = %q, want %q", k, got.Labels[k], v)
			}
		}
		return nil
	})
	testenv.Eventually(t, wait, func() error {
		list, err := h.kube.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{LabelSelector: spec.ManagedSelector})
		if err != nil {
			return err
		}
		var got []string
		for _, rb := range list.Items {
			s := rb.Subjects[0]
			// The managed and instance labels too: the resync and the prune
			// find this installation's bindings by them.
			got = append(got, fmt.Sprintf("%s %s/%s -> %s/%s %s managed=%s instance=%s", rb.Name, s.Kind, s.Name, rb.RoleRef.Kind, rb.RoleRef.Name,
				rb.Labels["ambient-code.io/project-id"], rb.Labels[spec.LabelManaged], rb.Labels[spec.LabelInstance]))
		}
		slices.Sort(got)
		labels := name + " managed=true instance=" + h.instance
		want := []string{
			"ambient-devs-ambient-project-edit Group/devs -> ClusterRole/ambient-project-edit " + labels,
			"ambient-leads-ambient-project-admin Group/leads -> ClusterRole/ambient-project-admin " + labels,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			return fmt.Errorf("rolebindings (-want +got):\n%s", diff)
		}
		return nil
	})

	// A parent_session_id must name a session (the API's foreign key);
	// the annotation carries its CR name, the id lower-cased.
	parent, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "parent", ProjectId: ptr(p.GetMetadata().GetId())})
	if err != nil {
		t.Fatal(err)
	}
	parentID := parent.GetMetadata().GetId()
	tests := []struct {
		name string
		req  *ambientv1.CreateSessionRequest
		// byUser creates the session as a user (h.creator), whom the API
		// makes its creator; the service token (h.cl) makes none.
		byUser bool
		want   map[string]any // spec (JSON form)
		lbl    map[string]string
		ann    map[string]string
	}{
		{
			name: "defaults from the API",
			req:  &ambientv1.CreateSessionRequest{Name: "plain", Prompt: ptr("hello")},
			want: map[string]any{"displayName": "plain", "initialPrompt": "hello",
				"llmSettings": map[string]any{"model": "sonnet", "temperature": 0.7, "maxTokens": float64(4000)}},
		},
		{
			name: "every field",
			req: &ambientv1.CreateSessionRequest{Name: "full", Prompt: ptr("p"), Timeout: ptr(int32(600)), LlmModel: ptr("opus"),
				LlmTemperature: ptr(0.2), LlmMaxTokens: ptr(int32(100)), BotAccountName: ptr("bot"),
				RepoUrl: ptr("https://git/ignored-when-repos-is-set"), AssignedUserId: ptr("u-2"), WorkflowId: ptr("wf-1"), ParentSessionId: ptr(parentID),
				Repos:                ptr(`[{"url":"https://git/a","name":"front"},{"url":"https://git/b","branch":"dev","name":"back","autoPush":true}]`),
				ResourceOverrides:    ptr(`{"cpu":"2","memory":"4Gi"}`),
				EnvironmentVariables: ptr(`{"A":"1"}`),
				Labels:               ptr(`{"team":"x"}`), Annotations: ptr(`{"note":"y z"}`)},
			byUser: true,
			want: map[string]any{"displayName": "full", "initialPrompt": "p", "timeout": float64(600),
				"llmSettings":          map[string]any{"model": "opus", "temperature": 0.2, "maxTokens": float64(100)},
				"userContext":          map[string]any{"userId": "u-1"},
				"environmentVariables": map[string]any{"A": "1"},
				"repos": []any{map[string]any{"url": "https://git/a", "branch": "ambient/CRNAME"},
					map[string]any{"url": "https://git/b", "branch": "dev", "autoPush": true}}},
			lbl: map[string]string{"team": "x"},
			ann: map[string]string{"note": "y z", spec.AnnotationBotAccount: "bot",
				spec.AnnotationResourceOverrides: `{"cpu":"2","memory":"4Gi"}`, spec.AnnotationRepoNames: `["front","back"]`,
				spec.AnnotationParentSessionID: lower(parentID)},
		},
		{
			name: "repo_url only",
			req:  &ambientv1.CreateSessionRequest{Name: "single", RepoUrl: ptr("https://git/r")},
			want: map[string]any{"displayName": "single",
				"llmSettings": map[string]any{"model": "sonnet", "temperature": 0.7, "maxTokens": float64(4000)},
				"repos":       []any{map[string]any{"url": "https://git/r", "branch": "ambient/CRNAME"}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.ProjectId = ptr(p.GetMetadata().GetId())
			cl := h.cl
			if tc.byUser {
				cl = h.creator
			}
			s, err := cl.CreateSession(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			crName := lower(s.GetKubeCrName())
			if crName == "" {
				crName = lower(s.GetMetadata().GetId())
			}
			want := fixBranch(tc.want, crName)
			u := h.waitCR(t, ns, crName, func(u *unstructured.Unstructured) error {
				got, _, _ := unstructured.NestedMap(u.Object, "spec")
				if diff := cmp.Diff(want, jsonRoundTrip(got)); diff != "" {
					return fmt.Errorf("spec (-want +got):\n%s", diff)
				}
				return nil
			})
			if u.GetAnnotations()[spec.AnnotationSessionID] != s.GetMetadata().GetId() {
				t.Errorf("session annotation = %q", u.GetAnnotations()[spec.AnnotationSessionID])
			}
			for k, v := range tc.lbl {
				if u.GetLabels()[k] != v {
					t.Errorf("label %s = %q, want %q", k, u.GetLabels()[k], v)
				}
			}
			if u.GetLabels()[spec.LabelManagedBy] != spec.ManagedByValue || u.GetLabels()[spec.LabelProjectID] != name {
				t.Errorf("managed labels missing: %v", u.GetLabels())
			}
			for k, v := range tc.ann {
				if u.GetAnnotations()[k] != v {
					t.Errorf("annotation %s = %q, want %q", k, u.GetAnnotations()[k], v)
				}
			}
			// The status write-back reports where the CR lives.
			testenv.Eventually(t, wait, func() error {
				got, err := h.cl.GetSession(ctx, s.GetMetadata().GetId())
				if err != nil {
					return err
				}
				if got.GetKubeCrUid() != string(u.GetUID()) || got.GetKubeNamespace() != ns {
					return fmt.Errorf("kube_cr_uid/namespace = %q/%q, want %q/%q", got.GetKubeCrUid(), got.GetKubeNamespace(), u.GetUID(), ns)
				}
				return nil
			})
		})
	}
	h.quiesce(t, r)
	if bad := r.logs.Grep("not declared", "dropped", "session refused", "handling failed", "dead-lettered", "InvalidSpec"); len(bad) > 0 {
		t.Errorf("field errors, drops or retries logged:\n%s", strings.Join(bad, "\n"))
	}
}

func fixBranch(m map[string]any, crName string) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal([]byte(strings.ReplaceAll(string(b), "CRNAME", crName)), &out) // test data: always valid
	return out
}

func jsonRoundTrip(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out) // from a decoded object: always valid
	return out
}

// TestUpdatesPruneRecreateDelete: a session update changes the CR spec; a
// removed group_access entry deletes its RoleBinding; a changed role
// deletes the old role's binding and creates the new role's (the role is
// part of the name; a changed roleRef under one name, delete and create, is
// apply's TestRoleBindingsApplyPruneRecreate); a deleted session deletes its
// CR; a deleted project keeps its namespace.
func TestUpdatesPruneRecreateDelete(t *testing.T) {
	h := newHarness(t)
	h.start(t, "u1", nil, nil)
	ctx := t.Context()
	name := unique("upd")
	p := h.project(t, name)
	pid := p.GetMetadata().GetId()
	ps, err := h.cl.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
		GroupAccess: ptr(`[{"group":"a","role":"ambient-project-edit"},{"group":"b","role":"ambient-project-view"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(pid), Prompt: ptr("v1"), BotAccountName: ptr("bot")})
	if err != nil {
		t.Fatal(err)
	}
	crName := lower(s.GetKubeCrName())
	h.waitCR(t, name, crName, nil)
	bindings := func(want ...string) func() error {
		return func() error {
			list, err := h.kube.RbacV1().RoleBindings(name).List(ctx, metav1.ListOptions{LabelSelector: spec.InstanceSelector(h.instance)})
			if err != nil {
				return err
			}
			var got []string
			for _, rb := range list.Items {
				got = append(got, rb.Name+"->"+rb.RoleRef.Name)
			}
			slices.Sort(got)
			if diff := cmp.Diff(want, got); diff != "" {
				return fmt.Errorf("bindings (-want +got):\n%s", diff)
			}
			return nil
		}
	}
	testenv.Eventually(t, wait, bindings("ambient-a-ambient-project-edit->ambient-project-edit", "ambient-b-ambient-project-view->ambient-project-view"))
	// The same project's bindings of another installation and of one from
	// before the instance label (this harness's instance adopts none): no
	// prune below may touch them.
	notOurs := map[string]string{"other-installation": "other-" + h.instance, "unlabelled": ""}
	for rbName, instance := range notOurs {
		l := spec.ManagedLabels(pid)
		if instance != "" {
			l[spec.LabelInstance] = instance
		}
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: rbName, Namespace: name, Labels: l},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "ambient-project-view"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "z"}},
		}
		if _, err := h.kube.RbacV1().RoleBindings(name).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Session update: new prompt, bot account dropped.
	if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: s.GetMetadata().GetId(), Prompt: ptr("v2"), BotAccountName: ptr("")}); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, name, crName, func(u *unstructured.Unstructured) error {
		if got, _, _ := unstructured.NestedString(u.Object, "spec", "initialPrompt"); got != "v2" {
			return fmt.Errorf("initialPrompt = %q, want v2", got)
		}
		return nil
	})

	// Entry b removed, a's role changed: b pruned, a's binding replaced.
	if _, err := h.cl.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: ps.GetMetadata().GetId(),
		GroupAccess: ptr(`[{"group":"a","role":"ambient-project-admin"}]`)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, bindings("ambient-a-ambient-project-admin->ambient-project-admin"))

	// Session deleted: CR deleted.
	if err := h.cl.DeleteSession(ctx, s.GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if _, err := h.cr(t, name, crName); !apierrors.IsNotFound(err) {
			return fmt.Errorf("cr still there: %v", err)
		}
		return nil
	})

	// Project deleted: namespace kept (events handled, namespace not terminating).
	if err := h.cl.DeleteProject(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if err := h.cl.DeleteProjectSettings(ctx, ps.GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, bindings())
	for rbName := range notOurs {
		if _, err := h.kube.RbacV1().RoleBindings(name).Get(ctx, rbName, metav1.GetOptions{}); err != nil {
			t.Errorf("binding %s, not this installation's, after the prunes: %v", rbName, err)
		}
	}
	got, err := h.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil || got.DeletionTimestamp != nil {
		t.Fatalf("namespace after project delete: %v, deleting=%v", err, got.DeletionTimestamp)
	}
}
