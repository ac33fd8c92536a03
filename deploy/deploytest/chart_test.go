package deploytest

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/ambient-code/control-plane/libs/events"
)

// components are the services the chart deploys, by component label.
var components = []string{"informer", "kube-reconciler", "runner-manager", "agui-proxy", "event-tally"}

// missingDependencyWarning is the one lint warning accepted: the nats chart
// is declared in Chart.yaml but not vendored (tests and CI cannot download
// it; `helm dependency build` fetches it before a real install).
const missingDependencyWarning = "chart directory is missing these dependencies: nats"

// TestChartLint runs `helm lint --strict` (through the SDK) with every value
// set: any warning or error fails, except the documented missing nats chart.
func TestChartLint(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets(t) {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			linter := lint.AllWithKubeVersion(chartDir(t), vs.vals, releaseNamespace, nil)
			for _, m := range linter.Messages {
				if m.Severity < support.WarningSev {
					continue
				}
				if m.Severity == support.WarningSev && strings.Contains(m.Err.Error(), missingDependencyWarning) {
					continue
				}
				t.Errorf("lint: %s", m)
			}
		})
	}
}

// TestChartRender renders every value set and checks the invariants every
// workload must keep (restricted security, probes, pinned images, no
// duplicate env, references that resolve).
func TestChartRender(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets(t) {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, vs.vals)
			checkNames(t, r)
			checkWorkloads(t, r)
			checkSelectors(t, r)
			if r.notes == "" {
				t.Error("NOTES.txt rendered empty")
			}
		})
	}
}

func checkNames(t *testing.T, r rendered) {
	t.Helper()
	seen := map[string]bool{}
	for _, o := range r.objects {
		key := o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
		if seen[key] {
			t.Errorf("duplicate object %s", key)
		}
		seen[key] = true
		if len(o.GetName()) > 63 {
			t.Errorf("%s: name longer than 63 characters", key)
		}
		if o.GetLabels()["app.kubernetes.io/managed-by"] == "" {
			t.Errorf("%s: no managed-by label (labels not from acp.labels)", key)
		}
	}
}

func toTyped[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &v, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return &v
}

// checkWorkloads checks every pod template (Deployments and the test Pod).
func checkWorkloads(t *testing.T, r rendered) {
	t.Helper()
	configMaps := map[string]bool{}
	for _, o := range r.ofKind("ConfigMap") {
		configMaps[o.GetName()] = true
	}
	sas := map[string]bool{}
	for _, o := range r.ofKind("ServiceAccount") {
		sas[o.GetName()] = true
	}
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		name := d.Name
		spec := d.Spec.Template.Spec
		checkPodSecurity(t, name, spec)
		if !sas[spec.ServiceAccountName] {
			t.Errorf("%s: serviceAccountName %q is not rendered", name, spec.ServiceAccountName)
		}
		component := d.Spec.Template.Labels["app.kubernetes.io/component"]
		// The agui-proxy asks Kubernetes only in authz mode kube.
		wantToken := component == "kube-reconciler" || (component == "agui-proxy" && envOf(t, r, d)["AGUI_AUTHZ"] == "kube")
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken != wantToken {
			t.Errorf("%s: automountServiceAccountToken = %v, want %v", name, spec.AutomountServiceAccountToken, wantToken)
		}
		if d.Spec.Template.Annotations["checksum/config"] == "" {
			t.Errorf("%s: no checksum/config annotation", name)
		}
		for _, ctr := range spec.Containers {
			if strings.HasSuffix(ctr.Image, ":latest") || !strings.Contains(ctr.Image, ":") {
				t.Errorf("%s: image %q is not pinned", name, ctr.Image)
			}
			for _, p := range []struct {
				probe *corev1.Probe
				path  string
			}{{ctr.LivenessProbe, "/healthz"}, {ctr.ReadinessProbe, "/readyz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.StrVal != "http-metrics" {
					t.Errorf("%s: want an HTTP probe on http-metrics %s, got %+v", name, p.path, p.probe)
				}
			}
			names := map[string]bool{}
			for _, e := range ctr.Env {
				if names[e.Name] {
					t.Errorf("%s: env %s set twice (server-side apply rejects it)", name, e.Name)
				}
				names[e.Name] = true
			}
			for _, ef := range ctr.EnvFrom {
				if ef.ConfigMapRef != nil && !configMaps[ef.ConfigMapRef.Name] {
					t.Errorf("%s: envFrom ConfigMap %q is not rendered", name, ef.ConfigMapRef.Name)
				}
			}
		}
	}
	for _, u := range r.ofKind("Pod") {
		p := toTyped[corev1.Pod](t, u)
		checkPodSecurity(t, p.Name, p.Spec)
		if p.Annotations["helm.sh/hook"] != "test" {
			t.Errorf("pod %s is not a test hook", p.Name)
		}
	}
}

// checkPodSecurity checks the "restricted" Pod Security Standard plus a
// read-only root file system.
func checkPodSecurity(t *testing.T, name string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext is not restricted: %+v", name, psc)
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s/%s: no securityContext", name, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s/%s: allowPrivilegeEscalation not false", name, c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s/%s: root file system not read-only", name, c.Name)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s/%s: capabilities not drop ALL", name, c.Name)
		}
		if c.Resources.Requests == nil {
			t.Errorf("%s/%s: no resource requests", name, c.Name)
		}
	}
}

// checkSelectors checks that Services, PDBs and HPAs select or target what
// was rendered, and that no selector carries a version.
func checkSelectors(t *testing.T, r rendered) {
	t.Helper()
	var pods []map[string]string
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		for k := range d.Spec.Selector.MatchLabels {
			if strings.Contains(k, "version") || k == "helm.sh/chart" {
				t.Errorf("%s: selector label %s changes on upgrade", d.Name, k)
			}
		}
		if !matches(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("%s: selector does not match its pod template", d.Name)
		}
		pods = append(pods, d.Spec.Template.Labels)
	}
	// Deployments of one component must not select each other's pods.
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		n := 0
		for _, p := range pods {
			if matches(d.Spec.Selector.MatchLabels, p) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: selector matches %d pod templates, want 1", d.Name, n)
		}
	}
	selectsSome := func(kind, name string, sel map[string]string) {
		for _, p := range pods {
			if matches(sel, p) {
				return
			}
		}
		t.Errorf("%s %s: selector %v matches no pod template", kind, name, sel)
	}
	for _, u := range r.ofKind("Service") {
		s := toTyped[corev1.Service](t, u)
		selectsSome("Service", s.Name, s.Spec.Selector)
	}
	for _, u := range r.ofKind("PodDisruptionBudget") {
		sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
		selectsSome("PodDisruptionBudget", u.GetName(), sel)
	}
	for _, u := range r.ofKind("HorizontalPodAutoscaler") {
		target, _, _ := unstructured.NestedString(u.Object, "spec", "scaleTargetRef", "name")
		d := r.find("Deployment", target)
		if d == nil {
			t.Errorf("HPA %s targets missing Deployment %s", u.GetName(), target)
			continue
		}
		if _, found, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "replicas"); found {
			t.Errorf("Deployment %s sets replicas although HPA %s scales it", target, u.GetName())
		}
	}
}

func matches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// name is the rendered name of a component's objects.
func name(component string) string { return releaseName + "-ambient-control-plane-" + component }

// clusterName is the name of a component's cluster-scoped objects (its
// ClusterRole and ClusterRoleBinding): the release's namespace, ".", and
// name (TestChartTwoReleasesInOneCluster).
func clusterName(component string) string { return releaseNamespace + "." + name(component) }

// envOf returns a container's effective environment: the envFrom ConfigMap
// data overlaid with env (value, or a placeholder naming the source).
func envOf(t *testing.T, r rendered, d *appsv1.Deployment) map[string]string {
	t.Helper()
	env := map[string]string{}
	ctr := d.Spec.Template.Spec.Containers[0]
	for _, ef := range ctr.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		cm := r.find("ConfigMap", ef.ConfigMapRef.Name)
		if cm == nil {
			t.Fatalf("%s: ConfigMap %s missing", d.Name, ef.ConfigMapRef.Name)
		}
		data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
		for k, v := range data {
			env[k] = v
		}
	}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		default:
			env[e.Name] = "valueFrom"
		}
	}
	return env
}

