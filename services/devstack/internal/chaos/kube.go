package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
)

// Chart files the control plane is set up from, relative to the repository
// root: the same the chart installs and kube-reconciler's envtest tests load.
const (
	crdDir        = "helm/ambient-control-plane/files/crds"
	rulesFile     = "helm/ambient-control-plane/files/kube-reconciler-clusterrole-rules.yaml"
	valuesFile    = "helm/ambient-control-plane/values.yaml"
	reconcilerCRB = "ambient-kube-reconciler"
	// reconcilerUser is the kube-reconciler's identity: a client certificate
	// bound to exactly the chart's ClusterRole, as its ServiceAccount is.
	reconcilerUser = "ambient-kube-reconciler"
)

// Labels and annotations kube-reconciler puts on what it manages
// (services/kube-reconciler/internal/spec/labels.go).
const (
	annotationSessionID = "ambient-code.io/session-id"
	// labelGen is the harness' own session label: each update bumps it, and
	// the AgenticSession must carry the last value (user labels are copied).
	labelGen = "chaos-gen"
)

// kubePlane is a real kube-apiserver on a real etcd, run as two processes
// so that the API server can be stopped for an outage and started again on
// the same data, certificates and port.
type kubePlane struct {
	dir        string
	bin        string
	etcdURL    string
	port       int
	pki        *pki
	admin      *rest.Config
	cs         kubernetes.Interface
	dyn        dynamic.Interface
	crGVR      schema.GroupVersionResource
	kubeconfig string // the kube-reconciler's
}

func newKubePlane(dir, bin string, etcdPort, apiPort int) (*kubePlane, error) {
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%s in %s (run `make kube-binaries`): %w", b, bin, err)
		}
	}
	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, err
	}
	k := &kubePlane{dir: dir, bin: bin, etcdURL: "http://127.0.0.1:" + strconv.Itoa(etcdPort), port: apiPort, pki: p}
	k.admin, err = k.clientConfig("chaos-admin", "system:masters")
	if err != nil {
		return nil, err
	}
	if k.cs, err = kubernetes.NewForConfig(k.admin); err != nil {
		return nil, fmt.Errorf("kube client: %w", err)
	}
	if k.dyn, err = dynamic.NewForConfig(k.admin); err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	k.kubeconfig = filepath.Join(dir, "kube-reconciler.kubeconfig")
	if err := k.writeKubeconfig(k.kubeconfig, reconcilerUser); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *kubePlane) url() string { return "https://127.0.0.1:" + strconv.Itoa(k.port) }

func (k *kubePlane) clientConfig(user string, groups ...string) (*rest.Config, error) {
	cert, key, err := k.pki.clientPEM(user, groups...)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            k.url(),
		TLSClientConfig: rest.TLSClientConfig{CAData: k.pki.caPEM(), CertData: cert, KeyData: key},
		Timeout:         10 * time.Second,
		QPS:             100,
		Burst:           200,
	}, nil
}

func (k *kubePlane) writeKubeconfig(path, user string) error {
	cert, key, err := k.pki.clientPEM(user)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["chaos"] = &clientcmdapi.Cluster{Server: k.url(), CertificateAuthorityData: k.pki.caPEM()}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["chaos"] = &clientcmdapi.Context{Cluster: "chaos", AuthInfo: user}
	cfg.CurrentContext = "chaos"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// etcdArgs and apiserverArgs follow envtest's defaults
// (controller-runtime pkg/internal/testing/controlplane) plus the loopback
// flags of shared/design/REAL-PARTS.md.
func (k *kubePlane) etcdArgs(peerPort int) []string {
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	return []string{
		"--name=chaos",
		"--data-dir=" + filepath.Join(k.dir, "etcd"),
		"--listen-client-urls=" + k.etcdURL,
		"--advertise-client-urls=" + k.etcdURL,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=chaos=" + peer,
		"--unsafe-no-fsync=true",
	}
}

func (k *kubePlane) apiserverArgs() []string {
	return []string{
		"--etcd-servers=" + k.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(k.port),
		"--cert-dir=" + k.pki.dir,
		"--tls-cert-file=" + k.pki.path(servingCert),
		"--tls-private-key-file=" + k.pki.path(servingKey),
		"--client-ca-file=" + k.pki.path(caCertFile),
		"--service-account-issuer=" + k.url(),
		"--service-account-key-file=" + k.pki.path(saKeyFile),
		"--service-account-signing-key-file=" + k.pki.path(saKeyFile),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		"--disable-admission-plugins=ServiceAccount",
		"--authorization-mode=RBAC",
	}
}

func (k *kubePlane) etcdProbe() proc.Probe {
	return proc.HTTPProbe(&http.Client{Timeout: 2 * time.Second}, k.etcdURL+"/health", "")
}

func (k *kubePlane) apiserverProbe() proc.Probe {
	return func(ctx context.Context) error {
		if err := k.cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
			return fmt.Errorf("kube-apiserver /readyz: %w", err)
		}
		return nil
	}
}

