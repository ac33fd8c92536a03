// Package kubetest starts a real kube-apiserver and etcd (envtest) with the
// AgenticSession CRD from the Helm chart (the operator's schema), for tests.
// The binaries are built from Go modules by `make kube-binaries`
// (hack/build-kube-binaries.sh) into <repo>/bin/k8s (KUBEBUILDER_ASSETS
// overrides the directory). The API server listens on loopback only and runs
// no controllers (see shared/design/REAL-PARTS.md).
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/crd"
	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"
)

// discardEnvtestLogs sets controller-runtime's logger, which is process-wide,
// once: parallel tests that each start an envtest raced setting it.
var discardEnvtestLogs sync.Once

// ErrNoBinaries is returned by Start when kube-apiserver or etcd is missing.
var ErrNoBinaries = errors.New("kube-apiserver/etcd not built: run `make kube-binaries` in the repository root")

// Paths relative to the repository root.
const (
	binDir = "bin/k8s"
	// CRDFile is the AgenticSession CRD: the chart's single source.
	CRDFile   = "helm/ambient-control-plane/files/crds/agenticsessions.vteam.ambient-code.yaml"
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

// LoadCRD reads the AgenticSession CRD from the chart (CRDFile).
func LoadCRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(root, CRDFile))
	if err != nil {
		return nil, fmt.Errorf("read crd: %w", err)
	}
	c := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return nil, fmt.Errorf("parse %s: %w", CRDFile, err)
	}
	return c, nil
}

type options struct {
	crds    []*apiextensionsv1.CustomResourceDefinition
	withCRD bool
}

// Option changes what Start installs.
type Option func(*options)

// WithCRDs installs exactly crds instead of the chart's AgenticSession CRD
// (none at all when called without arguments): tests of an older, newer or
// missing operator CRD.
func WithCRDs(crds ...*apiextensionsv1.CustomResourceDefinition) Option {
	return func(o *options) { o.crds, o.withCRD = crds, false }
}

// Start runs kube-apiserver + etcd and installs the chart's AgenticSession CRD
// (or what WithCRDs says). It returns ErrNoBinaries (wrapped) when the
// binaries are missing. Call Stop when done.
func Start(opts ...Option) (*Env, error) {
	o := options{withCRD: true}
	for _, opt := range opts {
		opt(&o)
	}
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
		CRDs:                     o.crds,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: time.Minute,
	}
	if o.withCRD {
		env.CRDDirectoryPaths = []string{filepath.Join(root, CRDFile)}
	}
	// Loopback only: no advertised external address, no endpoint reconciler
	// writing the kubernetes Service for one.
	env.ControlPlane.GetAPIServer().Configure().
		Set("advertise-address", "127.0.0.1").
		Set("endpoint-reconciler-type", "none")
	// envtest logs through controller-runtime's logger; unset, it prints a
	// stack trace to stderr after 30 s saying so, in the middle of test output.
	discardEnvtestLogs.Do(func() { ctrllog.SetLogger(logr.Discard()) })
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

// StartT starts an Env of its own for one test (stopped in cleanup), for tests
// that change or remove the AgenticSession CRD and so cannot share the
// package's Env. Without binaries it skips (fails under CI), as Shared.Env.
func StartT(tb testing.TB, opts ...Option) *Env {
	tb.Helper()
	e, err := Start(opts...)
	if errors.Is(err, ErrNoBinaries) {
		skipOrFail(tb, err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := e.Stop(); err != nil {
			tb.Error(err)
		}
	})
	return e
}

// Shared is the one Env of a test package, started by Main in TestMain:
//
//	var kube kubetest.Shared
//	func TestMain(m *testing.M) { os.Exit(kube.Main(m)) }
//	... env := kube.Env(t)
type Shared struct {
	env     *Env
	missing error // why env is nil: the binaries are not built
}

// Main is a TestMain body: it starts the Env, runs the tests and stops it.
// Without binaries the tests still run, and each that calls Env is skipped
// with the command that builds them (a failure under CI=true), so `go test`
// never reports ok for tests that did not run.
func (s *Shared) Main(m *testing.M) int {
	e, err := Start()
	switch {
	case errors.Is(err, ErrNoBinaries):
		s.missing = err
		return m.Run()
	case err != nil:
		fmt.Fprintln(os.Stderr, "kubetest:", err)
		return 1
	}
	s.env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "kubetest:", err)
	}
	return code
}

// Env returns the package's running Env, or skips tb (fails it under
// CI=true) when the binaries are missing.
func (s *Shared) Env(tb testing.TB) *Env {
	tb.Helper()
	if s.env == nil {
		if s.missing == nil {
			tb.Fatal("kubetest: Shared.Env called without Shared.Main in TestMain")
		}
		skipOrFail(tb, s.missing)
	}
	return s.env
}

func skipOrFail(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("kubetest: %v", err)
	}
	tb.Skipf("kubetest: %v", err)
}

// Watcher returns a running crd.Watcher of e as cluster-admin, stopped in
// cleanup, once it has read the CRD (installed or not).
func (e *Env) Watcher(tb testing.TB, log *slog.Logger) *crd.Watcher {
	tb.Helper()
	return RunWatcher(tb, e.Config, log)
}

// RunWatcher returns a running crd.Watcher reading the API server through
// cfg, stopped in cleanup, once it has read the CRD (installed or not).
func RunWatcher(tb testing.TB, cfg *rest.Config, log *slog.Logger) *crd.Watcher {
	tb.Helper()
	client, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	w, err := crd.NewWatcher(client, log)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(tb.Context())
	done := make(chan error, 1) // one send
	// Owned by the test: cleanup cancels it and waits.
	go func() { done <- w.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	if !cache.WaitForCacheSync(tb.Context().Done(), w.HasSynced) {
		tb.Fatal("crd watcher did not sync")
	}
	return w
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
