package deploytest

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// openShiftValues leave the user and groups of every pod to the platform,
// as OpenShift's restricted-v2 SCC requires (it assigns a UID from the
// namespace's range and refuses any other): the value set "openshift", as
// the README gives it. The NATS pods need the nulls under nats: too (Helm
// passes the nats chart the global values set, not the nulls).
const openShiftValues = `
global:
  podSecurityContext: {runAsUser: null, runAsGroup: null, fsGroup: null}
nats:
  podSecurityContext: {runAsUser: null, runAsGroup: null, fsGroup: null}
`

// podSpecs returns the pod spec of every Deployment and of the `helm test`
// pod, by object name.
func podSpecs(t *testing.T, r rendered) map[string]corev1.PodSpec {
	t.Helper()
	out := map[string]corev1.PodSpec{}
	for _, u := range r.ofKind("Deployment") {
		d := toTyped[appsv1.Deployment](t, u)
		out[d.Name] = d.Spec.Template.Spec
	}
	for _, u := range r.ofKind("Pod") {
		p := toTyped[corev1.Pod](t, u)
		out[p.Name] = p.Spec
	}
	return out
}

// TestChartSecurityContexts: global.podSecurityContext and
// global.containerSecurityContext (and each service's own, merged over
// them) replace the pods' and containers' security contexts; the defaults
// are the restricted profile with UID and GID 65532, and a runAsUser set to
// null leaves the UID to the platform (OpenShift) while runAsNonRoot,
// seccomp, a read-only root and no capabilities stay.
func TestChartSecurityContexts(t *testing.T) {
	t.Parallel()
	uid := func(p *int64) string {
		if p == nil {
			return "unset"
		}
		return strconv.FormatInt(*p, 10)
	}
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		for n, spec := range podSpecs(t, mustRender(t, nil)) {
			checkPodSecurity(t, n, spec)
			psc := spec.SecurityContext
			if uid(psc.RunAsUser) != "65532" || uid(psc.RunAsGroup) != "65532" || uid(psc.FSGroup) != "65532" {
				t.Errorf("%s: runAsUser/runAsGroup/fsGroup %s/%s/%s, want 65532", n, uid(psc.RunAsUser), uid(psc.RunAsGroup), uid(psc.FSGroup))
			}
		}
	})
	t.Run("openshift", func(t *testing.T) {
		t.Parallel()
		specs := podSpecs(t, mustRender(t, parseValues(t, openShiftValues)))
		if len(specs) < 5 {
			t.Fatalf("%d pods rendered", len(specs))
		}
		for n, spec := range specs {
			checkPodSecurity(t, n, spec)
			psc := spec.SecurityContext
			if psc.RunAsUser != nil || psc.RunAsGroup != nil || psc.FSGroup != nil {
				t.Errorf("%s: runAsUser/runAsGroup/fsGroup %s/%s/%s, want all unset", n, uid(psc.RunAsUser), uid(psc.RunAsGroup), uid(psc.FSGroup))
			}
			if c := spec.Containers[0].SecurityContext; c.RunAsUser != nil {
				t.Errorf("%s: container runAsUser %d, want unset", n, *c.RunAsUser)
			}
		}
	})
	t.Run("per service", func(t *testing.T) {
		t.Parallel()
		r := mustRender(t, parseValues(t, `
kubeReconciler:
  podSecurityContext: {runAsUser: 1000700000, supplementalGroups: [5555]}
  containerSecurityContext: {runAsUser: 1000700000}
`))
		for n, spec := range podSpecs(t, r) {
			checkPodSecurity(t, n, spec)
			want, wantCtr := "65532", "unset"
			if n == name("kube-reconciler") {
				want, wantCtr = "1000700000", "1000700000"
				if !slices.Equal(spec.SecurityContext.SupplementalGroups, []int64{5555}) {
					t.Errorf("%s: supplementalGroups %v, want [5555]", n, spec.SecurityContext.SupplementalGroups)
				}
			}
			if got := uid(spec.SecurityContext.RunAsUser); got != want {
				t.Errorf("%s: pod runAsUser %s, want %s", n, got, want)
			}
			if got := uid(spec.Containers[0].SecurityContext.RunAsUser); got != wantCtr {
				t.Errorf("%s: container runAsUser %s, want %s", n, got, wantCtr)
			}
			if got := uid(spec.SecurityContext.RunAsGroup); got != "65532" {
				t.Errorf("%s: runAsGroup %s, want the global 65532", n, got)
			}
		}
	})
	for _, bad := range []struct{ values, wantErr string }{
		{`global: {podSecurityContext: {runAsUser: "65532"}}`, "/global/podSecurityContext/runAsUser"},
		{`informer: {containerSecurityContext: {readOnlyRootFilesystem: "yes"}}`, "/informer/containerSecurityContext/readOnlyRootFilesystem"},
		{`aguiProxy: {podSecurityContext: {runAsUser: -1}}`, "/aguiProxy/podSecurityContext/runAsUser"},
	} {
		if _, err := render(t, parseValues(t, bad.values)); err == nil || !strings.Contains(err.Error(), bad.wantErr) {
			t.Errorf("values %s: error %v, want one naming %s", bad.values, err, bad.wantErr)
		}
	}
}

