// Package kubetest starts a real kube-apiserver and etcd (envtest) with the
// AgenticSession CRD from the Helm chart, for tests. The binaries are built
// from Go modules by hack/build-kube-binaries.sh into <repo>/bin/k8s
// (KUBEBUILDER_ASSETS overrides the directory). The API server listens on
// loopback only and runs no controllers (see shared/design/REAL-PARTS.md).
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// ErrNoBinaries is returned by Start when kube-apiserver or etcd is missing.
var ErrNoBinaries = errors.New("kube-apiserver/etcd not built: run hack/build-kube-binaries.sh")

// Paths relative to the repository root.
const (
	binDir    = "bin/k8s"
	crdDir    = "helm/ambient-control-plane/crds"
	rulesFile = "helm/ambient-control-plane/files/kube-reconciler-clusterrole-rules.yaml"
)

// Env is a running control plane. Config is a cluster-admin (system:masters)
// client configuration.
type Env struct {
	Config *rest.Config
	env    *envtest.Environment
}

// RepoRoot finds the repository root by walking up from the working directory
// to the directory holding go.work or hack/kube-tools.
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

// Start runs kube-apiserver + etcd and installs the chart's CRDs. It returns
// ErrNoBinaries (wrapped) when the binaries are missing. Call Stop when done.
func Start() (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, binDir)
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return nil, fmt.Errorf("%s in %s: %w", b, assets, ErrNoBinaries)
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{filepath.Join(root, crdDir)},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: time.Minute,
	}
	// Loopback only: no advertised external address, no endpoint reconciler
	// writing the kubernetes Service for one.
	env.ControlPlane.GetAPIServer().Configure().
		Set("advertise-address", "127.0.0.1").
		Set("endpoint-reconciler-type", "none")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	return &Env{Config: cfg, env: env}, nil
}

// Stop stops the API server and etcd.
func (e *Env) Stop() error {
	if err := e.env.Stop(); err != nil {
		return fmt.Errorf("stop envtest: %w", err)
	}
	return nil
}

// Main is a TestMain body: it starts an Env into *env, runs the tests and
// stops it. Without binaries it fails under CI (CI=true) and otherwise skips
// the package's tests with a message, so a fresh checkout still runs `go test`.
func Main(m *testing.M, env **Env) int {
	e, err := Start()
	if errors.Is(err, ErrNoBinaries) && os.Getenv("CI") != "true" {
		fmt.Fprintln(os.Stderr, "kubetest: skipping:", err)
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubetest:", err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "kubetest:", err)
	}
	return code
}

// User returns a client configuration authenticated as a new user name in
// groups, with no permissions beyond what RBAC grants it.
func (e *Env) User(tb testing.TB, name string, groups ...string) *rest.Config {
	tb.Helper()
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		tb.Fatalf("add user %s: %v", name, err)
	}
	return u.Config()
}

// ReconcilerRules loads the kube-reconciler's ClusterRole rules from the chart.
func ReconcilerRules() ([]rbacv1.PolicyRule, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(root, rulesFile))
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	var rules []rbacv1.PolicyRule
	if err := yaml.UnmarshalStrict(b, &rules); err != nil {
		return nil, fmt.Errorf("parse %s: %w", rulesFile, err)
	}
	return rules, nil
}

// BindReconcilerRole creates the ClusterRole name with the chart's rules and
// binds it to user, as the chart does for the ServiceAccount.
func (e *Env) BindReconcilerRole(ctx context.Context, name, user string) error {
	rules, err := ReconcilerRules()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create clusterrole %s: %w", name, err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create clusterrolebinding %s: %w", name, err)
	}
	return nil
}
