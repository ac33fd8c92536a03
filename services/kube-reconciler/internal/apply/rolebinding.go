package apply

import (
	"context"
	"fmt"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
)

// RoleBindingResult counts what RoleBindings did.
type RoleBindingResult struct {
	Applied   int // bindings applied (no-ops included)
	Recreated int // bindings deleted and created again because their roleRef changed
	Pruned    int // managed bindings deleted because their entry is gone
	// NotOwned names the wanted bindings left alone because a binding of
	// that name exists that is not this project's managed one.
	NotOwned []string
}

// RoleBindings makes the project's managed RoleBindings of namespace exactly
// want: each is applied (subject Group, roleRef ClusterRole, labels), a
// binding whose roleRef differs is deleted and created again (roleRef is
// immutable), and every other binding carrying the managed-by label and the
// project id of labels that owner Owns is deleted. Bindings without those
// labels, another project's or another installation's included, are never
// touched: not pruned, and not taken over when one is named like a wanted
// binding (a user's own "ambient-devs-admin" would otherwise lose its
// subjects to the apply, or be deleted for its roleRef); such names are
// reported in NotOwned. The caller checks that namespace is the project's
// own (Namespace, CheckNamespace).
func (a *Applier) RoleBindings(ctx context.Context, namespace string, labels map[string]string, want []spec.RoleBinding, owner spec.Owner) (RoleBindingResult, error) {
	var res RoleBindingResult
	// One list of the namespace's bindings (a project namespace holds few)
	// tells both which wanted names are taken by someone else and which
	// managed bindings to prune.
	list, err := a.kube.RbacV1().RoleBindings(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return res, fmt.Errorf("list rolebindings %s: %w", namespace, err)
	}
	projectKey := labels[spec.LabelProjectID]
	ours := func(rb *rbacv1.RoleBinding) bool {
		return spec.OwnedBy(rb.Labels, projectKey) && owner.Owns(rb.Labels)
	}
	existing := make(map[string]*rbacv1.RoleBinding, len(list.Items))
	for i := range list.Items {
		existing[list.Items[i].Name] = &list.Items[i]
	}
	keep := make(map[string]bool, len(want))
	for _, b := range want {
		keep[b.Name] = true
		if cur, found := existing[b.Name]; found && !ours(cur) {
			res.NotOwned = append(res.NotOwned, b.Name)
			continue
		}
		recreated, err := a.roleBinding(ctx, namespace, labels, b)
		if err != nil {
			return res, err
		}
		res.Applied++
		if recreated {
			res.Recreated++
		}
	}
	for i := range list.Items {
		rb := &list.Items[i]
		if keep[rb.Name] || !ours(rb) {
			continue
		}
		if err := a.deleteRoleBinding(ctx, rb); err != nil {
			return res, err
		}
		res.Pruned++
	}
	return res, nil
}

func (a *Applier) roleBinding(ctx context.Context, namespace string, labels map[string]string, b spec.RoleBinding) (recreated bool, err error) {
	cfg := rbacv1ac.RoleBinding(b.Name, namespace).
		WithLabels(labels).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("ClusterRole").WithName(b.Role)).
		WithSubjects(rbacv1ac.Subject().WithKind(rbacv1.GroupKind).WithAPIGroup(rbacv1.GroupName).WithName(b.Group))
	client := a.kube.RbacV1().RoleBindings(namespace)
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	_, err = client.Apply(ctx, cfg, opts)
	if err == nil {
		return false, nil
	}
	if !apierrors.IsInvalid(err) {
		return false, fmt.Errorf("apply rolebinding %s/%s: %w", namespace, b.Name, err)
	}
	// roleRef is immutable: an existing binding of the same name with another
	// roleRef makes apply Invalid. Delete it and create it again.
	cur, getErr := client.Get(ctx, b.Name, metav1.GetOptions{})
	if getErr != nil || (cur.RoleRef.Kind == "ClusterRole" && cur.RoleRef.Name == b.Role) {
		return false, fmt.Errorf("apply rolebinding %s/%s: %w", namespace, b.Name, err)
	}
	if err := a.deleteRoleBinding(ctx, cur); err != nil {
		return false, err
	}
	if _, err := client.Apply(ctx, cfg, opts); err != nil {
		return true, fmt.Errorf("recreate rolebinding %s/%s: %w", namespace, b.Name, err)
	}
	return true, nil
}

// deleteRoleBinding deletes rb if it is still the same object (UID
// precondition); already gone is fine.
func (a *Applier) deleteRoleBinding(ctx context.Context, rb *rbacv1.RoleBinding) error {
	uid := rb.UID
	err := a.kube.RbacV1().RoleBindings(rb.Namespace).Delete(ctx, rb.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete rolebinding %s/%s: %w", rb.Namespace, rb.Name, err)
	}
	return nil
}
