package deploytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"
)

// fieldManager is the server-side apply field manager of these tests.
const fieldManager = "deploytest"

// kube is a running kube-apiserver + etcd (envtest) with the chart's CRDs
// and minimal ServiceMonitor and PrometheusRule CRDs installed.
type kube struct {
	admin  *rest.Config
	mapper meta.RESTMapper
	dyn    *dynamic.DynamicClient
}

// errNoKubeBinaries means `make kube-binaries` has not been run.
var errNoKubeBinaries = errors.New("kube-apiserver/etcd not built: run `make kube-binaries` in the repository root (or set KUBEBUILDER_ASSETS)")

// startKube starts envtest with the binaries in KUBEBUILDER_ASSETS or
// <repo>/bin/k8s, on loopback only. Without binaries the test fails under CI
// (CI=true) and is skipped elsewhere, so a fresh checkout still runs go test.
func startKube(t *testing.T, crds []*unstructured.Unstructured) *kube {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(repoRoot(t), "bin", "k8s")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s in %s: %v", b, assets, errNoKubeBinaries)
			}
			t.Skipf("%s in %s: %v", b, assets, errNoKubeBinaries)
		}
	}
	var typed []*apiextensionsv1.CustomResourceDefinition
	for _, u := range append(crds, serviceMonitorCRD(t), prometheusRuleCRD(t)) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, crd); err != nil {
			t.Fatalf("CRD %s: %v", u.GetName(), err)
		}
		typed = append(typed, crd)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDs:                     typed,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	// Loopback only: no advertised external address, and no endpoint
	// reconciler writing the kubernetes Service for one (REAL-PARTS.md).
	env.ControlPlane.GetAPIServer().Configure().
		Set("advertise-address", "127.0.0.1").
		Set("endpoint-reconciler-type", "none")
	// envtest logs through controller-runtime's logger; unset, it prints a
	// stack trace to stderr after 30 s saying so, in the middle of test output.
	ctrllog.SetLogger(logr.Discard())
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatalf("discovery client: %v", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	return &kube{
		admin:  cfg,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		dyn:    dyn,
	}
}

// serviceMonitorCRD is a minimal monitoring.coreos.com/v1 ServiceMonitor
// CRD (the Prometheus Operator's is large); it checks kind and group only.
func serviceMonitorCRD(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	err := yaml.Unmarshal([]byte(`
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [selector, endpoints]
              x-kubernetes-preserve-unknown-fields: true
`), &u.Object)
	if err != nil {
		t.Fatalf("ServiceMonitor CRD: %v", err)
	}
	return u
}

// prometheusRuleCRD is a minimal monitoring.coreos.com/v1 PrometheusRule
// CRD: kind, group and that spec.groups holds named groups of rules.
func prometheusRuleCRD(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	err := yaml.Unmarshal([]byte(`
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                groups:
                  type: array
                  items:
                    type: object
                    required: [name, rules]
                    properties:
                      name: {type: string}
                      rules:
                        type: array
                        items:
                          type: object
                          required: [expr]
                          x-kubernetes-preserve-unknown-fields: true
`), &u.Object)
	if err != nil {
		t.Fatalf("PrometheusRule CRD: %v", err)
	}
	return u
}

// warnings collects API server warnings (Pod Security "warn" results among them).
type warnings struct {
	mu   sync.Mutex
	msgs []string // guarded by mu
}

// HandleWarningHeader implements rest.WarningHandler.
func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

// client returns a dynamic client for cfg whose warnings go to w (may be nil).
func (k *kube) client(t *testing.T, cfg *rest.Config, w *warnings) dynamic.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	if w != nil {
		c.WarningHandler = w
	}
	d, err := dynamic.NewForConfig(c)
	if err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	return d
}

// asServiceAccount returns a client configuration impersonating a ServiceAccount.
func (k *kube) asServiceAccount(namespace, name string) *rest.Config {
	c := rest.CopyConfig(k.admin)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: fmt.Sprintf("system:serviceaccount:%s:%s", namespace, name),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	return c
}

// apply server-side applies obj with the given client (dryRun adds
// dryRun=All) and strict field validation: unknown or duplicate fields fail.
func (k *kube) apply(ctx context.Context, c dynamic.Interface, obj *unstructured.Unstructured, dryRun bool) error {
	gvk := obj.GroupVersionKind()
	m, err := k.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		// A CRD installed moments ago may not be in the cached discovery yet.
		if rm, ok := k.mapper.(meta.ResettableRESTMapper); ok {
			rm.Reset()
		}
		if m, err = k.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return fmt.Errorf("map %s: %w", gvk, err)
		}
	}
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: &force, FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var ri dynamic.ResourceInterface = c.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = c.Resource(m.Resource).Namespace(obj.GetNamespace())
	}
	if _, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts); err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// object builds an unstructured object from YAML.
func object(t *testing.T, s string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(s), &u.Object); err != nil {
		t.Fatalf("test object: %v\n%s", err, s)
	}
	return u
}