func deployment(t *testing.T, r rendered, n string) *appsv1.Deployment {
	t.Helper()
	u := r.find("Deployment", n)
	if u == nil {
		t.Fatalf("Deployment %s not rendered", n)
	}
	return toTyped[appsv1.Deployment](t, u)
}

// TestChartDefaults checks what a default install contains: isolated
// tenants (issue 12): every session becomes an AgenticSession, no
// runner-manager runs, NetworkPolicies are on, and NATS authenticates a user
// per service.
func TestChartDefaults(t *testing.T) {
	t.Parallel()
	r := mustRender(t, map[string]any{})
	var deployments []string
	for _, u := range r.ofKind("Deployment") {
		deployments = append(deployments, u.GetName())
	}
	var deployed []string // components of a default install
	want := make([]string, 0, len(components))
	for _, c := range components {
		if c == "runner-manager" {
			continue // local runners are an explicit opt-in
		}
		deployed = append(deployed, c)
		want = append(want, name(c))
	}
	slices.Sort(deployments)
	slices.Sort(want)
	if !slices.Equal(deployments, want) {
		t.Errorf("deployments = %v, want %v (no runner-manager)", deployments, want)
	}
	if got := envOf(t, r, deployment(t, r, name("kube-reconciler")))["KUBE_SESSION_SELECTOR"]; got != "all" {
		t.Errorf("kube-reconciler KUBE_SESSION_SELECTOR = %q, want all: every session an AgenticSession", got)
	}
	for _, c := range deployed {
		env := envOf(t, r, deployment(t, r, name(c)))
		if got, want := env["NATS_URL"], "nats://acp-nats.ambient-system.svc:4222"; got != want {
			t.Errorf("%s: NATS_URL = %q, want %q (the bundled nats chart's Service)", c, got, want)
		}
		if got := env["METRICS_ADDR"]; got != ":9090" {
			t.Errorf("%s: METRICS_ADDR = %q", c, got)
		}
		if c == "runner-manager" {
			// agui-proxy dials runners on the pod IP: the demo runner must
			// listen on every interface, and runner-manager must pass that on.
			if env["DEMO_HOST"] != "0.0.0.0" || !slices.Contains(strings.Split(env["RUNNER_ENV_ALLOW"], ","), "DEMO_HOST") {
				t.Errorf("runner-manager: DEMO_HOST = %q, RUNNER_ENV_ALLOW = %q; want 0.0.0.0 passed to runners", env["DEMO_HOST"], env["RUNNER_ENV_ALLOW"])
			}
			// The runner registry and claims must survive a NATS server
			// loss like the events stream does.
			if env["BUCKET_REPLICAS"] != "3" {
				t.Errorf("runner-manager: BUCKET_REPLICAS = %q, want 3 like the events stream", env["BUCKET_REPLICAS"])
			}
		}
		if _, ok := env["AMBIENT_API_TOKEN"]; ok {
			t.Errorf("%s: AMBIENT_API_TOKEN in the environment, want only its file", c)
		}
		switch c {
		case "informer", "kube-reconciler", "runner-manager":
			if got, _ := secretFileOf(t, deployment(t, r, name(c)), env["AMBIENT_API_TOKEN_FILE"]); got != "ambient-api-token/token" {
				t.Errorf("%s: AMBIENT_API_TOKEN_FILE %q holds %q, want the existing Secret's key ambient-api-token/token", c, env["AMBIENT_API_TOKEN_FILE"], got)
			}
		default:
			if _, ok := env["AMBIENT_API_TOKEN_FILE"]; ok {
				t.Errorf("%s gets the API token but never calls the API", c)
			}
		}
	}
	if env := envOf(t, r, deployment(t, r, name("informer"))); env["NATS_USER"] != "informer" {
		t.Errorf("informer NATS_USER = %q: the bundled NATS has a user per service by default", env["NATS_USER"])
	}
	for _, kind := range []string{"ServiceMonitor", "HorizontalPodAutoscaler", "PrometheusRule"} {
		if n := len(r.ofKind(kind)); n != 0 {
			t.Errorf("%d %s rendered by default, want 0", n, kind)
		}
	}
	if n := len(r.ofKind("NetworkPolicy")); n != len(deployed)+1 {
		t.Errorf("%d NetworkPolicies by default, want one per service and one for NATS (%d)", n, len(deployed)+1)
	}
	if n := len(r.ofKind("PodDisruptionBudget")); n != len(deployed) {
		t.Errorf("%d PodDisruptionBudgets, want %d", n, len(deployed))
	}
}

// TestChartRBAC checks the rendered RBAC objects: only the kube-reconciler
// is bound, its bind rule is limited to the allow-list, and the allow-list
// is the same value the service enforces (ROLE_ALLOW_LIST).
func TestChartRBAC(t *testing.T) {
	t.Parallel()
	r := mustRender(t, map[string]any{})
	var bound []string
	for _, u := range r.ofKind("ClusterRoleBinding") {
		b := toTyped[rbacv1.ClusterRoleBinding](t, u)
		for _, s := range b.Subjects {
			bound = append(bound, s.Name)
		}
	}
	if len(r.ofKind("RoleBinding")) != 0 || len(r.ofKind("Role")) != 0 {
		t.Error("the chart renders namespaced RBAC; only the kube-reconciler's ClusterRole is expected")
	}
	if !slices.Equal(bound, []string{name("kube-reconciler")}) {
		t.Errorf("bound service accounts = %v, want only the kube-reconciler", bound)
	}
	cr := toTyped[rbacv1.ClusterRole](t, r.find("ClusterRole", clusterName("kube-reconciler")))
	allow := []string{"ambient-project-admin", "ambient-project-edit", "ambient-project-view"}
	var bindRules int
	for _, rule := range cr.Rules {
		if slices.Contains(rule.Verbs, "*") || slices.Contains(rule.Resources, "*") || slices.Contains(rule.APIGroups, "*") {
			t.Errorf("wildcard rule %+v", rule)
		}
		for _, v := range []string{"bind", "escalate", "impersonate"} {
			if !slices.Contains(rule.Verbs, v) {
				continue
			}
			if v != "bind" {
				t.Errorf("rule grants %s: %+v", v, rule)
				continue
			}
			bindRules++
			if !slices.Equal(rule.ResourceNames, allow) {
				t.Errorf("bind resourceNames = %v, want %v", rule.ResourceNames, allow)
			}
		}
	}
	if bindRules != 1 {
		t.Errorf("%d bind rules, want 1", bindRules)
	}
	env := envOf(t, r, deployment(t, r, name("kube-reconciler")))
	if got := env["ROLE_ALLOW_LIST"]; got != strings.Join(allow, ",") {
		t.Errorf("ROLE_ALLOW_LIST = %q, want %q", got, strings.Join(allow, ","))
	}
	// The rules file (shared with the kube-reconciler's own RBAC tests) and
	// the chart's default allow-list name the same roles.
	var fileRules []rbacv1.PolicyRule
	if err := yaml.Unmarshal(readFile(t, "helm/ambient-control-plane/files/kube-reconciler-clusterrole-rules.yaml"), &fileRules); err != nil {
		t.Fatalf("rules file: %v", err)
	}
	for _, rule := range fileRules {
		if slices.Contains(rule.Verbs, "bind") && !slices.Equal(rule.ResourceNames, allow) {
			t.Errorf("rules file bind resourceNames %v differ from values roleAllowList %v", rule.ResourceNames, allow)
		}
	}
	for _, role := range allow {
		if r.find("ClusterRole", role) == nil {
			t.Errorf("allow-listed ClusterRole %s is not shipped", role)
		}
	}
	// A changed allow-list reaches both places.
	r = mustRender(t, parseValues(t, `kubeReconciler: {roleAllowList: [ambient-project-view]}`))
	cr = toTyped[rbacv1.ClusterRole](t, r.find("ClusterRole", clusterName("kube-reconciler")))
	for _, rule := range cr.Rules {
		if slices.Contains(rule.Verbs, "bind") && !slices.Equal(rule.ResourceNames, []string{"ambient-project-view"}) {
			t.Errorf("custom allow-list: bind resourceNames = %v", rule.ResourceNames)
		}
	}
	if got := envOf(t, r, deployment(t, r, name("kube-reconciler")))["ROLE_ALLOW_LIST"]; got != "ambient-project-view" {
		t.Errorf("custom allow-list: ROLE_ALLOW_LIST = %q", got)
	}
}