// TestChartSpreadAndPriority: every Deployment spreads its replicas over
// nodes by default (kubernetes.io/hostname, maxSkew 1, ScheduleAnyway: a
// preference, so a one-node cluster still runs every replica), counting
// only the pods of its own track and ReplicaSet; a service's
// topologySpreadConstraints replace the default ([] turns it off), a
// constraint without a labelSelector gets the Deployment's, and
// priorityClassName reaches the pod.
func TestChartSpreadAndPriority(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `
informer: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}
kubeReconciler: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}
aguiProxy:
  canary: {enabled: true, image: {tag: 0.2.0-rc.1}}
  priorityClassName: ambient-high
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}
    - {maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: x}}}
eventTally: {topologySpreadConstraints: []}
`))
	deps := r.ofKind("Deployment")
	if len(deps) < 8 {
		t.Fatalf("%d Deployments rendered, want every service with its canary or shadow", len(deps))
	}
	for _, u := range deps {
		d := toTyped[appsv1.Deployment](t, u)
		spec := d.Spec.Template.Spec
		own := &metav1.LabelSelector{MatchLabels: d.Spec.Selector.MatchLabels}
		comp := d.Spec.Template.Labels["app.kubernetes.io/component"]
		var want []corev1.TopologySpreadConstraint
		wantPriority := ""
		switch comp {
		case "agui-proxy":
			want = []corev1.TopologySpreadConstraint{
				{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: own, MatchLabelKeys: []string{"pod-template-hash"}},
				{MaxSkew: 2, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}},
			}
			wantPriority = "ambient-high"
		case "event-tally":
		default:
			want = []corev1.TopologySpreadConstraint{
				{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: own, MatchLabelKeys: []string{"pod-template-hash"}},
			}
		}
		if diff := cmp.Diff(want, spec.TopologySpreadConstraints); diff != "" {
			t.Errorf("%s: topologySpreadConstraints (-want +got):\n%s", d.Name, diff)
		}
		if spec.PriorityClassName != wantPriority {
			t.Errorf("%s: priorityClassName %q, want %q", d.Name, spec.PriorityClassName, wantPriority)
		}
	}
	for _, bad := range []struct{ values, wantErr string }{
		{`informer: {topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: Sometimes}]}`, "/informer/topologySpreadConstraints/0/whenUnsatisfiable"},
		{`informer: {topologySpreadConstraints: [{maxSkew: 0, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway}]}`, "/informer/topologySpreadConstraints/0/maxSkew"},
		{`informer: {topologySpreadConstraints: [{maxSkew: 1, whenUnsatisfiable: ScheduleAnyway}]}`, "topologyKey"},
		{`eventTally: {priorityClassName: "High Priority"}`, "/eventTally/priorityClassName"},
	} {
		if _, err := render(t, parseValues(t, bad.values)); err == nil || !strings.Contains(err.Error(), bad.wantErr) {
			t.Errorf("values %s: error %v, want one naming %s", bad.values, err, bad.wantErr)
		}
	}
}

// TestChartTestImageFollowsGlobalRegistry: the `helm test` image is pulled
// from global.image.registry (a mirror, an air-gapped registry) like every
// other image of the chart, unless tests.image.registry names its own;
// without either it is Docker Hub's.
func TestChartTestImageFollowsGlobalRegistry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ values, want string }{
		{``, "docker.io/library/busybox:1.37.0"},
		{`global: {image: {registry: mirror.example.com:5000}}`, "mirror.example.com:5000/library/busybox:1.37.0"},
		{`{global: {image: {registry: mirror.example.com}}, tests: {image: {registry: quay.io, repository: prometheus/busybox, tag: glibc}}}`, "quay.io/prometheus/busybox:glibc"},
	} {
		pods := mustRender(t, parseValues(t, tc.values)).ofKind("Pod")
		if len(pods) != 1 {
			t.Fatalf("values %s: %d test pods", tc.values, len(pods))
		}
		p := toTyped[corev1.Pod](t, pods[0])
		if got := p.Spec.Containers[0].Image; got != tc.want {
			t.Errorf("values %s: test image %q, want %q", tc.values, got, tc.want)
		}
	}
}

