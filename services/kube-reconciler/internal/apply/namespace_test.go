package apply

import (
	"errors"
	"sync"
	"testing"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// withInstance returns the managed labels of project id labelled for
// installation instance.
func withInstance(id, instance string) map[string]string {
	l := spec.ManagedLabels(id)
	l[spec.LabelInstance] = instance
	return l
}

// TestNamespaceAdoptsOnlyOwn: a missing namespace is created with the
// project's labels and the installation's; one that exists without them
// (someone else's, another project's, or the same project's of another
// installation) is refused with a *NotOwnedError and nothing written to
// it. One of the project without an installation label (written before
// namespaces carried it) is adopted and labelled.
func TestNamespaceAdoptsOnlyOwn(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, nil)
	tests := []struct {
		name     string
		existing map[string]string // labels of a namespace created first; nil: none exists
		owner    string            // NotOwnedError.Owner; "" when created
		refused  bool
	}{
		{name: "absent is created"},
		{name: "someone else's", existing: map[string]string{"team": "x"}, refused: true},
		{name: "another project's", existing: spec.ManagedLabels("other"), owner: "other", refused: true},
		{name: "project label without managed-by", existing: map[string]string{spec.LabelProjectID: "p"}, owner: "p", refused: true},
		// Project ids equal names on the real server: another installation,
		// reading another API, can have a project "p" too.
		{name: "the project's of another installation", existing: withInstance("p", "other-inst"), owner: "p", refused: true},
		{name: "ours", existing: withInstance("p", "inst")},
		// Written before namespaces carried the installation label.
		{name: "ours, no installation label", existing: spec.ManagedLabels("p")},
		// Releases before kubelabel.ProjectKey labelled the exact id.
		{name: "ours, exact-case label", existing: map[string]string{spec.LabelManagedBy: spec.ManagedByValue, spec.LabelProjectID: "P"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := uniqueNS("own")
			var before *corev1.Namespace
			if tc.existing != nil {
				var err error
				before, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tc.existing}}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
			}
			err := a.Namespace(ctx, spec.Namespace{Name: name, Labels: withInstance("p", "inst")})
			got, gerr := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if gerr != nil {
				t.Fatal(gerr)
			}
			if !tc.refused {
				if err != nil || got.Labels[spec.LabelProjectID] != "p" || got.Labels[spec.LabelInstance] != "inst" {
					t.Fatalf("Namespace = %v, labels %v; want the project's and the installation's", err, got.Labels)
				}
				if exists, err := a.CheckNamespace(ctx, name, "p", "inst"); !exists || err != nil {
					t.Errorf("CheckNamespace = %v, %v; want true, nil", exists, err)
				}
				return
			}
			var no *NotOwnedError
			if !errors.As(err, &no) || no.Namespace != name || no.ProjectID != "p" || no.Owner != tc.owner {
				t.Fatalf("Namespace = %v (%+v), want *NotOwnedError owner %q", err, no, tc.owner)
			}
			if got.ResourceVersion != before.ResourceVersion {
				t.Errorf("refused namespace written: resourceVersion %s -> %s, labels %v", before.ResourceVersion, got.ResourceVersion, got.Labels)
			}
			if exists, err := a.CheckNamespace(ctx, name, "p", "inst"); !exists || !errors.As(err, &no) {
				t.Errorf("CheckNamespace = %v, %v; want exists and *NotOwnedError", exists, err)
			}
		})
	}
}

// TestNamespaceRaceOneWinner: two projects claim one namespace name at once;
// exactly one owns it, the other is refused. (Project ids give distinct
// names, kubelabel.ProjectKey, but Namespace must not rely on its callers for
// that.)
func TestNamespaceRaceOneWinner(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, nil)
	for range 5 {
		name := uniqueNS("race")
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, id := range []string{"red", "blue"} {
			wg.Go(func() { errs[i] = a.Namespace(ctx, spec.Namespace{Name: name, Labels: spec.ManagedLabels(id)}) })
		}
		wg.Wait()
		var no *NotOwnedError
		refused := 0
		for _, err := range errs {
			switch {
			case err == nil:
			case errors.As(err, &no):
				refused++
			default:
				t.Fatal(err)
			}
		}
		got, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if refused != 1 || (!spec.OwnedBy(got.Labels, "red") && !spec.OwnedBy(got.Labels, "blue")) {
			t.Fatalf("errors %v, labels %v: want one owner and one refusal", errs, got.Labels)
		}
	}
}

// TestCheckNamespaceNeverCreates: the prune-only check reports a missing
// namespace without creating it.
func TestCheckNamespaceNeverCreates(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, nil)
	name := uniqueNS("check")
	if exists, err := a.CheckNamespace(ctx, name, "p", "inst"); exists || err != nil {
		t.Fatalf("CheckNamespace = %v, %v; want false, nil", exists, err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace created by a check: %v", err)
	}
	if err := a.Namespace(ctx, spec.Namespace{Name: name, Labels: withInstance("p", "inst")}); err != nil {
		t.Fatal(err)
	}
	if exists, err := a.CheckNamespace(ctx, name, "p", "inst"); !exists || err != nil {
		t.Fatalf("CheckNamespace of our own = %v, %v; want true, nil", exists, err)
	}
}

// TestPruneOnlyTheProjectsBindings: a prune deletes only bindings labelled
// with the project's id; another project's managed binding and an unmanaged
// one in the same namespace stay.
func TestPruneOnlyTheProjectsBindings(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cs, dyn := clients(t)
	a := New(cs, dyn, nil)
	ns := uniqueNS("prune")
	if err := a.Namespace(ctx, spec.Namespace{Name: ns, Labels: spec.ManagedLabels("p")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RoleBindings(ctx, ns, spec.ManagedLabels("p"), []spec.RoleBinding{{Name: "ambient-a-ambient-project-view", Group: "a", Role: "ambient-project-view"}}, spec.Owner{AdoptUnlabeled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RoleBindings(ctx, ns, spec.ManagedLabels("q"), []spec.RoleBinding{{Name: "ambient-b-ambient-project-view", Group: "b", Role: "ambient-project-view"}}, spec.Owner{AdoptUnlabeled: true}); err != nil {
		t.Fatal(err)
	}
	if err := createUnmanaged(ctx, cs, ns, "foreign"); err != nil {
		t.Fatal(err)
	}
	res, err := a.RoleBindings(ctx, ns, spec.ManagedLabels("p"), nil, spec.Owner{AdoptUnlabeled: true})
	if err != nil || res.Pruned != 1 {
		t.Fatalf("prune = %+v, %v; want 1 pruned", res, err)
	}
	list, err := cs.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, rb := range list.Items {
		left = append(left, rb.Name)
	}
	if diff := cmp.Diff([]string{"ambient-b-ambient-project-view", "foreign"}, left); diff != "" {
		t.Errorf("bindings left (-want +got):\n%s", diff)
	}
}