// TestChartCanaries checks the canary objects of every service.
func TestChartCanaries(t *testing.T) {
	t.Parallel()
	var vals map[string]any
	for _, vs := range valueSets(t) {
		if vs.name == "canaries" {
			vals = vs.vals
		}
	}
	r := mustRender(t, vals)
	const canaryTag = ":0.2.0-rc.1"

	consumers := []struct {
		component, partitions, sliceEnv string
	}{
		{"kube-reconciler", "0,1", "GROUP_MEMBER_PARTITIONS"}, // "0-1" expanded
		{"runner-manager", "2", "GROUP_MEMBER_PARTITIONS"},
		{"event-tally", "0,3", "GROUP_MEMBER_PARTITIONS"},
	}
	for _, tc := range consumers {
		stable := deployment(t, r, name(tc.component))
		canary := deployment(t, r, name(tc.component+"-canary"))
		if !strings.HasSuffix(canary.Spec.Template.Spec.Containers[0].Image, canaryTag) {
			t.Errorf("%s canary image = %s", tc.component, canary.Spec.Template.Spec.Containers[0].Image)
		}
		if strings.HasSuffix(stable.Spec.Template.Spec.Containers[0].Image, canaryTag) {
			t.Errorf("%s stable runs the canary image", tc.component)
		}
		se, ce := envOf(t, r, stable), envOf(t, r, canary)
		if se["MEMBER_ID"] != "fieldRef:metadata.name" {
			t.Errorf("%s stable MEMBER_ID = %q, want the pod name", tc.component, se["MEMBER_ID"])
		}
		if _, ok := se[tc.sliceEnv]; ok {
			t.Errorf("%s stable has a partition slice (%s)", tc.component, tc.sliceEnv)
		}
		// Stable and canary agree on the partition count of the group.
		if se["GROUP_PARTITIONS"] != "16" || ce["GROUP_PARTITIONS"] != "16" {
			t.Errorf("%s GROUP_PARTITIONS stable=%q canary=%q, want 16 for both", tc.component, se["GROUP_PARTITIONS"], ce["GROUP_PARTITIONS"])
		}
		if ce["MEMBER_ID"] != tc.component+"-canary" || ce[tc.sliceEnv] != tc.partitions {
			t.Errorf("%s canary MEMBER_ID=%q %s=%q", tc.component, ce["MEMBER_ID"], tc.sliceEnv, ce[tc.sliceEnv])
		}
		if *canary.Spec.Replicas != 1 {
			t.Errorf("%s canary replicas = %d, want 1 (one member owns the slice)", tc.component, *canary.Spec.Replicas)
		}
		if stable.Spec.Template.Spec.ServiceAccountName != canary.Spec.Template.Spec.ServiceAccountName {
			t.Errorf("%s canary runs with another ServiceAccount", tc.component)
		}
	}

	shadow := deployment(t, r, name("informer-shadow"))
	se := envOf(t, r, shadow)
	// The chart's shadow names are the ones libs/events and the docs use.
	if se["SUBJECT_PREFIX"] != events.ShadowSubjectPrefix || se["EVENTS_STREAM"] != events.ShadowStreamName {
		t.Errorf("shadow informer SUBJECT_PREFIX=%q EVENTS_STREAM=%q", se["SUBJECT_PREFIX"], se["EVENTS_STREAM"])
	}
	if le := envOf(t, r, deployment(t, r, name("informer"))); le["SUBJECT_PREFIX"] != "" || le["EVENTS_STREAM"] != "" {
		t.Errorf("live informer overrides the live stream: %v", le)
	}
	te := envOf(t, r, deployment(t, r, name("event-tally-shadow")))
	if te["SUBJECT_PREFIX"] != events.ShadowSubjectPrefix || te["EVENTS_STREAM"] != events.ShadowStreamName {
		t.Errorf("shadow event-tally SUBJECT_PREFIX=%q EVENTS_STREAM=%q", te["SUBJECT_PREFIX"], te["EVENTS_STREAM"])
	}

	// agui-proxy: one Service over both tracks, one over the canary only.
	main := toTyped[corev1.Service](t, r.find("Service", name("agui-proxy")))
	if _, ok := main.Spec.Selector["ambient-code.io/track"]; ok {
		t.Errorf("main agui-proxy Service selects a track: %v", main.Spec.Selector)
	}
	canarySvc := toTyped[corev1.Service](t, r.find("Service", name("agui-proxy-canary")))
	if canarySvc.Spec.Selector["ambient-code.io/track"] != "canary" {
		t.Errorf("canary Service selector = %v", canarySvc.Spec.Selector)
	}
	pc := deployment(t, r, name("agui-proxy-canary"))
	if !matches(main.Spec.Selector, pc.Spec.Template.Labels) || !matches(canarySvc.Spec.Selector, pc.Spec.Template.Labels) {
		t.Error("agui-proxy canary pods are not behind both Services")
	}
	if matches(canarySvc.Spec.Selector, deployment(t, r, name("agui-proxy")).Spec.Template.Labels) {
		t.Error("canary Service selects stable pods")
	}
}

// TestChartExternalNATS checks NATS_URL and credentials wiring.
func TestChartExternalNATS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		auth    string
		wantEnv map[string]string
		mount   bool
	}{
		{name: "creds", auth: "creds", wantEnv: map[string]string{"NATS_CREDS_FILE": "/etc/ambient/nats/nats.creds"}, mount: true},
		{name: "userPassword", auth: "userPassword", wantEnv: map[string]string{"NATS_USER": "secret:nats-auth/user", "NATS_PASSWORD_FILE": "/etc/ambient/secrets/nats-password"}},
		{name: "token", auth: "token", wantEnv: map[string]string{"NATS_TOKEN_FILE": "/etc/ambient/secrets/nats-token"}},
		{name: "none", auth: "none", wantEnv: map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vals := localRunnersWith(t, fmt.Sprintf(`
nats: {enabled: false}
externalNats: {url: "nats://nats.messaging:4222", auth: {type: %s, secretName: nats-auth}}
`, tc.auth))
			r := mustRender(t, vals)
			for _, comp := range components {
				d := deployment(t, r, name(comp))
				env := envOf(t, r, d)
				if env["NATS_URL"] != "nats://nats.messaging:4222" {
					t.Errorf("%s: NATS_URL = %q", comp, env["NATS_URL"])
				}
				for k, v := range tc.wantEnv {
					if comp == "runner-manager" && strings.HasPrefix(v, "/etc/ambient/secrets/") {
						// A variable from the Secret (TestChartSecretsAsFiles).
						k, v = strings.TrimSuffix(k, "_FILE"), "secret:nats-auth/"+strings.TrimPrefix(strings.TrimPrefix(v, "/etc/ambient/secrets/"), "nats-")
					}
					if env[k] != v {
						t.Errorf("%s: %s = %q, want %q", comp, k, env[k], v)
					}
				}
				mounted := false
				for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
					if m.Name == "nats-creds" && m.MountPath == "/etc/ambient/nats" && m.ReadOnly {
						mounted = true
					}
				}
				if mounted != tc.mount {
					t.Errorf("%s: creds mounted = %v, want %v", comp, mounted, tc.mount)
				}
			}
		})
	}
}

