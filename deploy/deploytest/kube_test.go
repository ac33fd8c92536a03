package deploytest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// TestChartOnKubeAPIServer applies the rendered chart to a real
// kube-apiserver: every object of every value set with server-side apply and
// dryRun=All (schema, defaulting, validation and admission, Pod Security
// "restricted" included), then the RBAC objects for real to check what each
// ServiceAccount may do.
func TestChartOnKubeAPIServer(t *testing.T) {
	c := loadChart(t)
	k := startKube(t, crdObjects(t, c))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// The release namespace enforces the restricted Pod Security Standard and
	// warns on workloads (Deployments) that would create violating pods.
	ns := object(t, fmt.Sprintf(`
apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
`, releaseNamespace))
	if err := k.apply(ctx, k.dyn, ns, false); err != nil {
		t.Fatal(err)
	}

	t.Run("apply", func(t *testing.T) {
		for _, vs := range valueSets(t) {
			t.Run(vs.name, func(t *testing.T) {
				r := mustRender(t, vs.vals)
				w := &warnings{}
				cl := k.client(t, k.admin, w)
				for _, o := range r.objects {
					if err := k.apply(ctx, cl, o, true); err != nil {
						t.Error(err)
					}
					for _, msg := range w.take() {
						t.Errorf("%s %s: API server warning: %s", o.GetKind(), o.GetName(), msg)
					}
				}
			})
		}
	})

	t.Run("nats pods", func(t *testing.T) {
		testNATSPodsAdmitted(ctx, t, k)
	})

	t.Run("kubeAPIServer cidrs", func(t *testing.T) {
		testKubeAPIServerCIDRs(ctx, t, k)
	})

	t.Run("rbac", func(t *testing.T) {
		testRBAC(ctx, t, k, mustRender(t, map[string]any{}))
	})

	// Acceptance item 3 (issue 12): a default install, applied for real,
	// runs no runner-manager and tells the kube-reconciler to turn every
	// session into an AgenticSession (which testRBAC shows it may create).
	t.Run("default isolates tenants", func(t *testing.T) {
		for _, o := range mustRender(t, map[string]any{}).objects {
			if o.GetKind() != "Deployment" && o.GetKind() != "ConfigMap" {
				continue
			}
			if err := k.apply(ctx, k.dyn, o, false); err != nil {
				t.Fatal(err)
			}
		}
		deps, err := k.dyn.Resource(gvrDeployments).Namespace(releaseNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + releaseName})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range deps.Items {
			names = append(names, d.GetLabels()["app.kubernetes.io/component"])
		}
		if len(names) == 0 || slices.Contains(names, "runner-manager") {
			t.Errorf("default install runs %v, want services and no runner-manager", names)
		}
		cm, err := k.dyn.Resource(gvrConfigMaps).Namespace(releaseNamespace).Get(ctx, name("kube-reconciler-env"), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sel := cm.Object["data"].(map[string]any)["KUBE_SESSION_SELECTOR"]; sel != "all" {
			t.Errorf("kube-reconciler KUBE_SESSION_SELECTOR = %v, want all", sel)
		}
	})
}

var (
	gvrNamespaces   = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	gvrSecrets      = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	gvrPods         = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	gvrConfigMaps   = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	gvrDeployments  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	gvrRoleBindings = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}
	gvrSessions     = schema.GroupVersionResource{Group: "vteam.ambient-code", Version: "v1alpha1", Resource: "agenticsessions"}
	gvrCRDs         = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// sessionCRD is the AgenticSession CRD's name.
const sessionCRD = "agenticsessions.vteam.ambient-code"

