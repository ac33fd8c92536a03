// Package kubetest starts a real kube-apiserver and etcd (envtest) for the
// agui-proxy's authorization tests, with RBAC on, and gives test users the
// chart's RBAC: the agui-proxy's ClusterRole and the project ClusterRoles
// that group_access entries bind. The binaries are built from Go modules
// into <repo>/bin/k8s (`make kube-binaries`; KUBEBUILDER_ASSETS overrides
// the directory). The API server listens on loopback only and runs no
// controllers (see shared/design/REAL-PARTS.md).
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"
)

// discardEnvtestLogs sets controller-runtime's logger, which is process-wide,
// once: parallel tests that each start an envtest raced setting it.
var discardEnvtestLogs sync.Once

// Paths relative to the repository root.
const (
	binDir     = "bin/k8s"
	valuesFile = "helm/ambient-control-plane/values.yaml"
	rulesFile  = "helm/ambient-control-plane/files/agui-proxy-clusterrole-rules.yaml"
)

// Env is a running API server. Admin is a cluster-admin client.
type Env struct {
	Config *rest.Config
	Admin  kubernetes.Interface
	env    *envtest.Environment
}

// RepoRoot finds the repository root above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getwd: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "kube-tools", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root not found above the working directory")
		}
		dir = parent
	}
}

// Start runs kube-apiserver + etcd until the test ends. Without the
// binaries it skips the test with the command that builds them, unless CI
// is set, where it fails.
func Start(t testing.TB) *Env {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, binDir)
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing in %s: run make kube-binaries", b, assets)
			}
			t.Skipf("%s missing in %s: run make kube-binaries", b, assets)
		}
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets, ControlPlaneStartTimeout: time.Minute}
	// Loopback only: no advertised external address, no endpoint reconciler.
	env.ControlPlane.GetAPIServer().Configure().
		Set("advertise-address", "127.0.0.1").
		Set("endpoint-reconciler-type", "none")
	// envtest logs through controller-runtime's logger; unset, it prints a
	// stack trace to stderr after 30 s saying so, in the middle of test output.
	discardEnvtestLogs.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Config: cfg, Admin: cs, env: env}
}

// User returns a client configuration for a user name in groups, with no
// permissions beyond what RBAC grants it.
func (e *Env) User(t testing.TB, name string, groups ...string) *rest.Config {
	t.Helper()
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatalf("add user %s: %v", name, err)
	}
	return u.Config()
}

// ProxyUser returns the client configuration of a user bound, as the
// chart binds the agui-proxy's ServiceAccount, to a ClusterRole with
// exactly the rules of files/agui-proxy-clusterrole-rules.yaml.
func (e *Env) ProxyUser(ctx context.Context, t testing.TB, name string) *rest.Config {
	t.Helper()
	var rules []rbacv1.PolicyRule
	if err := yaml.UnmarshalStrict(read(t, rulesFile), &rules); err != nil {
		t.Fatalf("parse %s: %v", rulesFile, err)
	}
	e.createClusterRole(ctx, t, "agui-proxy", rules)
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "agui-proxy"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "agui-proxy"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}},
	}
	if _, err := e.Admin.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create clusterrolebinding: %v", err)
	}
	return e.User(t, name)
}

// ProjectRoles creates the chart's project ClusterRoles (values.yaml
// projectRoles.roles) and returns their names.
func (e *Env) ProjectRoles(ctx context.Context, t testing.TB) []string {
	t.Helper()
	var values struct {
		ProjectRoles struct {
			Roles []struct {
				Name  string              `json:"name"`
				Rules []rbacv1.PolicyRule `json:"rules"`
			} `json:"roles"`
		} `json:"projectRoles"`
	}
	if err := yaml.Unmarshal(read(t, valuesFile), &values); err != nil {
		t.Fatalf("parse %s: %v", valuesFile, err)
	}
	var names []string
	for _, r := range values.ProjectRoles.Roles {
		e.createClusterRole(ctx, t, r.Name, r.Rules)
		names = append(names, r.Name)
	}
	if len(names) == 0 {
		t.Fatalf("%s has no projectRoles.roles", valuesFile)
	}
	return names
}

func (e *Env) createClusterRole(ctx context.Context, t testing.TB, name string, rules []rbacv1.PolicyRule) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	if _, err := e.Admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create clusterrole %s: %v", name, err)
	}
}

func read(t testing.TB, rel string) []byte {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
