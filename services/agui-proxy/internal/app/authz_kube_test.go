package app_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/ambient-code/control-plane/libs/testenv"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/app"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth/authtest"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/authz"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/config"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/kubetest"
)

// groupBinding is the RoleBinding kube-reconciler makes of a group_access
// entry {group, role}: ambient-<group>-<role>, ClusterRole role, Group group.
func groupBinding(ns, group, role string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ambient-" + group + "-" + role, Namespace: ns,
			Labels: map[string]string{"ambient-code.io/managed-by": "ambient-control-plane", "ambient-code.io/project-id": "proj-a"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: group}},
	}
}

// TestAuthzKube is acceptance 1 in kube mode, on a real kube-apiserver with
// the chart's RBAC: the proxy runs as a user holding only the chart's
// agui-proxy rules; the project's namespace is found by its labels (its
// name is not the project's); RoleBindings from group_access to the chart's
// project ClusterRoles decide. A group without a binding gets 403 on every
// route, so does a token claiming system:masters; the view role reads but
// may not run; the edit role streams; removing its binding denies after
// the cache TTL, and adding one allows.
func TestAuthzKube(t *testing.T) {
	t.Parallel()
	k := kubetest.Start(t)
	ctx := t.Context()
	roles := k.ProjectRoles(ctx, t)
	t.Logf("project roles: %v", roles)
	proxyKube := k.ProxyUser(ctx, t, "system:serviceaccount:acp:agui-proxy")
	for ns, project := range map[string]string{"team-alpha": "proj-a", "team-beta": "proj-b"} {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
			"ambient-code.io/managed": "true", "ambient-code.io/managed-by": "ambient-control-plane", "ambient-code.io/project-id": project}}}
		if _, err := k.Admin.CoreV1().Namespaces().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rbs := k.Admin.RbacV1().RoleBindings("team-alpha")
	for _, b := range []*rbacv1.RoleBinding{
		groupBinding("team-alpha", "editors", "ambient-project-edit"),
		groupBinding("team-alpha", "viewers", "ambient-project-view"),
	} {
		if _, err := rbs.Create(ctx, b, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A binding in another project's namespace grants nothing here.
	if _, err := k.Admin.RbacV1().RoleBindings("team-beta").Create(ctx, groupBinding("team-beta", "outsiders", "ambient-project-admin"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	const id = "SessK8sAuthz0001"
	e, p, iss := startKubeAuthzProxy(t, id, "proj-a", proxyKube)
	url := p.session(id, "")
	bearer := func(user string, groups ...string) []string {
		return []string{"Authorization", "Bearer " + iss.Sign(t, iss.UserClaims(user, groups...))}
	}

	requireForbiddenEverywhere(t, url, bearer("eve", "outsiders")...)
	requireForbiddenEverywhere(t, url, bearer("mallory", "system:masters")...)
	requireForbiddenEverywhere(t, url, bearer("system:admin")...)
	for _, rt := range sessionRoutes() {
		code, _, _ := call(t, url, rt, bearer("val", "viewers")...)
		if read := rt.method == http.MethodGet; read != (code != http.StatusForbidden) {
			t.Fatalf("viewer %s: %d (reads allowed, runs and interrupts 403)", rt.name, code)
		}
	}
	alice := bearer("alice", "editors")
	requireStreams(t, url, alice...)
	for _, rt := range sessionRoutes() {
		if code, _, _ := call(t, url, rt, alice...); code == http.StatusForbidden || code >= 500 {
			t.Fatalf("editor %s: %d", rt.name, code)
		}
	}
	if got, ok := metricValue(t, "http://"+p.app.MetricsAddr()+"/metrics", "agui_proxy_authz_decisions_total", `mode="kube"`, `result="allowed"`); !ok || got < 1 {
		t.Fatalf("allowed decisions metric %v %v", got, ok)
	}

	// Revoke: the editors' binding goes, and after the TTL so does access,
	// for new requests and for a subscription alice holds open.
	sub := get(t, url+"/agui/events", alice...)
	defer sub.Body.Close()
	if sub.StatusCode != http.StatusOK {
		t.Fatalf("editor's events subscription: %d", sub.StatusCode)
	}
	subEnd := streamEnd(sub.Body)
	revoked := time.Now()
	if err := rbs.Delete(ctx, "ambient-editors-ambient-project-edit", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	run := sessionRoutes()[2]
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, _, _ := call(t, url, run, alice...); code != http.StatusForbidden {
			return fmt.Errorf("editor after revocation: %d", code)
		}
		return nil
	})
	t.Logf("revocation took effect after %v (cache TTL %v)", time.Since(revoked).Round(time.Millisecond), kubeAuthzCacheTTL)
	// It relayed the runs above; the proxy's RUN_ERROR follows unless the
	// last one had finished (endRun), so only a clean end is required.
	select {
	case got := <-subEnd:
		if got.err != nil {
			t.Fatalf("subscription ended with %v, want a clean end", got.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the editor's events subscription still open after the revocation")
	}
	t.Logf("open subscription ended %v after the revocation", time.Since(revoked).Round(time.Millisecond))
	// Grant: the outsiders get edit here, and after the TTL they stream.
	if _, err := rbs.Create(ctx, groupBinding("team-alpha", "outsiders", "ambient-project-edit"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, _, _ := call(t, url, sessionRoutes()[4], bearer("eve", "outsiders")...); code != http.StatusOK {
			return fmt.Errorf("outsider after grant: %d", code)
		}
		return nil
	})
	requireStreams(t, url, bearer("eve", "outsiders")...)

	// A session whose project has no namespace: denied, not an error.
	const orphan = "SessK8sOrphan01"
	r2 := startRunner(t, orphan)
	ep2 := r2.endpoint(t, orphan)
	ep2.ProjectID = "proj-without-namespace"
	e.register(t, ep2)
	testenv.Eventually(t, 5*time.Second, func() error {
		if code, _, reason := call(t, p.session(orphan, ""), sessionRoutes()[4], alice...); code != http.StatusForbidden || reason == "" {
			return fmt.Errorf("no namespace: %d %q", code, reason)
		}
		return nil
	})
}

// TestAuthzKubeProjectIDCase: the real server accepts a session whose
// project_id names no project ("Proj-C") and kube-reconciler puts its CR in
// the namespace labelled with the lower-cased id (project-id=proj-c, as for
// every project). The proxy finds that namespace for the session, so the
// project's bindings there decide, as they do for the CR.
func TestAuthzKubeProjectIDCase(t *testing.T) {
	t.Parallel()
	k := kubetest.Start(t)
	ctx := t.Context()
	k.ProjectRoles(ctx, t)
	proxyKube := k.ProxyUser(ctx, t, "system:serviceaccount:acp:agui-proxy")
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "proj-c", Labels: map[string]string{
		"ambient-code.io/managed": "true", "ambient-code.io/managed-by": "ambient-control-plane", "ambient-code.io/project-id": "proj-c"}}}
	if _, err := k.Admin.CoreV1().Namespaces().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Admin.RbacV1().RoleBindings("proj-c").Create(ctx, groupBinding("proj-c", "editors", "ambient-project-edit"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	const id = "SessK8sCase0001"
	_, p, iss := startKubeAuthzProxy(t, id, "Proj-C", proxyKube)
	alice := []string{"Authorization", "Bearer " + iss.Sign(t, iss.UserClaims("alice", "editors"))}
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, _, reason := call(t, p.session(id, ""), sessionRoutes()[4], alice...); code != http.StatusOK {
			return fmt.Errorf("editor of project_id Proj-C: %d %q", code, reason)
		}
		return nil
	})
	requireStreams(t, p.session(id, ""), alice...)
}

// TestAuthzKubeInstance: two installations of the control plane, blue and
// green, share a cluster, and both have a project team-a (project ids are
// project names, and each reads its own API). Blue reconciled team-a first
// and owns namespace team-a (labelled ambient-code.io/instance=blue);
// kube-reconciler refuses green's, so green's team-a has no namespace.
// Green's proxy must not ask in blue's namespace, where blue's RoleBindings
// would let blue's groups reach green's sessions: it follows
// kube-reconciler's ownership rule, so a namespace labelled for green, or
// for no installation (written before namespaces carried the label), is
// green's, and one labelled for blue never is, even beside green's own.
// Blue's proxy, on the same namespace, still lets blue's group in.
func TestAuthzKubeInstance(t *testing.T) {
	t.Parallel()
	k := kubetest.Start(t)
	ctx := t.Context()
	k.ProjectRoles(ctx, t)
	proxyKube := k.ProxyUser(ctx, t, "system:serviceaccount:acp:agui-proxy")
	// Each namespace's group "<namespace>-editors" may edit its sessions.
	for _, n := range []struct{ name, project, instance string }{
		{"team-a", "team-a", "blue"},
		{"team-b", "team-b", "green"},
		{"legacy", "legacy", ""},
		{"team-c", "team-c", "blue"},
		{"green-team-c", "team-c", "green"},
	} {
		l := map[string]string{"ambient-code.io/managed": "true", "ambient-code.io/managed-by": "ambient-control-plane", "ambient-code.io/project-id": n.project}
		if n.instance != "" {
			l["ambient-code.io/instance"] = n.instance
		}
		if _, err := k.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: l}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Admin.RbacV1().RoleBindings(n.name).Create(ctx, groupBinding(n.name, n.name+"-editors", "ambient-project-edit"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Blue first: once its proxy lets team-a-editors in, RBAC has caught up
	// with the bindings, so a denial below is the proxy's, not RBAC's lag.
	const blueA = "SessBlueTeamA01"
	_, blue, blueIss := startKubeAuthzProxyOf(t, blueA, "team-a", "blue", proxyKube)
	health := sessionRoutes()[4]
	bearer := func(iss *authtest.Issuer, user string, groups ...string) []string {
		return []string{"Authorization", "Bearer " + iss.Sign(t, iss.UserClaims(user, groups...))}
	}
	allowed := func(p *proxyHandle, id string, hdr ...string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() error {
			if code, _, reason := call(t, p.session(id, ""), health, hdr...); code != http.StatusOK {
				return fmt.Errorf("session %s: %d %q, want 200", id, code, reason)
			}
			return nil
		})
	}
	allowed(blue, blueA, bearer(blueIss, "bob", "team-a-editors")...)

	const greenA = "SessGreenTeamA1"
	e, green, greenIss := startKubeAuthzProxyOf(t, greenA, "team-a", "green", proxyKube)
	for id, project := range map[string]string{"SessGreenTeamB1": "team-b", "SessGreenLegacy": "legacy", "SessGreenTeamC1": "team-c"} {
		ep := startRunner(t, id).endpoint(t, id)
		ep.ProjectID = project
		e.register(t, ep)
	}
	// Green's own namespaces: labelled green, or for no installation.
	allowed(green, "SessGreenTeamB1", bearer(greenIss, "gail", "team-b-editors")...)
	allowed(green, "SessGreenLegacy", bearer(greenIss, "gail", "legacy-editors")...)
	// The audit's finding: blue's group on green's team-a session.
	requireForbiddenEverywhere(t, green.session(greenA, ""), bearer(greenIss, "bob", "team-a-editors")...)
	_, _, reason := call(t, green.session(greenA, ""), health, bearer(greenIss, "bob", "team-a-editors")...)
	if want := `project "team-a" has no namespace of this installation (ambient-code.io/instance=green)`; reason != want {
		t.Fatalf("green's team-a session: reason %q, want %q", reason, want)
	}
	// Blue's namespace beside green's own: green's decides, not "more
	// than one namespace".
	allowed(green, "SessGreenTeamC1", bearer(greenIss, "gail", "green-team-c-editors")...)
	requireForbiddenEverywhere(t, green.session("SessGreenTeamC1", ""), bearer(greenIss, "bob", "team-c-editors")...)
}

// TestInstanceRefusedAtStart: the real binary in kube mode exits 1 naming
// CONTROL_PLANE_INSTANCE when it is not a label value, as kube-reconciler
// does, instead of denying every project's sessions.
func TestInstanceRefusedAtStart(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(proxyBin)
	cmd.Env = []string{"AGUI_AUTH=jwt", "AGUI_JWKS_URL=https://id.example.com/jwks.json", "AGUI_JWT_ISSUER=https://id.example.com",
		"AGUI_JWT_AUDIENCE=ambient", "AGUI_AUTHZ=kube", "CONTROL_PLANE_INSTANCE=blue/green", "METRICS_ADDR=127.0.0.1:0", "LOCAL_PROXY_ADDR=127.0.0.1:0"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var ee *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want exit status 1 (stderr %s)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), `CONTROL_PLANE_INSTANCE: want a non-empty label value`) {
		t.Fatalf("stderr does not name CONTROL_PLANE_INSTANCE: %s", stderr.String())
	}
}

// kubeAuthzCacheTTL is how long the kube-mode proxies of these tests keep
// a decision: short, so that a denial while RBAC catches up with a new
// binding, or a grant just revoked, is not kept long.
const kubeAuthzCacheTTL = time.Second

// startKubeAuthzProxy starts a runner for session id of project projectID,
// registers it in a new env, and starts a proxy with JWT authentication
// (the returned issuer signs its tokens) and kube authorization as
// proxyKube.
func startKubeAuthzProxy(t *testing.T, id, projectID string, proxyKube *rest.Config) (*env, *proxyHandle, *authtest.Issuer) {
	t.Helper()
	return startKubeAuthzProxyOf(t, id, projectID, config.Defaults().Instance, proxyKube)
}

// startKubeAuthzProxyOf is startKubeAuthzProxy for the proxy of
// installation instance (CONTROL_PLANE_INSTANCE).
func startKubeAuthzProxyOf(t *testing.T, id, projectID, instance string, proxyKube *rest.Config) (*env, *proxyHandle, *authtest.Issuer) {
	t.Helper()
	e := newEnv(t)
	r := startRunner(t, id)
	ep := r.endpoint(t, id)
	ep.ProjectID = projectID
	e.register(t, ep)
	iss := authtest.NewIssuer(t, "agui")
	jwks, err := parseURL(iss.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.proxyCfg()
	cfg.Auth, cfg.JWKSURL, cfg.JWTIssuer, cfg.JWTAudience = auth.ModeJWT, jwks, iss.Name, "agui"
	cfg.Authz = authz.ModeKube
	cfg.AuthzCacheTTL = kubeAuthzCacheTTL
	cfg.Instance = instance
	return e, startProxyWith(t, cfg, app.WithKubeConfig(proxyKube)), iss
}