// TestChartRejectsBadValues: values.schema.json and the templates' required
// and fail checks reject bad values with a message naming the key.
func TestChartRejectsBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, values, wantErr string
	}{
		{"unknown top-level key", `replicaCount: 3`, "replicaCount"},
		{"unknown service key", `informer: {replica: 3}`, "replica"},
		{"negative replicas", `kubeReconciler: {replicas: -1}`, "replicas"},
		{"replicas as string", `runnerManager: {replicas: "two"}`, "replicas"},
		{"latest tag", `global: {image: {tag: latest}}`, "tag"},
		{"latest canary tag", `kubeReconciler: {canary: {enabled: true, image: {tag: latest}}}`, "tag"},
		{"bad log level", `global: {logLevel: verbose}`, "logLevel"},
		{"metrics port out of range", `global: {metricsPort: 70000}`, "metricsPort"},
		{"agui auth none", `aguiProxy: {auth: {mode: none}}`, "mode"},
		{"bad nats auth type", `nats: {enabled: false}
externalNats: {url: "nats://n:4222", auth: {type: password}}`, "type"},
		{"bad nats url", `nats: {enabled: false}
externalNats: {url: "http://nats:4222"}`, "url"},
		{"bad partitions", `eventTally: {canary: {enabled: true, image: {tag: "1.0.0"}, partitions: "a-b"}}`, "partitions"},
		{"bad port range", `runnerManager: {portRange: "9100"}`, "portRange"},
		{"backend url without scheme", `runnerManager: {backendApiUrl: "agui-proxy:80"}`, "backendApiUrl"},
		{"bad grpc addr", `api: {grpcAddr: "http://api:9000"}`, "grpcAddr"},
		{"bad duration", `informer: {leaseTTL: "15 seconds"}`, "leaseTTL"},
		{"empty allow-list", `kubeReconciler: {roleAllowList: []}`, "roleAllowList"},
		{"stream replicas", `informer: {streamReplicas: 7}`, "streamReplicas"},
		{"unknown pdb key", `aguiProxy: {pdb: {minAvailable: 1}}`, "minAvailable"},
		// Kubernetes refuses a liveness probe whose successThreshold is not
		// 1: the Deployment would never be created.
		{"liveness success threshold", `informer: {probes: {liveness: {successThreshold: 2}}}`, "/informer/probes/liveness/successThreshold"},
		{"external nats without url", `nats: {enabled: false}`, "externalNats.url is required"},
		{"creds without secret", `nats: {enabled: false}
externalNats: {url: "nats://n:4222", auth: {type: creds}}`, "externalNats.auth.secretName is required"},
		{"canary without tag", `kubeReconciler: {canary: {enabled: true}}`, "kubeReconciler.canary.image.tag is required"},
		{"proxy canary without tag", `aguiProxy: {canary: {enabled: true}}`, "aguiProxy.canary.image.tag is required"},
		{"jwt without jwks", `aguiProxy: {auth: {mode: jwt}}`, "aguiProxy.auth.jwt.jwksURL is required"},
		{"shadow on live stream", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, subjectPrefix: ambient.events}}`, "shadow informer never publishes to the live stream"},
		{"canary partition beyond the group", `eventTally: {canary: {enabled: true, image: {tag: "1.0.0"}, partitions: "14-16"}}`, "not below global.groupPartitions"},
		// A reversed range names no partition: the canary would become an
		// ordinary member taking any partitions.
		{"reversed canary range", `kubeReconciler: {canary: {enabled: true, image: {tag: "1.0.0"}, partitions: "3-1"}}`, `kubeReconciler.canary.partitions: range "3-1" runs backwards`},
		{"reversed canary range in a list", `runnerManager: {enabled: true, projects: [sandbox], canary: {enabled: true, image: {tag: "1.0.0"}, partitions: "0,5-4"}}`, `runnerManager.canary.partitions: range "5-4" runs backwards`},
		{"sessions run twice", `runnerManager: {enabled: true}`, "would run every session twice"},
		{"nats passwords secret name", `nats: {ambientAuth: {enabled: true, existingSecret: "Bad_Name"}}`, "existingSecret"},
		{"bad session selector", `kubeReconciler: {sessionSelector: "everything"}`, "sessionSelector"},
		{"hpa min above max", `aguiProxy: {hpa: {enabled: true, minReplicas: 5, maxReplicas: 2}}`, "minReplicas must not exceed maxReplicas"},
		{"crds.install not a bool", `crds: {install: "yes"}`, "install"},
		{"unknown crds key", `crds: {keep: true}`, "keep"},
		{"agui authz none", `aguiProxy: {authz: {mode: none}}`, "mode"},
		{"agui authz kube without jwt", `aguiProxy: {authz: {mode: kube}}`, "aguiProxy.authz.mode kube needs aguiProxy.auth.mode jwt"},
		{"agui jwks over http", `aguiProxy: {auth: {mode: jwt, jwt: {jwksURL: "http://id.example.com/jwks", issuer: i, audience: a}}}`, "jwksURL"},
		{"agui bad runner network", `aguiProxy: {runnerAllowedNetworks: ["pods"]}`, "runnerAllowedNetworks"},
		{"agui runner network prefix too long", `aguiProxy: {runnerAllowedNetworks: ["10.0.0.0/8", "10.244.0.0/33"]}`, "/aguiProxy/runnerAllowedNetworks/1"},
		// agui-proxy reads "fe80::1%eth0/64" as the one address fe80::1 in
		// zone "eth0/64", not as the /64 meant: refused.
		{"agui runner network with a zone", `aguiProxy: {runnerAllowedNetworks: ["fe80::1%eth0/64"]}`, "runnerAllowedNetworks"},
		// agui-proxy refuses host bits (10.244.1.17/16: the network or the
		// one address?) and IPv4-mapped entries (they match no runner).
		{"agui runner network with host bits", `aguiProxy: {runnerAllowedNetworks: ["10.0.0.0/8", "10.244.1.17/16"]}`, `aguiProxy.runnerAllowedNetworks[1] "10.244.1.17/16" has bits set beyond its /16 prefix: agui-proxy refuses it (the network or the single address?); write the network, 10.244.0.0/16, or the single address, 10.244.1.17/32`},
		{"agui runner IPv6 network with host bits", `aguiProxy: {runnerAllowedNetworks: ["fd00:0:0:1::17/64"]}`, `aguiProxy.runnerAllowedNetworks[0] "fd00:0:0:1::17/64" has bits set beyond its /64 prefix: agui-proxy refuses it (the network or the single address?); write the network, fd00:0:0:1::/64, or the single address, fd00:0:0:1::17/128`},
		{"agui runner IPv4-mapped network", `aguiProxy: {runnerAllowedNetworks: ["::ffff:10.0.0.0/104"]}`, `aguiProxy.runnerAllowedNetworks[0] "::ffff:10.0.0.0/104" is an IPv4-mapped IPv6 address, which agui-proxy refuses: it compares runner addresses as IPv4, so the entry would match nothing: write the IPv4 network itself`},
		// The proxy and its metrics server are two listeners of one
		// process: the second listen on one port fails at start-up.
		{"agui proxy port is the metrics port", `aguiProxy: {port: 9090}`, "aguiProxy.port (9090) must differ from global.metricsPort"},
		{"metrics port is the agui proxy port", `global: {metricsPort: 9080}`, "aguiProxy.port (9080) must differ from global.metricsPort"},
		// Values each service refuses at start-up (the pod would crash-loop).
		{"lease TTL zero", `informer: {leaseTTL: "0s"}`, "informer.leaseTTL must be at least 1s"},
		{"lease TTL below 1s", `informer: {leaseTTL: "500ms"}`, "informer.leaseTTL must be at least 1s"},
		{"stream max age zero", `informer: {streamMaxAge: "0s"}`, "informer.streamMaxAge must be at least 100ms"},
		{"resync period below 100ms", `informer: {resyncPeriod: "50ms"}`, "informer.resyncPeriod must be 0 (off) or at least 100ms"},
		{"runner port range backwards", `runnerManager: {portRange: "9199-9100"}`, `runnerManager.portRange must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535, got "9199-9100"`},
		{"runner port zero", `runnerManager: {enabled: true, projects: [sandbox], portRange: "0-10"}`, "runnerManager.portRange must be LOW-HIGH"},
		{"runner port above 65535", `runnerManager: {portRange: "9100-65536"}`, "runnerManager.portRange must be LOW-HIGH"},
		{"resync interval zero", `kubeReconciler: {resyncInterval: "0s"}`, "kubeReconciler.resyncInterval must be at least 1s"},
		{"grpc port out of range", `api: {grpcAddr: "api:99999"}`, "grpcAddr"},
		{"canary member id starts with -", `kubeReconciler: {canary: {enabled: true, image: {tag: "1.0.0"}, partitions: "0", memberId: "-canary"}}`, "memberId"},
		{"canary member id starts with _", `eventTally: {canary: {enabled: true, image: {tag: "1.0.0"}, partitions: "0", memberId: "_canary"}}`, "memberId"},
		{"shadow stream starts with -", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, eventsStream: "-shadow"}}`, "eventsStream"},
		{"unclosed deny pattern", `kubeReconciler: {namespaceDenyList: ["["]}`, "namespaceDenyList"},
		{"empty deny class", `kubeReconciler: {namespaceDenyList: ["kube-[]"]}`, "namespaceDenyList"},
		{"otlp endpoint without host", `global: {otlpEndpoint: "http://"}`, "otlpEndpoint"},
		{"otlp endpoint with a space", `global: {otlpEndpoint: "http://x y"}`, "otlpEndpoint"},
		// Values the services take but that fail at run time.
		{"stream max age below NATS minimum", `informer: {streamMaxAge: "50ms"}`, "informer.streamMaxAge must be at least 100ms"},
		{"grpc port zero", `api: {grpcAddr: "api:0"}`, "grpcAddr"},
		{"shadow prefix under the live prefix", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, subjectPrefix: ambient.events.shadow2}}`, "overlaps the live events prefix"},
		{"shadow prefix above the live prefix", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, subjectPrefix: ambient}}`, "overlaps the live events prefix"},
		{"shadow prefix on the dead letters", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, subjectPrefix: ambient.dlq}}`, "overlaps the dead letters prefix"},
		{"shadow stream is the live one", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, eventsStream: AMBIENT_EVENTS}}`, "eventsStream"},
		{"shadow stream is the DLQ", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, eventsStream: AMBIENT_DLQ}}`, "eventsStream"},
		{"shadow stream is a live work queue", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, eventsStream: AMBIENT_EVENTS-event-tally}}`, "eventsStream"},
		{"shadow stream is a KV bucket", `informer: {canary: {enabled: true, image: {tag: "1.0.0"}, eventsStream: KV_ambient-objects}}`, "eventsStream"},
		{"nats secret name", `nats: {enabled: false}
externalNats: {url: "nats://n:4222", auth: {type: token, secretName: "Bad_Name"}}`, "secretName"},
		{"agui tokens secret name", `aguiProxy: {auth: {mode: token, tokensSecret: {name: "Bad_Name", key: tokens}}}`, "tokensSecret"},
		// Secret data keys Kubernetes refuses in a secretKeyRef or a
		// volume's items: the pod would never start.
		{"api token key with a space", `api: {tokenSecret: {name: ambient-api-token, key: "a b"}}`, "/api/tokenSecret/key"},
		{"api token key with a slash", `api: {tokenSecret: {name: ambient-api-token, key: "dir/token"}}`, "/api/tokenSecret/key"},
		{"agui tokens key starting with ..", `aguiProxy: {auth: {mode: token, tokensSecret: {name: ambient-agui-tokens, key: "..tokens"}}}`, "/aguiProxy/auth/tokensSecret/key"},
		// A PodDisruptionBudget that lets no pod go blocks every drain.
		{"pdb max unavailable zero", `informer: {pdb: {maxUnavailable: 0}}`, "/informer/pdb/maxUnavailable"},
		{"pdb max unavailable 0%", `aguiProxy: {pdb: {maxUnavailable: "0%"}}`, "/aguiProxy/pdb/maxUnavailable"},
		{"pdb max unavailable 00%", `eventTally: {pdb: {maxUnavailable: "00%"}}`, "/eventTally/pdb/maxUnavailable"},
		{"pdb max unavailable above 100%", `kubeReconciler: {pdb: {maxUnavailable: "101%"}}`, "/kubeReconciler/pdb/maxUnavailable"},
		// runner-manager reads a blank RUNNER_PROJECTS as unset: all
		// projects, past the guard against running sessions twice; an item
		// with a comma or spaces would be split or trimmed (" * " is "*").
		{"blank runner project", `runnerManager: {enabled: true, projects: [" "]}`, "/runnerManager/projects/0"},
		{"runner project all with spaces", `runnerManager: {enabled: true, projects: [sandbox, " * "]}`, "/runnerManager/projects/1"},
		{"runner projects in one item", `{kubeReconciler: {sessionSelector: "projects=team-a"}, runnerManager: {enabled: true, projects: ["sandbox,team-a"]}}`, "/runnerManager/projects/0"},
		// http only to a loopback host: the host must be the loopback
		// name or address, not start like it.
		{"agui jwks on a host named like localhost", `aguiProxy: {auth: {mode: jwt, jwt: {jwksURL: "http://localhost.evil.example/jwks", issuer: i, audience: a}}}`, "jwksURL"},
		{"agui jwks on a host named like 127.", `aguiProxy: {auth: {mode: jwt, jwt: {jwksURL: "http://127.0.0.1.nip.io/jwks", issuer: i, audience: a}}}`, "jwksURL"},
		{"agui jwks with localhost as the user", `aguiProxy: {auth: {mode: jwt, jwt: {jwksURL: "http://localhost@evil.example/jwks", issuer: i, audience: a}}}`, "jwksURL"},
		{"agui jwks on a host named like [::1]", `aguiProxy: {auth: {mode: jwt, jwt: {jwksURL: "http://[::1].evil.example/jwks", issuer: i, audience: a}}}`, "jwksURL"},
		{"grpc addr unbracketed IPv6", `api: {grpcAddr: "fd00::1:9000"}`, "grpcAddr"},
		// The port natsPort overrides is the bundled NATS's own.
		{"nats port other than the bundled one", `natsPort: 4333`, "natsPort"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := render(t, parseValues(t, tc.values))
			if err == nil {
				t.Fatalf("values accepted:\n%s", tc.values)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
			if os.Getenv("DEPLOYTEST_VERBOSE") != "" {
				t.Logf("rejected: %v", err)
			}
		})
	}
}