// shutdownMargin is what the agui-proxy needs after SHUTDOWN_TIMEOUT
// before the kubelet's SIGKILL: the 2 s stream drain, the NATS drain and
// the telemetry flush.
const shutdownMargin = 10 * time.Second

// TestChartAguiProxyStreamsEndWithinGrace: open SSE streams get the pod's
// whole grace period less the margin the rest of the shutdown needs
// (SHUTDOWN_TIMEOUT = terminationGracePeriodSeconds - 10 s): they end
// cleanly when it runs out, never cut by the SIGKILL (SHUTDOWN_TIMEOUT
// longer than the grace) nor earlier than the values promise (the
// service's 25 s default under a longer grace). A grace too short for the
// margin is refused.
func TestChartAguiProxyStreamsEndWithinGrace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		values string
		grace  time.Duration
		delay  time.Duration
	}{
		{``, 60 * time.Second, 5 * time.Second},
		{`aguiProxy: {terminationGracePeriodSeconds: 20, canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}`, 20 * time.Second, 5 * time.Second},
		{`aguiProxy: {terminationGracePeriodSeconds: 3600}`, time.Hour, 5 * time.Second},
		{`aguiProxy: {terminationGracePeriodSeconds: 11, shutdownDelaySeconds: 0}`, 11 * time.Second, 0},
	} {
		r := mustRender(t, parseValues(t, tc.values))
		for _, u := range r.ofKind("Deployment") {
			d := toTyped[appsv1.Deployment](t, u)
			if d.Spec.Template.Labels["app.kubernetes.io/component"] != "agui-proxy" {
				continue
			}
			grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
			if grace != tc.grace {
				t.Errorf("values %s: %s grace %s, want %s", tc.values, d.Name, grace, tc.grace)
			}
			env := envOf(t, r, d)
			streams := durationEnv(t, env, "SHUTDOWN_TIMEOUT", 25*time.Second) // the service's default
			delay := durationEnv(t, env, "SHUTDOWN_DELAY", 0)
			if delay != tc.delay {
				t.Errorf("values %s: %s: new connections accepted for %s after SIGTERM (SHUTDOWN_DELAY), want %s", tc.values, d.Name, delay, tc.delay)
			}
			if streams != grace-delay-shutdownMargin {
				t.Errorf("values %s: %s: open streams end after %s (SHUTDOWN_TIMEOUT), want the grace period %s less the delay %s and %s", tc.values, d.Name, streams, grace, delay, shutdownMargin)
			}
		}
	}
	for _, values := range []string{
		`aguiProxy: {terminationGracePeriodSeconds: 10, shutdownDelaySeconds: 0}`,
		`aguiProxy: {terminationGracePeriodSeconds: 15}`, // 5 s delay: 16 at least
	} {
		_, err := render(t, parseValues(t, values))
		if err == nil || !strings.Contains(err.Error(), "aguiProxy.terminationGracePeriodSeconds") {
			t.Errorf("values %s (no time for streams): error %v, want one naming aguiProxy.terminationGracePeriodSeconds", values, err)
		}
	}
}

// durationEnv is the duration env[name], def when unset.
func durationEnv(t *testing.T, env map[string]string, name string, def time.Duration) time.Duration {
	t.Helper()
	v, ok := env[name]
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s %q: %v", name, v, err)
	}
	return d
}

// podEnv is a container's environment as the kubelet builds it: the
// ConfigMaps of envFrom, then env in order, each $(NAME) replaced by an
// earlier variable's value ($$ is a literal $), field references resolved
// for a pod of d named pod on node.
func podEnv(t *testing.T, r rendered, d *appsv1.Deployment, pod, node string) map[string]string {
	t.Helper()
	env := map[string]string{}
	ctr := d.Spec.Template.Spec.Containers[0]
	for k, v := range envOf(t, r, d) {
		if !slices.ContainsFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == k }) {
			env[k] = v // from envFrom
		}
	}
	fields := map[string]string{"metadata.name": pod, "metadata.namespace": d.Namespace, "spec.nodeName": node, "status.podIP": "10.244.1.17"}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expandVars(e.Value, env)
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("%s: env %s: unexpected fieldRef %s", d.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		default:
			env[e.Name] = "valueFrom"
		}
	}
	return env
}

