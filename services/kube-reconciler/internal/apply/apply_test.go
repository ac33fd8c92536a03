package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

var nsSeq atomic.Int64

func clients(t *testing.T) (kubernetes.Interface, dynamic.Interface) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(kube.Env(t).Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(kube.Env(t).Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs, dyn
}

func uniqueNS(prefix string) string { return fmt.Sprintf("%s-%d", prefix, nsSeq.Add(1)) }

func TestNamespaceReassertsLabels(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, nil)
	ns := spec.Namespace{Name: uniqueNS("ns"), Labels: spec.ManagedLabels("Proj")}
	if err := a.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv := got.ResourceVersion
	if err := a.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if again, _ := cs.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{}); again.ResourceVersion != rv {
		t.Errorf("re-apply changed resourceVersion %s -> %s", rv, again.ResourceVersion)
	}
	// Someone edits the managed label and adds one of their own.
	got.Labels[spec.LabelManaged] = "false"
	got.Labels["other"] = "kept"
	if _, err := cs.CoreV1().Namespaces().Update(ctx, got, metav1.UpdateOptions{FieldManager: "kubectl"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	final, _ := cs.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
	if final.Labels[spec.LabelManaged] != "true" || final.Labels["other"] != "kept" || final.Labels[spec.LabelProjectID] != "proj" {
		t.Errorf("labels = %v, want managed re-asserted and other kept", final.Labels)
	}
}

func TestRoleBindingsApplyPruneRecreate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, nil)
	ns := uniqueNS("rb")
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := spec.ManagedLabels("p")
	labels[spec.LabelInstance] = "blue"
	blue := spec.Owner{Instance: "blue"}
	want := []spec.RoleBinding{
		{Name: "ambient-a-ambient-project-edit", Group: "a", Role: "ambient-project-edit"},
		{Name: "ambient-b-ambient-project-view", Group: "b", Role: "ambient-project-view"},
	}
	if res, err := a.RoleBindings(ctx, ns, labels, want, blue); err != nil || res.Applied != 2 {
		t.Fatalf("RoleBindings = %+v, %v", res, err)
	}
	// A binding nobody manages must survive pruning.
	if err := createUnmanaged(ctx, cs, ns, "foreign"); err != nil {
		t.Fatal(err)
	}
	rvA := rv(t, cs, ns, want[0].Name)
	if _, err := a.RoleBindings(ctx, ns, labels, want, blue); err != nil {
		t.Fatal(err)
	}
	if got := rv(t, cs, ns, want[0].Name); got != rvA {
		t.Errorf("re-apply changed resourceVersion %s -> %s", rvA, got)
	}
	// The same project's bindings written by another installation (green)
	// and by one from before the instance label: neither is blue's.
	green := spec.ManagedLabels("p")
	green[spec.LabelInstance] = "green"
	if err := createLabelled(ctx, cs, ns, "green", green); err != nil {
		t.Fatal(err)
	}
	if err := createLabelled(ctx, cs, ns, "unlabelled", spec.ManagedLabels("p")); err != nil {
		t.Fatal(err)
	}
	res, err := a.RoleBindings(ctx, ns, labels, want[:1], blue)
	if err != nil || res.Pruned != 1 {
		t.Fatalf("prune = %+v, %v; want 1 pruned", res, err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Get(ctx, want[1].Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pruned binding still there: %v", err)
	}
	for _, name := range []string{"foreign", "green", "unlabelled"} {
		if _, err := cs.RbacV1().RoleBindings(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("binding %s, not blue's, removed: %v", name, err)
		}
	}
	// The installation that adopts unlabelled objects prunes that one too.
	res, err = a.RoleBindings(ctx, ns, labels, want[:1], spec.Owner{Instance: "blue", AdoptUnlabeled: true})
	if err != nil || res.Pruned != 1 {
		t.Fatalf("prune adopting unlabelled = %+v, %v; want 1 pruned", res, err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Get(ctx, "unlabelled", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("unlabelled binding kept by the adopting installation: %v", err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Get(ctx, "green", metav1.GetOptions{}); err != nil {
		t.Errorf("green's binding removed: %v", err)
	}
	// Same name, other role: roleRef is immutable, so delete + recreate.
	changed := []spec.RoleBinding{{Name: want[0].Name, Group: "a", Role: "ambient-project-admin"}}
	res, err = a.RoleBindings(ctx, ns, labels, changed, blue)
	if err != nil || res.Recreated != 1 {
		t.Fatalf("recreate = %+v, %v; want 1 recreated", res, err)
	}
	got, err := cs.RbacV1().RoleBindings(ns).Get(ctx, want[0].Name, metav1.GetOptions{})
	if err != nil || got.RoleRef.Name != "ambient-project-admin" || got.Subjects[0].Kind != "Group" || got.Subjects[0].Name != "a" {
		t.Fatalf("recreated binding = %+v, %v", got, err)
	}
}

func createUnmanaged(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	return createLabelled(ctx, cs, ns, name, nil)
}

// createLabelled creates a RoleBinding of name with labels, as someone else
// than this Applier would.
func createLabelled(ctx context.Context, cs kubernetes.Interface, ns, name string, labels map[string]string) error {
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "g"}},
	}
	_, err := cs.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{})
	return err
}

func rv(t *testing.T, cs kubernetes.Interface, ns, name string) string {
	t.Helper()
	got, err := cs.RbacV1().RoleBindings(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got.ResourceVersion
}

// TestSessionApplyOwnsOnlySpec: re-applying is a no-op, the operator's status
// is never touched, and a field the reconciler stops setting goes away.
func TestSessionApplyOwnsOnlySpec(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, kube.Env(t).Watcher(t, slog.New(slog.DiscardHandler)))
	ns := uniqueNS("as")
	if err := a.Namespace(ctx, spec.Namespace{Name: ns, Labels: spec.ManagedLabels("p")}); err != nil {
		t.Fatal(err)
	}
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "S1"}, Name: "n", ProjectId: proto.String("p"),
		Prompt: proto.String("hi"), LlmModel: proto.String("m"), BotAccountName: proto.String("bot")}
	desired, err := spec.Session(s, ns)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := a.Session(ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	// The operator sets status through the subresource.
	obj.Object["status"] = map[string]any{"phase": "Running", "sdkSessionId": "sdk"}
	withStatus, err := dyn.Resource(AgenticSessionGVR).Namespace(ns).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: "operator"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.Session(ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	if again.GetResourceVersion() != withStatus.GetResourceVersion() {
		t.Errorf("re-apply changed resourceVersion %s -> %s", withStatus.GetResourceVersion(), again.GetResourceVersion())
	}
	// Drop the prompt and the bot account: the field and the annotation go
	// away, status stays.
	s.Prompt, s.BotAccountName = nil, nil
	desired, _ = spec.Session(s, ns)
	updated, err := a.Session(ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := unstructured.NestedString(updated.Object, "spec", "initialPrompt"); found {
		t.Error("spec.initialPrompt still set after it was dropped")
	}
	if _, found := updated.GetAnnotations()[spec.AnnotationBotAccount]; found {
		t.Error("bot account annotation still set after it was dropped")
	}
	if phase, _, _ := unstructured.NestedString(updated.Object, "status", "phase"); phase != "Running" {
		t.Errorf("status.phase = %q, want Running (untouched)", phase)
	}
	if err := a.DeleteSession(ctx, ns, desired.Name); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteSession(ctx, ns, desired.Name); err != nil {
		t.Errorf("second delete: %v, want nil", err)
	}
}

// TestSessionApplyClaimsOnlySetFields: the apply body is an apply
// configuration, so the reconciler's managed fields are exactly the spec
// fields the session sets; no zero value (timeout 0, empty repos, no
// userContext) is claimed, so another manager may own those.
func TestSessionApplyClaimsOnlySetFields(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, kube.Env(t).Watcher(t, slog.New(slog.DiscardHandler)))
	ns := uniqueNS("claim")
	if err := a.Namespace(ctx, spec.Namespace{Name: ns, Labels: spec.ManagedLabels("p")}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   *ambientv1.Session
		want []string
	}{
		{
			name: "name only",
			in:   &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "c1"}, Name: "n", ProjectId: proto.String("p")},
			want: []string{".displayName"},
		},
		{
			name: "llm temperature zero and one repo",
			in: &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "c2"}, Name: "n", ProjectId: proto.String("p"),
				LlmTemperature: proto.Float64(0), RepoUrl: proto.String("https://git/r")},
			want: []string{".displayName", ".llmSettings.temperature", ".repos"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			desired, err := spec.Session(tc.in, ns)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Session(ctx, desired)
			if err != nil {
				t.Fatal(err)
			}
			var owned []string
			for _, mf := range got.GetManagedFields() {
				if mf.Manager != FieldManager || mf.Operation != metav1.ManagedFieldsOperationApply {
					continue
				}
				var fields map[string]any
				if err := json.Unmarshal(mf.FieldsV1.GetRawBytes(), &fields); err != nil {
					t.Fatal(err)
				}
				owned = leaves(fields["f:spec"], "")
			}
			slices.Sort(owned)
			if diff := cmp.Diff(tc.want, owned); diff != "" {
				t.Errorf("spec fields owned by %s (-want +got):\n%s", FieldManager, diff)
			}
		})
	}
}

// leaves lists the field paths of a managedFields FieldsV1 set; a list
// (repos, owned as a whole) is one leaf.
func leaves(set any, prefix string) []string {
	m, ok := set.(map[string]any)
	if !ok || len(m) == 0 {
		return []string{prefix}
	}
	var out []string
	for k, v := range m {
		name, isField := strings.CutPrefix(k, "f:")
		if !isField {
			continue // ".": the object itself; "k:"/"v:": list elements
		}
		out = append(out, leaves(v, prefix+"."+name)...)
	}
	if len(out) == 0 {
		return []string{prefix}
	}
	return out
}

// TestSessionApplyNeedsPruner: without a pruner nothing is applied blind.
func TestSessionApplyNeedsPruner(t *testing.T) {
	t.Parallel()
	cs, dyn := clients(t)
	desired, err := spec.Session(&ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "np"}, Name: "n"}, "default")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cs, dyn, nil).Session(t.Context(), desired); !errors.Is(err, ErrNoPruner) {
		t.Fatalf("err = %v, want ErrNoPruner", err)
	}
	if _, err := dyn.Resource(AgenticSessionGVR).Namespace("default").Get(t.Context(), desired.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("CR applied without a pruner: %v", err)
	}
}