// bootstrap installs what the chart installs: the CRD, the project
// ClusterRoles, and the kube-reconciler's ClusterRole bound to its user.
func (k *kubePlane) bootstrap(ctx context.Context, repoRoot string) error {
	if err := k.installCRDs(ctx, filepath.Join(repoRoot, crdDir)); err != nil {
		return err
	}
	var values struct {
		ProjectRoles struct {
			Roles []struct {
				Name  string              `json:"name"`
				Rules []rbacv1.PolicyRule `json:"rules"`
			} `json:"roles"`
		} `json:"projectRoles"`
	}
	if err := readYAML(filepath.Join(repoRoot, valuesFile), &values); err != nil {
		return err
	}
	roles := k.cs.RbacV1().ClusterRoles()
	for _, r := range values.ProjectRoles.Roles {
		if _, err := roles.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: r.Name}, Rules: r.Rules}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create clusterrole %s: %w", r.Name, err)
		}
	}
	var rules []rbacv1.PolicyRule
	if err := readYAML(filepath.Join(repoRoot, rulesFile), &rules); err != nil {
		return err
	}
	if _, err := roles.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: reconcilerCRB}, Rules: rules}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create clusterrole %s: %w", reconcilerCRB, err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: reconcilerCRB},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reconcilerCRB},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: reconcilerUser}},
	}
	if _, err := k.cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create clusterrolebinding %s: %w", reconcilerCRB, err)
	}
	return nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRDs creates every CRD in dir, waits until each is established and
// remembers the AgenticSession resource (group, storage version, plural).
func (k *kubePlane) installCRDs(ctx context.Context, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no CRD in %s: %w", dir, errors.Join(err, os.ErrNotExist))
	}
	for _, f := range files {
		var obj map[string]any
		if err := readYAML(f, &obj); err != nil {
			return err
		}
		crd := &unstructured.Unstructured{Object: obj}
		if _, err := k.dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", crd.GetName(), err)
		}
		kind, _, _ := unstructured.NestedString(obj, "spec", "names", "kind")     //nolint:errcheck // a missing field is ""
		group, _, _ := unstructured.NestedString(obj, "spec", "group")            //nolint:errcheck // a missing field is ""
		plural, _, _ := unstructured.NestedString(obj, "spec", "names", "plural") //nolint:errcheck // a missing field is ""
		versions, _, _ := unstructured.NestedSlice(obj, "spec", "versions")       //nolint:errcheck // a missing field is nil
		for _, v := range versions {
			vm, _ := v.(map[string]any) //nolint:errcheck // a non-object is skipped
			if storage, _ := vm["storage"].(bool); storage && kind == "AgenticSession" {
				name, _ := vm["name"].(string) //nolint:errcheck // a missing name is ""
				k.crGVR = schema.GroupVersionResource{Group: group, Version: name, Resource: plural}
			}
		}
		if err := proc.WaitReady(ctx, k.established(crd.GetName()), time.Now().Add(30*time.Second)); err != nil {
			return fmt.Errorf("CRD %s: %w", crd.GetName(), err)
		}
	}
	if k.crGVR.Resource == "" {
		return fmt.Errorf("no AgenticSession CRD with a storage version in %s", dir)
	}
	return nil
}