// TestChartSecretKeysFollowKubernetes: the schema accepts exactly the Secret
// data keys Kubernetes accepts (validation.IsConfigMapKey, the check of a
// secretKeyRef's and a volume item's key), for each key the chart reads
// from a Secret. A key the schema let through but Kubernetes refused would
// leave the pod uncreatable; one it refused but Kubernetes took would make a
// working Secret unusable.
func TestChartSecretKeysFollowKubernetes(t *testing.T) {
	t.Parallel()
	keys := []string{
		"token", "tokens.txt", "API_TOKEN-1", ".token", "a..b", "-", "_", strings.Repeat("k", 253),
		"", ".", "..", "..token", "a b", "dir/token", "tök", "token\n", strings.Repeat("k", 254),
	}
	places := map[string]func(key string) map[string]any{
		"api.tokenSecret.key": func(key string) map[string]any {
			return map[string]any{"api": map[string]any{"tokenSecret": map[string]any{"name": "ambient-api-token", "key": key}}}
		},
		"aguiProxy.auth.tokensSecret.key": func(key string) map[string]any {
			return map[string]any{"aguiProxy": map[string]any{"auth": map[string]any{"tokensSecret": map[string]any{"name": "ambient-agui-tokens", "key": key}}}}
		},
	}
	for place, values := range places {
		for _, key := range keys {
			t.Run(fmt.Sprintf("%s=%.24q", place, key), func(t *testing.T) {
				t.Parallel()
				want := len(validation.IsConfigMapKey(key)) == 0
				_, err := render(t, values(key))
				if got := err == nil; got != want {
					t.Errorf("%s %q: chart accepts = %v, Kubernetes accepts = %v (render error: %v)", place, key, got, want, err)
				}
			})
		}
	}
}

// TestChartServiceEnv runs each service's own config loader on the
// environment of every Deployment of every value set (secrets and downward
// API values replaced by plausible values), and checks that the chart sets
// only variables the service declares.
func TestChartServiceEnv(t *testing.T) {
	t.Parallel()
	cases := map[string][]envCase{} // service -> environments
	for _, vs := range valueSets(t) {
		r := mustRender(t, vs.vals)
		for _, u := range r.ofKind("Deployment") {
			d := toTyped[appsv1.Deployment](t, u)
			component := d.Spec.Template.Labels["app.kubernetes.io/component"]
			env := envOf(t, r, d)
			if declared, ok := declaredEnv(t, component); ok {
				// runner-manager passes the names in RUNNER_ENV_ALLOW on to
				// its runners: the runners read them.
				forRunners := map[string]bool{}
				if component == "runner-manager" {
					for _, n := range strings.Split(env["RUNNER_ENV_ALLOW"], ",") {
						forRunners[n] = true
					}
				}
				// Variables the chart sets only for the kubelet to expand
				// into another one ($(NAME)), e.g. the pod's name into
				// OTEL_RESOURCE_ATTRIBUTES.
				referenced := map[string]bool{}
				for _, v := range env {
					for _, m := range varRef.FindAllStringSubmatch(v, -1) {
						referenced[m[1]] = true
					}
				}
				for k := range env {
					if !declared[k] && !forRunners[k] && !referenced[k] {
						t.Errorf("%s/%s sets %s, which %s never reads", vs.name, d.Name, k, component)
					}
				}
			}
			cases[component] = append(cases[component], envCase{ID: vs.name + "/" + d.Name, Env: loaderEnv(t, r, d)})
		}
	}
	for _, component := range components {
		res := checkEnvs(t, component, cases[component])
		for id, errs := range res {
			for _, e := range errs {
				t.Errorf("%s: %s's own config loader rejects the chart's environment: %s", id, component, e.Msg)
			}
		}
	}
}