// expandVars expands $(NAME) references to defined variables as the
// kubelet does (k8s.io/kubernetes third_party/forked/golang/expansion):
// $$ is a literal $, an undefined or unclosed reference stays as written.
func expandVars(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			ref := s[i+2 : i+2+end]
			if v, ok := env[ref]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + ref + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// TestExpandVars: expandVars follows the kubelet's rules.
func TestExpandVars(t *testing.T) {
	t.Parallel()
	env := map[string]string{"A": "a", "B": "b$"}
	for in, want := range map[string]string{
		"$(A)-$(B)": "a-b$", "$$(A)": "$(A)", "$(C)": "$(C)", "x$": "x$", "$(A": "$(A", "$A": "$A", "": "",
	} {
		if got := expandVars(in, env); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}

// resourceAttrs parses OTEL_RESOURCE_ATTRIBUTES as the OTel SDK does
// (pairs split at ",", keys and values trimmed, values URL-decoded; a later
// pair replaces an earlier one of its key).
func resourceAttrs(t *testing.T, v string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			t.Errorf("OTEL_RESOURCE_ATTRIBUTES %q: entry %q has no =", v, p)
			continue
		}
		dec, err := url.PathUnescape(strings.TrimSpace(val))
		if err != nil {
			t.Errorf("OTEL_RESOURCE_ATTRIBUTES %q: %q: %v", v, val, err)
		}
		out[strings.TrimSpace(k)] = dec
	}
	return out
}

// TestChartOTelResourceAttributes: every container of every track gets
// OTEL_RESOURCE_ATTRIBUTES naming its pod (k8s.pod.name and
// service.instance.id), namespace and node from the Downward API, so
// spans and metrics pushed over OTLP say where they come from; then
// global.otelResourceAttributes (values URL-encoded by the chart) and a
// service's extraEnv OTEL_RESOURCE_ATTRIBUTES, merged into the one
// variable (set twice, the variable would be refused by server-side apply
// or one would silently replace the other). An extraEnv value the chart
// cannot merge (valueFrom) is refused.
func TestChartOTelResourceAttributes(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `
global: {otelResourceAttributes: {deployment.environment.name: "prod eu/1", team: ambient}}
informer: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}
eventTally:
  extraEnv: [{name: OTEL_RESOURCE_ATTRIBUTES, value: "cost.center=42,team=tally"}]
  canary: {enabled: true, image: {tag: 0.2.0-rc.1}, extraEnv: [{name: OTEL_RESOURCE_ATTRIBUTES, value: "canary=yes"}]}
`))
	deps := r.ofKind("Deployment")
	if len(deps) < 8 {
		t.Fatalf("%d Deployments rendered, want every service with its canary or shadow", len(deps))
	}
	for _, u := range deps {
		d := toTyped[appsv1.Deployment](t, u)
		n := 0
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "OTEL_RESOURCE_ATTRIBUTES" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: OTEL_RESOURCE_ATTRIBUTES set %d times, want once", d.Name, n)
		}
		pod := d.Name + "-5d8f9c7b6-x2x4q"
		got := resourceAttrs(t, podEnv(t, r, d, pod, "node-a")["OTEL_RESOURCE_ATTRIBUTES"])
		want := map[string]string{
			"k8s.pod.name": pod, "service.instance.id": pod, "k8s.namespace.name": releaseNamespace, "k8s.node.name": "node-a",
			"deployment.environment.name": "prod eu/1", "team": "ambient",
		}
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == "event-tally" {
			want["team"], want["cost.center"] = "tally", "42"
			if d.Spec.Template.Labels["ambient-code.io/track"] == "canary" {
				want["canary"] = "yes"
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: resource attributes (-want +got):\n%s", d.Name, diff)
		}
	}
	for _, bad := range []struct{ values, wantErr string }{
		{`informer: {extraEnv: [{name: OTEL_RESOURCE_ATTRIBUTES, valueFrom: {configMapKeyRef: {name: x, key: y}}}]}`, "informer.extraEnv: OTEL_RESOURCE_ATTRIBUTES"},
		{`global: {otelResourceAttributes: {"bad key": x}}`, "otelResourceAttributes"},
		{`global: {otelResourceAttributes: {"a,b": x}}`, "otelResourceAttributes"},
	} {
		if _, err := render(t, parseValues(t, bad.values)); err == nil || !strings.Contains(err.Error(), bad.wantErr) {
			t.Errorf("values %s: error %v, want one naming %s", bad.values, err, bad.wantErr)
		}
	}
}