func (k *kubePlane) established(name string) proc.Probe {
	return func(ctx context.Context) error {
		u, err := k.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get CRD: %w", err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions") //nolint:errcheck // missing: not yet
		for _, c := range conds {
			cm, _ := c.(map[string]any) //nolint:errcheck // a non-object is skipped
			if cm["type"] == "Established" && cm["status"] == "True" {
				return nil
			}
		}
		return errors.New("not established yet")
	}
}

// kubeState is what Kubernetes holds at one moment.
type kubeState struct {
	// CRs maps a session id to its AgenticSessions (more than one is a
	// finding too).
	CRs map[string][]crInfo
	// Bindings maps a namespace to its RoleBindings.
	Bindings map[string][]Grant
	// Namespaces present.
	Namespaces map[string]bool
}

type crInfo struct {
	Namespace, Name, Gen string
	UID                  string
	// SDKSessionID is status.sdkSessionId: the harness' operator writes it
	// (see operator), kube-reconciler must carry it to the session.
	SDKSessionID string
}

// listKube reads every AgenticSession, and the RoleBindings and existence of
// namespaces.
func (k *kubePlane) listKube(ctx context.Context, namespaces []string) (kubeState, error) {
	st := kubeState{CRs: map[string][]crInfo{}, Bindings: map[string][]Grant{}, Namespaces: map[string]bool{}}
	crs, err := k.agenticSessions(ctx)
	if err != nil {
		return st, err
	}
	for _, cr := range crs {
		id := cr.GetAnnotations()[annotationSessionID]
		if id == "" {
			id = "name:" + cr.GetName()
		}
		sdkID, _, _ := unstructured.NestedString(cr.Object, "status", "sdkSessionId") //nolint:errcheck // absent or not a string: none
		st.CRs[id] = append(st.CRs[id], crInfo{Namespace: cr.GetNamespace(), Name: cr.GetName(), Gen: cr.GetLabels()[labelGen],
			UID: string(cr.GetUID()), SDKSessionID: sdkID})
	}
	for _, ns := range namespaces {
		if _, err := k.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
			st.Namespaces[ns] = true
		} else if !apierrors.IsNotFound(err) {
			return st, fmt.Errorf("get namespace %s: %w", ns, err)
		}
		rbs, err := k.cs.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return st, fmt.Errorf("list rolebindings in %s: %w", ns, err)
		}
		for _, rb := range rbs.Items {
			for _, s := range rb.Subjects {
				st.Bindings[ns] = append(st.Bindings[ns], Grant{Group: s.Name, Role: rb.RoleRef.Name})
			}
		}
	}
	return st, nil
}

// agenticSessions lists every AgenticSession of the cluster, sorted by
// namespace and name (the API server's order).
func (k *kubePlane) agenticSessions(ctx context.Context) ([]unstructured.Unstructured, error) {
	crs, err := k.dyn.Resource(k.crGVR).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list agenticsessions: %w", err)
	}
	return crs.Items, nil
}

// crRef names one AgenticSession and its session.
type crRef struct {
	Namespace, Name, Session string
}

// sessionCRs lists the AgenticSessions that name a session, sorted by
// namespace and name (the API server's order).
func (k *kubePlane) sessionCRs(ctx context.Context) ([]crRef, error) {
	crs, err := k.agenticSessions(ctx)
	if err != nil {
		return nil, err
	}
	var out []crRef
	for _, cr := range crs {
		if id := cr.GetAnnotations()[annotationSessionID]; id != "" {
			out = append(out, crRef{Namespace: cr.GetNamespace(), Name: cr.GetName(), Session: id})
		}
	}
	return out, nil
}

// setSDKSessionID writes status.sdkSessionId of one AgenticSession, as the
// operator does: a merge patch of the status subresource, which leaves the
// spec, and the rest of the status, alone.
func (k *kubePlane) setSDKSessionID(ctx context.Context, cr crRef, value string) error {
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"sdkSessionId": value}})
	if err != nil {
		return fmt.Errorf("encode status patch: %w", err)
	}
	if _, err := k.dyn.Resource(k.crGVR).Namespace(cr.Namespace).Patch(ctx, cr.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("patch status of agenticsession %s/%s: %w", cr.Namespace, cr.Name, err)
	}
	return nil
}

func readYAML(path string, into any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}