// testRBAC applies the rendered RBAC objects for real and exercises them as
// each ServiceAccount would.
func testRBAC(ctx context.Context, t *testing.T, k *kube, r rendered) {
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding"} {
		for _, o := range r.ofKind(kind) {
			if err := k.apply(ctx, k.dyn, o, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A role outside the allow-list that grants something, so the bind check
	// (not the "already holds every permission" shortcut) decides.
	if err := k.apply(ctx, k.dyn, object(t, `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: deploytest-secret-reader}
rules:
  - {apiGroups: [""], resources: [secrets], verbs: [get, list]}
`), false); err != nil {
		t.Fatal(err)
	}

	reconciler := k.client(t, k.asServiceAccount(releaseNamespace, name("kube-reconciler")), nil)
	project := "deploytest-project"

	// RBAC changes take effect after a moment (authorizer caches): poll the
	// first allowed call instead of asserting at once.
	nsObj := object(t, fmt.Sprintf(`
apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels: {ambient-code.io/managed: "true", ambient-code.io/managed-by: ambient-control-plane, ambient-code.io/project-id: %s}
`, project, project))
	eventually(t, 10*time.Second, func() error { return k.apply(ctx, reconciler, nsObj, false) })

	binding := func(name, role string) string {
		return fmt.Sprintf(`
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: %s, namespace: %s, labels: {ambient-code.io/managed: "true"}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %s}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: team-a}]
`, name, project, role)
	}
	session := fmt.Sprintf(`
apiVersion: vteam.ambient-code/v1alpha1
kind: AgenticSession
metadata: {name: s-1, namespace: %s}
spec: {displayName: deploytest, initialPrompt: hello}
`, project)

	allowed := []struct {
		name string
		do   func() error
	}{
		{"re-apply namespace labels", func() error { return k.apply(ctx, reconciler, nsObj, false) }},
		{"get a namespace", func() error {
			_, err := reconciler.Resource(gvrNamespaces).Get(ctx, project, metav1.GetOptions{})
			return err
		}},
		{"create a namespace", func() error {
			created := object(t, `{apiVersion: v1, kind: Namespace, metadata: {name: deploytest-created}}`)
			_, err := reconciler.Resource(gvrNamespaces).Create(ctx, created, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"bind allow-listed admin", func() error {
			return k.apply(ctx, reconciler, object(t, binding("ambient-team-a-ambient-project-admin", "ambient-project-admin")), false)
		}},
		{"bind allow-listed edit", func() error {
			return k.apply(ctx, reconciler, object(t, binding("ambient-team-a-ambient-project-edit", "ambient-project-edit")), false)
		}},
		{"bind allow-listed view", func() error {
			return k.apply(ctx, reconciler, object(t, binding("ambient-team-a-ambient-project-view", "ambient-project-view")), false)
		}},
		{"list rolebindings", func() error { return list(ctx, reconciler, gvrRoleBindings, project) }},
		{"list rolebindings cluster-wide", func() error { return list(ctx, reconciler, gvrRoleBindings, "") }},
		{"get a rolebinding", func() error {
			_, err := reconciler.Resource(gvrRoleBindings).Namespace(project).Get(ctx, "ambient-team-a-ambient-project-view", metav1.GetOptions{})
			return err
		}},
		{"delete rolebinding", func() error {
			return reconciler.Resource(gvrRoleBindings).Namespace(project).Delete(ctx, "ambient-team-a-ambient-project-view", metav1.DeleteOptions{})
		}},
		{"apply agenticsession", func() error { return k.apply(ctx, reconciler, object(t, session), false) }},
		{"list and watch agenticsessions", func() error {
			if err := list(ctx, reconciler, gvrSessions, ""); err != nil {
				return err
			}
			w, err := reconciler.Resource(gvrSessions).Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"merge-patch agenticsession annotations", func() error {
			_, err := reconciler.Resource(gvrSessions).Namespace(project).Patch(ctx, "s-1", types.MergePatchType,
				[]byte(`{"metadata":{"annotations":{"deploytest":"x"}}}`), metav1.PatchOptions{})
			return err
		}},
		{"delete agenticsession", func() error {
			return reconciler.Resource(gvrSessions).Namespace(project).Delete(ctx, "s-1", metav1.DeleteOptions{})
		}},
		{"list and watch the agenticsession crd by name", func() error {
			sel := metav1.ListOptions{FieldSelector: "metadata.name=" + sessionCRD}
			if _, err := reconciler.Resource(gvrCRDs).List(ctx, sel); err != nil {
				return err
			}
			w, err := reconciler.Resource(gvrCRDs).Watch(ctx, sel)
			if err == nil {
				w.Stop()
			}
			return err
		}},
	}
	for _, tc := range allowed {
		t.Run("kube-reconciler may "+tc.name, func(t *testing.T) {
			if err := tc.do(); err != nil {
				t.Errorf("want allowed, got %v", err)
			}
		})
	}

	forbidden := []struct {
		name string
		do   func() error
	}{
		{"bind cluster-admin", func() error {
			return k.apply(ctx, reconciler, object(t, binding("ambient-team-a-cluster-admin", "cluster-admin")), false)
		}},
		{"bind a role off the allow-list", func() error {
			return k.apply(ctx, reconciler, object(t, binding("ambient-team-a-secret-reader", "deploytest-secret-reader")), false)
		}},
		{"delete a namespace", func() error {
			return reconciler.Resource(gvrNamespaces).Delete(ctx, project, metav1.DeleteOptions{})
		}},
		// Granted once, used by no code path (least privilege).
		{"list namespaces", func() error { return list(ctx, reconciler, gvrNamespaces, "") }},
		{"watch namespaces", func() error { return watchOnce(ctx, reconciler, gvrNamespaces, "") }},
		{"watch rolebindings", func() error { return watchOnce(ctx, reconciler, gvrRoleBindings, project) }},
		{"get an agenticsession", func() error {
			if err := k.apply(ctx, k.dyn, object(t, session), false); err != nil {
				return fmt.Errorf("setup as admin: %w", err)
			}
			_, err := reconciler.Resource(gvrSessions).Namespace(project).Get(ctx, "s-1", metav1.GetOptions{})
			return err
		}},
		{"get agenticsession status", func() error {
			_, err := reconciler.Resource(gvrSessions).Namespace(project).Get(ctx, "s-1", metav1.GetOptions{}, "status")
			return err
		}},
		{"get the agenticsession crd", func() error {
			_, err := reconciler.Resource(gvrCRDs).Get(ctx, sessionCRD, metav1.GetOptions{})
			return err
		}},
		{"read secrets", func() error { return list(ctx, reconciler, gvrSecrets, project) }},
		{"create pods", func() error {
			return k.apply(ctx, reconciler, object(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: %s}
spec: {containers: [{name: c, image: busybox:1.37.0}]}
`, project)), false)
		}},
		{"write agenticsession status", func() error {
			if err := k.apply(ctx, k.dyn, object(t, session), false); err != nil {
				return fmt.Errorf("setup as admin: %w", err)
			}
			status := object(t, fmt.Sprintf(`
apiVersion: vteam.ambient-code/v1alpha1
kind: AgenticSession
metadata: {name: s-1, namespace: %s}
status: {phase: Running}
`, project))
			_, err := reconciler.Resource(gvrSessions).Namespace(project).ApplyStatus(ctx, "s-1", status,
				metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
			return err
		}},
		{"list every crd", func() error { return list(ctx, reconciler, gvrCRDs, "") }},
		{"get another crd", func() error {
			_, err := reconciler.Resource(gvrCRDs).Get(ctx, "servicemonitors.monitoring.coreos.com", metav1.GetOptions{})
			return err
		}},
		{"change the agenticsession crd", func() error {
			return reconciler.Resource(gvrCRDs).Delete(ctx, sessionCRD, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
		{"create a clusterrolebinding", func() error {
			return k.apply(ctx, reconciler, object(t, `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: deploytest-escalate}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ambient-project-view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: team-a}]
`), false)
		}},
		{"edit its own clusterrole", func() error {
			return reconciler.Resource(schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}).
				Delete(ctx, name("kube-reconciler"), metav1.DeleteOptions{})
		}},
	}
	for _, tc := range forbidden {
		t.Run("kube-reconciler may not "+tc.name, func(t *testing.T) {
			err := tc.do()
			if !apierrors.IsForbidden(err) {
				t.Errorf("want Forbidden, got %v", err)
			}
		})
	}

	// Every other service's ServiceAccount has exactly the rules of a
	// ServiceAccount bound to nothing (the discovery/self-review defaults).
	baseline := rulesOf(ctx, t, k, releaseNamespace, "deploytest-nobody")
	for _, comp := range components {
		if comp == "kube-reconciler" {
			continue
		}
		t.Run(comp+" may do nothing", func(t *testing.T) {
			sa := name(comp)
			for _, ns := range []string{releaseNamespace, project} {
				if got := rulesOf(ctx, t, k, ns, sa); !slices.Equal(got, baseline) {
					t.Errorf("rules in %s = %v, want the unbound baseline %v", ns, got, baseline)
				}
			}
			cl := k.client(t, k.asServiceAccount(releaseNamespace, sa), nil)
			for _, call := range []struct {
				gvr schema.GroupVersionResource
				ns  string
			}{{gvrNamespaces, ""}, {gvrSecrets, releaseNamespace}, {gvrConfigMaps, releaseNamespace}, {gvrPods, releaseNamespace}, {gvrSessions, project}, {gvrRoleBindings, project}} {
				if err := list(ctx, cl, call.gvr, call.ns); !apierrors.IsForbidden(err) {
					t.Errorf("list %s in %q: want Forbidden, got %v", call.gvr.Resource, call.ns, err)
				}
			}
		})
	}
}

func list(ctx context.Context, c dynamic.Interface, gvr schema.GroupVersionResource, ns string) error {
	var err error
	if ns == "" {
		_, err = c.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
	} else {
		_, err = c.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{Limit: 1})
	}
	return err
}

// watchOnce opens a watch of gvr (in ns; "" for every namespace) and stops it.
func watchOnce(ctx context.Context, c dynamic.Interface, gvr schema.GroupVersionResource, ns string) error {
	var ri dynamic.ResourceInterface = c.Resource(gvr)
	if ns != "" {
		ri = c.Resource(gvr).Namespace(ns)
	}
	w, err := ri.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("watch %s: %w", gvr.Resource, err)
	}
	w.Stop()
	return nil
}

// rulesOf returns the resource rules a ServiceAccount has in a namespace
// (SelfSubjectRulesReview while impersonating it), as sorted strings.
func rulesOf(ctx context.Context, t *testing.T, k *kube, ns, sa string) []string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(k.asServiceAccount(releaseNamespace, sa))
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	rev, err := cs.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("rules review of %s in %s: %v", sa, ns, err)
	}
	var out []string
	for _, r := range rev.Status.ResourceRules {
		out = append(out, fmt.Sprintf("%v %v %v %v", r.APIGroups, r.Resources, r.ResourceNames, r.Verbs))
	}
	slices.Sort(out)
	return out
}

// eventually polls fn until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %v", timeout, err)
		}
		<-tick.C
	}
}