// varRef is a $(NAME) reference the kubelet expands in an env value.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestChartNetworkPolicies checks the NetworkPolicies allow what each
// service needs and nothing open-ended.
func TestChartNetworkPolicies(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `networkPolicy: {enabled: true}`))
	type rule = map[string]any
	for _, comp := range components {
		u := r.find("NetworkPolicy", name(comp))
		if u == nil {
			t.Errorf("no NetworkPolicy for %s", comp)
			continue
		}
		sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "podSelector", "matchLabels")
		if sel["app.kubernetes.io/component"] != comp {
			t.Errorf("%s NetworkPolicy selects %v", comp, sel)
		}
		types, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "policyTypes")
		if !slices.Equal(types, []string{"Ingress", "Egress"}) {
			t.Errorf("%s policyTypes = %v", comp, types)
		}
		egress, _, _ := unstructured.NestedSlice(u.Object, "spec", "egress")
		for _, e := range egress {
			if len(e.(rule)["ports"].([]any)) == 0 {
				t.Errorf("%s: egress rule without ports (open to everything): %v", comp, e)
			}
		}
		out, _ := yaml.Marshal(egress)
		hasPort := func(p string) bool { return strings.Contains(string(out), "port: "+p+"\n") }
		if !hasPort("53") || !hasPort("4222") {
			t.Errorf("%s: egress lacks DNS or NATS:\n%s", comp, out)
		}
		if api := comp == "informer" || comp == "kube-reconciler" || comp == "runner-manager"; api != hasPort("9000") {
			t.Errorf("%s: egress to the API port 9000 = %v, want %v", comp, hasPort("9000"), api)
		}
		if kube := comp == "kube-reconciler"; kube != hasPort("6443") {
			t.Errorf("%s: egress to the Kubernetes API = %v, want %v", comp, hasPort("6443"), kube)
		}
	}
	// Runner ports: the agui-proxy may connect, and it may connect only
	// there (the other runner-manager pods too:
	// TestChartRunnerManagerPeersProbeRunners).
	rm, _ := yaml.Marshal(r.find("NetworkPolicy", name("runner-manager")).Object["spec"])
	if !strings.Contains(string(rm), "endPort: 9199") || !strings.Contains(string(rm), "app.kubernetes.io/component: agui-proxy") {
		t.Errorf("runner-manager NetworkPolicy does not admit agui-proxy on the runner ports:\n%s", rm)
	}
	ap, _ := yaml.Marshal(r.find("NetworkPolicy", name("agui-proxy")).Object["spec"])
	if !strings.Contains(string(ap), "app.kubernetes.io/component: runner-manager") {
		t.Errorf("agui-proxy NetworkPolicy cannot reach runner-manager pods:\n%s", ap)
	}
	checkNATSNetworkPolicy(t, r)
	if r := mustRender(t, parseValues(t, `{nats: {enabled: false}, externalNats: {url: "nats://n:4222"}}`)); r.find("NetworkPolicy", name("nats")) != nil {
		t.Error("a NetworkPolicy for NATS the chart does not install")
	}
}

// checkNATSNetworkPolicy: the bundled NATS pods admit clients only from this
// release's pods (and networkPolicy.natsFrom), routes only from NATS pods.
func checkNATSNetworkPolicy(t *testing.T, r rendered) {
	t.Helper()
	u := r.find("NetworkPolicy", name("nats"))
	if u == nil {
		t.Fatal("no NetworkPolicy for the bundled NATS")
	}
	np := toTyped[networkingv1.NetworkPolicy](t, u)
	natsPods := map[string]string{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": releaseName, "app.kubernetes.io/component": "nats"}
	if !maps.Equal(np.Spec.PodSelector.MatchLabels, natsPods) {
		t.Errorf("NATS NetworkPolicy selects %v, want the nats chart's server pods %v", np.Spec.PodSelector.MatchLabels, natsPods)
	}
	ours := map[string]string{"app.kubernetes.io/name": "ambient-control-plane", "app.kubernetes.io/instance": releaseName}
	from := map[int32][]networkingv1.NetworkPolicyPeer{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			from[p.Port.IntVal] = rule.From
		}
	}
	if len(from) != 3 {
		t.Errorf("NATS ingress ports %v, want 4222, 6222 and 8222 only", slices.Sorted(maps.Keys(from)))
	}
	if c := from[4222]; len(c) == 0 || c[0].PodSelector == nil || !maps.Equal(c[0].PodSelector.MatchLabels, ours) || c[0].NamespaceSelector != nil {
		t.Errorf("NATS client port admits %+v, want this release's pods first", c)
	}
	if c := from[6222]; len(c) != 1 || c[0].PodSelector == nil || !maps.Equal(c[0].PodSelector.MatchLabels, natsPods) {
		t.Errorf("NATS route port admits %+v, want only NATS pods", c)
	}
	for _, e := range np.Spec.Egress {
		if len(e.Ports) == 0 {
			t.Errorf("NATS egress rule without ports: %+v", e)
		}
	}
}

// TestChartCRDs: crds.install (default true) renders the AgenticSession CRD
// from files/crds/ with its schema unchanged, the chart's labels and
// helm.sh/resource-policy: keep (uninstalling never deletes every
// AgenticSession); false renders no CRD, for clusters where the session
// operator owns it. The chart has no crds/ directory: Helm installs that
// unconditionally, which would fight the operator's CRD.
func TestChartCRDs(t *testing.T) {
	t.Parallel()
	c := loadChart(t)
	if n := len(c.CRDObjects()); n != 0 {
		t.Errorf("chart has %d files in crds/, want none (the CRD lives in %s)", n, crdFilePrefix)
	}
	files := crdObjects(t, c)
	tests := []struct {
		name string
		vals string
		want []*unstructured.Unstructured
	}{
		{name: "default", vals: `{}`, want: files},
		{name: "install true", vals: `crds: {install: true}`, want: files},
		{name: "install false", vals: `crds: {install: false}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustRender(t, parseValues(t, tc.vals)).ofKind("CustomResourceDefinition")
			if len(got) != len(tc.want) {
				t.Fatalf("%d CRDs rendered, want %d", len(got), len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if g.GetName() != w.GetName() {
					t.Errorf("CRD %d: name %q, want %q", i, g.GetName(), w.GetName())
				}
				if diff := cmp.Diff(w.Object["spec"], g.Object["spec"]); diff != "" {
					t.Errorf("CRD %s: rendered spec differs from %s (-file +rendered):\n%s", w.GetName(), crdFilePrefix, diff)
				}
				if g.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
					t.Errorf("CRD %s: annotations %v, want helm.sh/resource-policy: keep", g.GetName(), g.GetAnnotations())
				}
				if g.GetLabels()["app.kubernetes.io/component"] != "crds" || g.GetLabels()["app.kubernetes.io/instance"] != releaseName {
					t.Errorf("CRD %s: labels %v, want the chart's", g.GetName(), g.GetLabels())
				}
			}
		})
	}
}

// TestChartAguiProxyAuthz: the proxy is told who authorizes (api by
// default, with the API's REST URL; kube with the ClusterRole of
// files/agui-proxy-clusterrole-rules.yaml bound to its ServiceAccount and
// nothing more), which runner networks it may dial (loopback always), and
// its NetworkPolicy lets it reach its authority.
func TestChartAguiProxyAuthz(t *testing.T) {
	t.Parallel()
	r := mustRender(t, parseValues(t, `networkPolicy: {enabled: true}`))
	env := envOf(t, r, deployment(t, r, name("agui-proxy")))
	if env["AGUI_AUTHZ"] != "api" || env["AMBIENT_API_SERVER_URL"] != "http://ambient-api-server:8000" {
		t.Errorf("default authz env: AGUI_AUTHZ=%q AMBIENT_API_SERVER_URL=%q", env["AGUI_AUTHZ"], env["AMBIENT_API_SERVER_URL"])
	}
	if got := env["RUNNER_ALLOWED_NETWORKS"]; !strings.HasPrefix(got, "127.0.0.0/8,::1/128,10.0.0.0/8") {
		t.Errorf("RUNNER_ALLOWED_NETWORKS = %q", got)
	}
	if r.find("ClusterRole", clusterName("agui-proxy")) != nil {
		t.Error("api mode renders a ClusterRole for the agui-proxy")
	}
	ap, _ := yaml.Marshal(r.find("NetworkPolicy", name("agui-proxy")).Object["spec"])
	if !strings.Contains(string(ap), "port: 8000\n") {
		t.Errorf("agui-proxy NetworkPolicy does not reach the API's REST port 8000:\n%s", ap)
	}

	var kube map[string]any
	for _, vs := range valueSets(t) {
		if vs.name == "authz-kube" {
			kube = vs.vals
		}
	}
	r = mustRender(t, kube)
	env = envOf(t, r, deployment(t, r, name("agui-proxy")))
	if env["AGUI_AUTHZ"] != "kube" || env["NAMESPACE"] != "ambient-code" || env["AGUI_JWT_GROUPS_CLAIM"] != "roles" ||
		env["RUNNER_ALLOWED_NETWORKS"] != "127.0.0.0/8,::1/128,10.244.0.0/16" || env["AGUI_AUTHZ_CACHE_TTL"] != "5s" {
		t.Errorf("kube authz env: %v", env)
	}
	cr := r.find("ClusterRole", clusterName("agui-proxy"))
	if cr == nil {
		t.Fatal("kube mode renders no ClusterRole for the agui-proxy")
	}
	var fileRules []rbacv1.PolicyRule
	if err := yaml.Unmarshal(readFile(t, "helm/ambient-control-plane/files/agui-proxy-clusterrole-rules.yaml"), &fileRules); err != nil {
		t.Fatalf("rules file: %v", err)
	}
	if got := toTyped[rbacv1.ClusterRole](t, cr).Rules; !slices.EqualFunc(got, fileRules, func(a, b rbacv1.PolicyRule) bool {
		return slices.Equal(a.Verbs, b.Verbs) && slices.Equal(a.Resources, b.Resources) && slices.Equal(a.APIGroups, b.APIGroups) && len(a.ResourceNames) == 0
	}) {
		t.Errorf("agui-proxy ClusterRole rules = %+v, want the rules file's %+v", got, fileRules)
	}
	crb := toTyped[rbacv1.ClusterRoleBinding](t, r.find("ClusterRoleBinding", clusterName("agui-proxy")))
	if crb.RoleRef.Name != clusterName("agui-proxy") || len(crb.Subjects) != 1 || crb.Subjects[0].Kind != "ServiceAccount" || crb.Subjects[0].Name != name("agui-proxy") {
		t.Errorf("agui-proxy ClusterRoleBinding = %+v", crb)
	}
	ap, _ = yaml.Marshal(r.find("NetworkPolicy", name("agui-proxy")).Object["spec"])
	if !strings.Contains(string(ap), "10.96.0.1/32") {
		t.Errorf("kube mode: agui-proxy NetworkPolicy does not reach the Kubernetes API:\n%s", ap)
	}
}

// TestChartInstanceNames: CONTROL_PLANE_INSTANCE is "<namespace>-<release>"
// and, for names past a label value's 63 characters, stays a valid label
// value that tells apart two releases whose names share their first 63
// characters (a plain cut gave both the same instance, and each
// kube-reconciler's resync deleted the other's AgenticSessions).
func TestChartInstanceNames(t *testing.T) {
	t.Parallel()
	instance := func(name, namespace string) string {
		t.Helper()
		r, err := renderRelease(t, loadChart(t), name, namespace, nil)
		if err != nil {
			t.Fatalf("render %s/%s: %v", namespace, name, err)
		}
		for _, u := range r.ofKind("Deployment") {
			d := toTyped[appsv1.Deployment](t, u)
			if d.Spec.Template.Labels["app.kubernetes.io/component"] == "kube-reconciler" {
				return envOf(t, r, d)["CONTROL_PLANE_INSTANCE"]
			}
		}
		t.Fatalf("%s/%s: no kube-reconciler Deployment", namespace, name)
		return ""
	}
	if got := instance(releaseName, releaseNamespace); got != releaseNamespace+"-"+releaseName {
		t.Errorf("instance %q, want %q", got, releaseNamespace+"-"+releaseName)
	}
	long := strings.Repeat("n", 63)
	one, two := instance("release-one", long), instance("release-two", long)
	for _, got := range []string{one, two} {
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 || got == "" {
			t.Errorf("instance %q is not a label value: %v", got, errs)
		}
	}
	if one == two {
		t.Errorf("releases release-one and release-two in namespace %s share instance %q", long, one)
	}
	if again := instance("release-one", long); again != one {
		t.Errorf("instance of one release changed between renders: %q, then %q", one, again)
	}
}

// TestChartFixedMemberIDsNeverOverlap: a Deployment whose MEMBER_ID is a
// literal (the consumer canaries' canary.memberId) is replaced with the
// Recreate strategy, so a rollout stops the old pod before it starts the
// new one: two live pods never share a member id (runner-manager would take
// the other's claims for its own and restart their sessions). Deployments
// whose member id is the pod name keep rolling updates.
func TestChartFixedMemberIDsNeverOverlap(t *testing.T) {
	t.Parallel()
	fixed := 0
	for _, vs := range valueSets(t) {
		r := mustRender(t, vs.vals)
		for _, u := range r.ofKind("Deployment") {
			d := toTyped[appsv1.Deployment](t, u)
			member, ok := envOf(t, r, d)["MEMBER_ID"]
			if !ok {
				continue
			}
			literal := member != "fieldRef:metadata.name"
			recreate := d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType
			switch {
			case literal && !recreate:
				t.Errorf("%s/%s: MEMBER_ID %q with strategy %q: a rollout runs a second pod with the same member id", vs.name, d.Name, member, d.Spec.Strategy.Type)
			case literal && (d.Spec.Replicas == nil || *d.Spec.Replicas != 1):
				t.Errorf("%s/%s: MEMBER_ID %q on %v replicas", vs.name, d.Name, member, d.Spec.Replicas)
			case !literal && recreate:
				t.Errorf("%s/%s: member id is the pod name, yet strategy Recreate (an outage on every rollout)", vs.name, d.Name)
			}
			if literal {
				fixed++
			}
		}
	}
	if fixed < 3 {
		t.Errorf("%d Deployments with a fixed MEMBER_ID checked, want the three consumer canaries at least", fixed)
	}
}

// egressByPort returns the peers of a NetworkPolicy's egress rules by TCP
// port (nil peers: any destination).
func egressByPort(t *testing.T, r rendered, component string) map[int32][][]networkingv1.NetworkPolicyPeer {
	t.Helper()
	u := r.find("NetworkPolicy", name(component))
	if u == nil {
		t.Fatalf("no NetworkPolicy for %s", component)
	}
	out := map[int32][][]networkingv1.NetworkPolicyPeer{}
	for _, e := range toTyped[networkingv1.NetworkPolicy](t, u).Spec.Egress {
		for _, p := range e.Ports {
			if p.Port != nil && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
				out[p.Port.IntVal] = append(out[p.Port.IntVal], e.To)
			}
		}
	}
	return out
}

// TestChartNetworkPolicyURLPorts: the egress a URL needs is opened on the
// URL's port (its explicit port, else its scheme's: 443 for https, 80 for
// http): the agui-proxy's JWKS endpoint (aguiProxy.auth.jwt.jwksURL) and
// the runners' BOSS_URL (runnerManager.bossURL, to networkPolicy.bossTo).
func TestChartNetworkPolicyURLPorts(t *testing.T) {
	t.Parallel()
	jwt := func(url string) string {
		return fmt.Sprintf(`aguiProxy: {auth: {mode: jwt, jwt: {jwksURL: %q, issuer: "https://idp.example.com", audience: ambient}}}`, url)
	}
	tests := []struct {
		name, values, component string
		port                    int32
		to                      string // the rule's peers, YAML; "" any destination
	}{
		{"jwks with a port", jwt("https://idp.example.com:8443/certs"), "agui-proxy", 8443, ""},
		{"jwks without a port", jwt("https://idp.example.com/certs"), "agui-proxy", 443, ""},
		{"boss over http with a port", `runnerManager: {bossURL: "http://boss.tools.svc:8080/api"}`, "runner-manager", 8080, ""},
		{"boss over http", `runnerManager: {bossURL: "http://boss.tools.svc"}`, "runner-manager", 80, ""},
		{"boss over https", `runnerManager: {bossURL: "https://boss.example.com"}`, "runner-manager", 443, ""},
		{"boss without runnerEgress", `{runnerManager: {bossURL: "http://boss.tools.svc:8080"}, networkPolicy: {runnerEgress: []}}`, "runner-manager", 8080, ""},
		{"boss to its peers", `{runnerManager: {bossURL: "http://boss.tools.svc:8080"}, networkPolicy: {bossTo: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: tools}}}]}}`,
			"runner-manager", 8080, "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: tools}}}]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, localRunnersWith(t, tc.values))
			want := peers(t, tc.to)
			rules := egressByPort(t, r, tc.component)[tc.port]
			if !slices.ContainsFunc(rules, func(to []networkingv1.NetworkPolicyPeer) bool { return cmp.Equal(to, want) }) {
				t.Errorf("%s egress on port %d goes to %+v, want a rule to %+v", tc.component, tc.port, rules, want)
			}
		})
	}
	// Without a BOSS_URL the runners get networkPolicy.runnerEgress only.
	r := mustRender(t, parseValues(t, localRunners))
	if got := egressByPort(t, r, "runner-manager"); len(got[80]) != 0 || len(got[8080]) != 0 || len(got[443]) != 1 {
		t.Errorf("runner-manager egress without bossURL: %v", got)
	}
}

// TestChartNetworkPolicyAllowsOTLP: with global.otlpEndpoint set, every
// service exports traces and metrics to it, so every service's
// NetworkPolicy lets it connect to the endpoint's port (explicit, else the
// scheme's), to networkPolicy.otlpTo when set; without an endpoint no
// such rule exists.
func TestChartNetworkPolicyAllowsOTLP(t *testing.T) {
	t.Parallel()
	collector := "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]"
	tests := []struct {
		name, values string
		port         int32
		to           string // the rule's peers, YAML; "" any destination
	}{
		{"grpc", `global: {otlpEndpoint: "http://otel-collector.monitoring:4317", otlpProtocol: grpc}`, 4317, ""},
		{"http", `global: {otlpEndpoint: "http://otel-collector.monitoring:4318/v1", otlpProtocol: http/protobuf}`, 4318, ""},
		{"https without a port", `global: {otlpEndpoint: "https://otlp.example.com", otlpProtocol: http/protobuf}`, 443, ""},
		{"to its peers", `{global: {otlpEndpoint: "http://otel-collector.monitoring:4317"}, networkPolicy: {otlpTo: ` + collector + `}}`, 4317, collector},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, localRunnersWith(t, tc.values))
			want := peers(t, tc.to)
			for _, comp := range components {
				rules := egressByPort(t, r, comp)[tc.port]
				if !slices.ContainsFunc(rules, func(to []networkingv1.NetworkPolicyPeer) bool { return cmp.Equal(to, want) }) {
					t.Errorf("%s egress on the OTLP port %d goes to %+v, want a rule to %+v", comp, tc.port, rules, want)
				}
			}
		})
	}
	r := mustRender(t, parseValues(t, localRunners))
	for _, comp := range components {
		if got := egressByPort(t, r, comp); len(got[4317]) != 0 || len(got[4318]) != 0 {
			t.Errorf("%s: OTLP egress without global.otlpEndpoint: %v", comp, got)
		}
	}
}

// TestChartNATSEgressFollowsNameOverride: every service's NATS egress
// selects the bundled NATS server pods, also when nats.nameOverride
// renames them (the nats chart's app.kubernetes.io/name).
func TestChartNATSEgressFollowsNameOverride(t *testing.T) {
	t.Parallel()
	for _, override := range []string{"", "msgbus"} {
		r := mustRender(t, localRunnersWith(t, fmt.Sprintf(`nats: {nameOverride: %q}`, override)))
		natsPods, _, _ := unstructured.NestedStringMap(r.find("NetworkPolicy", name("nats")).Object, "spec", "podSelector", "matchLabels")
		want := override
		if want == "" {
			want = "nats"
		}
		if natsPods["app.kubernetes.io/name"] != want {
			t.Errorf("nameOverride %q: NATS NetworkPolicy selects %v, want app.kubernetes.io/name=%s", override, natsPods, want)
		}
		for _, comp := range components {
			rules := egressByPort(t, r, comp)[4222]
			if len(rules) != 1 || len(rules[0]) != 1 || rules[0][0].PodSelector == nil || !matches(rules[0][0].PodSelector.MatchLabels, natsPods) {
				t.Errorf("nameOverride %q: %s NATS egress goes to %+v, want the NATS pods %v", override, comp, rules, natsPods)
			}
		}
	}
}

// TestChartHelmTestReachesMetrics: `helm test` GETs every service's
// /readyz on the metrics port; with networkPolicy.metricsFrom set, each
// service's NetworkPolicy admits the chart's test pod there beside the
// listed peers.
func TestChartHelmTestReachesMetrics(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `networkPolicy: {metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]}`))
	test := r.find("Pod", name("readyz-test"))
	if test == nil {
		t.Fatal("no helm test pod rendered")
	}
	for _, comp := range components {
		np := toTyped[networkingv1.NetworkPolicy](t, r.find("NetworkPolicy", name(comp)))
		var from []networkingv1.NetworkPolicyPeer
		for _, rule := range np.Spec.Ingress {
			if slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port.StrVal == "http-metrics" }) {
				from = rule.From
			}
		}
		admitted := slices.ContainsFunc(from, func(p networkingv1.NetworkPolicyPeer) bool {
			return p.NamespaceSelector == nil && p.IPBlock == nil && p.PodSelector != nil && matches(p.PodSelector.MatchLabels, test.GetLabels())
		})
		monitoring := slices.ContainsFunc(from, func(p networkingv1.NetworkPolicyPeer) bool { return p.NamespaceSelector != nil })
		if !admitted || !monitoring {
			t.Errorf("%s: metrics port admits %+v; want the helm test pod (%v) and networkPolicy.metricsFrom", comp, from, test.GetLabels())
		}
	}
}

// TestChartImagePullSecretsOnEveryPod: global.imagePullSecrets are "used
// by every pod", the `helm test` pod too: its image comes from a registry
// like the services' (tests.image), and behind a registry that needs
// credentials the test pod could not start without them.
func TestChartImagePullSecretsOnEveryPod(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `global: {imagePullSecrets: [regcred, mirror-creds]}`))
	want := []corev1.LocalObjectReference{{Name: "regcred"}, {Name: "mirror-creds"}}
	var pods int
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		pods++
		if !cmp.Equal(d.Spec.Template.Spec.ImagePullSecrets, want) {
			t.Errorf("Deployment %s: imagePullSecrets %v, want %v", d.Name, d.Spec.Template.Spec.ImagePullSecrets, want)
		}
	}
	for _, u := range r.ofKind("Pod") {
		p := toTyped[corev1.Pod](t, u)
		pods++
		if !cmp.Equal(p.Spec.ImagePullSecrets, want) {
			t.Errorf("Pod %s: imagePullSecrets %v, want %v", p.Name, p.Spec.ImagePullSecrets, want)
		}
	}
	if pods < len(components)+1 {
		t.Errorf("%d pod templates checked, want every service's and the helm test pod", pods)
	}
}

// peers parses a NetworkPolicy rule's peers written as YAML; "" is no
// peers (any destination).
func peers(t *testing.T, to string) []networkingv1.NetworkPolicyPeer {
	t.Helper()
	var out []networkingv1.NetworkPolicyPeer
	if to != "" {
		if err := yaml.Unmarshal([]byte(to), &out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
