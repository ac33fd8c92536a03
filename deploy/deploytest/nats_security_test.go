package deploytest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The nats-io chart (the bundled NATS) is not vendored, so the tests cannot
// render its pods. natsStandIn takes its place as the loaded chart's nats
// dependency: Helm gives it the context it gives the real one (.Values the
// nats: block as a chartutil.Values, global.* copied in, keys set to null
// removed), and its one template evaluates there what the real chart does
// with this chart's hooks: the JSON patch lists it applies to its pod
// templates and containers (podTemplate.patch, container.patch,
// reloader.patch, promExporter.patch, natsBox.podTemplate.patch,
// natsBox.container.patch), each "$tplYamlSpread" entry run through tpl in
// that context and spread into the list, as its tplYaml does. natsPods then
// applies them to natsServerPod and natsBoxPod, the pods the nats chart
// 1.3 renders before its patches, with what matters here: containers,
// volumes and mounts, and no security context (it sets none).
const natsStandInTemplate = `{{- define "standin.patch" -}}
{{- $out := list -}}
{{- range .patch -}}
{{- if and (kindIs "map" .) (hasKey . "$tplYamlSpread") -}}
{{- $out = concat $out (tpl (get . "$tplYamlSpread") $.ctx | fromYamlArray) -}}
{{- else -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
{{- $box := .Values.natsBox | default dict -}}
apiVersion: v1
kind: ConfigMap
metadata: {name: zz-nats-standin}
data:
  podTemplate: {{ include "standin.patch" (dict "patch" (.Values.podTemplate | default dict).patch "ctx" $) | quote }}
  container: {{ include "standin.patch" (dict "patch" (.Values.container | default dict).patch "ctx" $) | quote }}
  reloader: {{ include "standin.patch" (dict "patch" (.Values.reloader | default dict).patch "ctx" $) | quote }}
  promExporter: {{ include "standin.patch" (dict "patch" (.Values.promExporter | default dict).patch "ctx" $) | quote }}
  natsBoxPodTemplate: {{ include "standin.patch" (dict "patch" ($box.podTemplate | default dict).patch "ctx" $) | quote }}
  natsBoxContainer: {{ include "standin.patch" (dict "patch" ($box.container | default dict).patch "ctx" $) | quote }}
  natsBoxEnv: {{ ($box.container | default dict).env | default dict | toJson | quote }}
  enabled: {{ dict "reloader" .Values.reloader.enabled "promExporter" .Values.promExporter.enabled "natsBox" $box.enabled | toJson | quote }}
`

// natsStandIn is the stand-in nats chart, with the real one's defaults of
// the values it reads (reloader on, promExporter off, nats-box on).
func natsStandIn() *chart.Chart {
	return &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "nats", Version: "1.3.0", AppVersion: "2.11.0"},
		Values: map[string]any{
			"reloader":     map[string]any{"enabled": true},
			"promExporter": map[string]any{"enabled": false},
			"natsBox":      map[string]any{"enabled": true},
		},
		Templates: []*chart.File{{Name: "templates/standin.yaml", Data: []byte(natsStandInTemplate)}},
	}
}

// natsServerPod is a pod of the nats chart's StatefulSet (release acp, the
// defaults of values.yaml: cluster and JetStream on a PVC) before its
// container and pod patches, as the StatefulSet controller creates it (with
// the PVC's volume), with its nats container only: natsPods adds the
// reloader's and the exporter's after the server container's patches.
func natsServerPod(reloader bool) map[string]any {
	nats := map[string]any{
		"name": "nats", "image": "nats:2.11.0-alpine",
		"args": []any{"--config", "/etc/nats-config/nats.conf"},
		"ports": []any{
			map[string]any{"name": "nats", "containerPort": 4222},
			map[string]any{"name": "cluster", "containerPort": 6222},
			map[string]any{"name": "monitor", "containerPort": 8222},
		},
		"volumeMounts": []any{
			map[string]any{"name": "config", "mountPath": "/etc/nats-config"},
			map[string]any{"name": "acp-nats-js", "mountPath": "/data/jetstream"},
		},
	}
	volumes := []any{
		map[string]any{"name": "config", "configMap": map[string]any{"name": "acp-nats-config"}},
		map[string]any{"name": "acp-nats-js", "persistentVolumeClaim": map[string]any{"claimName": "acp-nats-js-acp-nats-0"}},
	}
	spec := map[string]any{"containers": []any{nats}, "volumes": volumes}
	if reloader {
		nats["volumeMounts"] = append(nats["volumeMounts"].([]any), map[string]any{"name": "pid", "mountPath": "/var/run/nats"})
		spec["volumes"] = append(volumes, map[string]any{"name": "pid", "emptyDir": map[string]any{}})
		spec["shareProcessNamespace"] = true
	}
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "acp-nats-0", "namespace": releaseNamespace, "labels": map[string]any{
			"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": releaseName, "app.kubernetes.io/component": "nats",
		}},
		"spec": spec,
	}
}

// natsBoxPod is a pod of the nats chart's nats-box Deployment before its
// patches, with env its container's env (natsBox.container.env).
func natsBoxPod(env map[string]any) map[string]any {
	var envList []any
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range env {
			if !yield(k) {
				return
			}
		}
	}) {
		envList = append(envList, map[string]any{"name": k, "value": fmt.Sprint(env[k])})
	}
	box := map[string]any{
		"name": "nats-box", "image": "natsio/nats-box:0.18.0",
		"command": []any{"sh", "-ec", `mkdir -p "$XDG_CONFIG_HOME/nats"; exec sh -ec "$0"`},
		"args":    []any{"trap true INT TERM; sleep infinity & wait"},
		"volumeMounts": []any{
			map[string]any{"name": "contexts", "mountPath": "/etc/nats-contexts"},
			map[string]any{"name": "contents", "mountPath": "/etc/nats-contents"},
		},
	}
	if envList != nil {
		box["env"] = envList
	}
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "acp-nats-box-7c9d5b8f4-q2x7k", "namespace": releaseNamespace, "labels": map[string]any{
			"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": releaseName, "app.kubernetes.io/component": "nats-box",
		}},
		"spec": map[string]any{
			"containers": []any{box},
			"volumes": []any{
				map[string]any{"name": "contexts", "secret": map[string]any{"secretName": "acp-nats-box-contexts"}},
				map[string]any{"name": "contents", "secret": map[string]any{"secretName": "acp-nats-box-contents"}},
			},
		},
	}
}

// natsPodSet is what the nats chart would run with some values: the
// StatefulSet's pod and, with natsBox.enabled, the nats-box pod.
type natsPodSet struct {
	server *unstructured.Unstructured
	box    *unstructured.Unstructured // nil when nats-box is off
}

// pods returns the pods, by name.
func (s natsPodSet) pods() []*unstructured.Unstructured {
	if s.box == nil {
		return []*unstructured.Unstructured{s.server}
	}
	return []*unstructured.Unstructured{s.server, s.box}
}

// natsPods renders the chart with the stand-in nats chart and builds the
// NATS pods with the patches it produced, as the nats chart does: the
// server container's, then the reloader's (its mounts: the server's under
// /etc/, and the PID directory), then the exporter's, then the pod
// template's.
func natsPods(t *testing.T, vals map[string]any) (natsPodSet, error) {
	t.Helper()
	c := loadChart(t)
	c.AddDependency(natsStandIn())
	r, err := renderChart(t, c, vals)
	if err != nil {
		return natsPodSet{}, err
	}
	cm := r.find("ConfigMap", "zz-nats-standin")
	if cm == nil {
		t.Fatal("the stand-in nats chart was not rendered")
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	patches := func(key string) []any {
		var ops []any
		if err := json.Unmarshal([]byte(data[key]), &ops); err != nil {
			t.Fatalf("%s patches %q: %v", key, data[key], err)
		}
		return ops
	}
	var enabled struct{ Reloader, PromExporter, NatsBox bool }
	if err := json.Unmarshal([]byte(data["enabled"]), &enabled); err != nil {
		t.Fatalf("enabled %q: %v", data["enabled"], err)
	}
	pod := natsServerPod(enabled.Reloader)
	spec := pod["spec"].(map[string]any)
	server := jsonPatchAdd(t, spec["containers"].([]any)[0], patches("container")).(map[string]any)
	containers := []any{server}
	if enabled.Reloader {
		mounts := []any{map[string]any{"name": "pid", "mountPath": "/var/run/nats"}}
		for _, m := range server["volumeMounts"].([]any) {
			if p := m.(map[string]any)["mountPath"].(string); strings.HasPrefix(p, "/etc/") {
				mounts = append(mounts, m)
			}
		}
		reloader := map[string]any{
			"name": "reloader", "image": "natsio/nats-server-config-reloader:0.16.0",
			"args":         []any{"-pid", "/var/run/nats/nats.pid", "-config", "/etc/nats-config/nats.conf"},
			"volumeMounts": mounts,
		}
		containers = append(containers, jsonPatchAdd(t, reloader, patches("reloader")))
	}
	if enabled.PromExporter {
		exporter := map[string]any{
			"name": "prom-exporter", "image": "natsio/prometheus-nats-exporter:0.16.0",
			"args":  []any{"-port=7777", "-connz", "-routez", "-subz", "-varz", "-prefix=nats", "-use_internal_server_id", "http://localhost:8222/"},
			"ports": []any{map[string]any{"name": "prom-metrics", "containerPort": 7777}},
		}
		containers = append(containers, jsonPatchAdd(t, exporter, patches("promExporter")))
	}
	spec["containers"] = containers
	set := natsPodSet{server: &unstructured.Unstructured{Object: jsonPatchAdd(t, pod, patches("podTemplate")).(map[string]any)}}
	if enabled.NatsBox {
		var env map[string]any
		if err := json.Unmarshal([]byte(data["natsBoxEnv"]), &env); err != nil {
			t.Fatalf("natsBoxEnv %q: %v", data["natsBoxEnv"], err)
		}
		box := natsBoxPod(env)
		bspec := box["spec"].(map[string]any)
		bspec["containers"] = []any{jsonPatchAdd(t, bspec["containers"].([]any)[0], patches("natsBoxContainer"))}
		set.box = &unstructured.Unstructured{Object: jsonPatchAdd(t, box, patches("natsBoxPodTemplate")).(map[string]any)}
	}
	return set, nil
}

// jsonPatchAdd applies JSON patch (RFC 6902) operations to doc and returns
// it; only "add" is supported (the only operation the hooks use): a member
// of an object set or replaced, an array element inserted ("-" appends).
func jsonPatchAdd(t *testing.T, doc any, ops []any) any {
	t.Helper()
	for _, o := range ops {
		op, _ := o.(map[string]any)
		path, _ := op["path"].(string)
		if op["op"] != "add" || !strings.HasPrefix(path, "/") {
			t.Fatalf("unsupported patch operation %v", o)
		}
		var tokens []string
		for _, tok := range strings.Split(path[1:], "/") {
			tokens = append(tokens, strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~"))
		}
		var add func(node any, tokens []string) any
		add = func(node any, tokens []string) any {
			last := len(tokens) == 1
			switch n := node.(type) {
			case map[string]any:
				if last {
					n[tokens[0]] = op["value"]
					return n
				}
				child, ok := n[tokens[0]]
				if !ok {
					t.Fatalf("patch %v: no %q", o, tokens[0])
				}
				n[tokens[0]] = add(child, tokens[1:])
				return n
			case []any:
				i := len(n)
				if tokens[0] != "-" {
					var err error
					if i, err = strconv.Atoi(tokens[0]); err != nil || i < 0 || i > len(n) {
						t.Fatalf("patch %v: bad index %q", o, tokens[0])
					}
				}
				if last {
					return slices.Insert(n, i, op["value"])
				}
				if i == len(n) {
					t.Fatalf("patch %v: no element %q", o, tokens[0])
				}
				n[i] = add(n[i], tokens[1:])
				return n
			default:
				t.Fatalf("patch %v: %q is in a %T", o, tokens[0], node)
				return nil
			}
		}
		doc = add(doc, tokens)
	}
	return doc
}

// natsSecurityCase is a value set and what the NATS pods must then run with.
type natsSecurityCase struct {
	name, values string
	uid          string          // runAsUser, runAsGroup and fsGroup of the pods ("unset": none)
	writableRoot map[string]bool // containers whose root file system may be written
	containers   []string        // every container of the NATS pods, server pod first
}

var natsSecurityCases = []natsSecurityCase{
	{name: "defaults", uid: "65532", containers: []string{"nats", "reloader"}},
	// The OpenShift setting of the README: global and nats nulls.
	{name: "openshift", values: openShiftValues, uid: "unset", containers: []string{"nats", "reloader"}},
	{name: "everything on", values: `nats: {promExporter: {enabled: true}, natsBox: {enabled: true}}`, uid: "65532", containers: []string{"nats", "reloader", "prom-exporter", "nats-box"}},
	{name: "openshift everything on", values: openShiftValues + `  promExporter: {enabled: true}
  natsBox: {enabled: true}
`, uid: "unset", containers: []string{"nats", "reloader", "prom-exporter", "nats-box"}},
	// Set global values reach the nats chart (nulls do not).
	{name: "global uid", values: `global: {podSecurityContext: {runAsUser: 1000700000, runAsGroup: 1000700000, fsGroup: 1000700000}}`, uid: "1000700000", containers: []string{"nats", "reloader"}},
	// Without the reloader the server writes its PID file under /var/run.
	{name: "no reloader", values: `nats: {reloader: {enabled: false}}`, uid: "65532", writableRoot: map[string]bool{"nats": true}, containers: []string{"nats"}},
	// NATS's own, merged over the global ones; the services keep the global.
	{name: "nats own", values: `nats: {podSecurityContext: {runAsUser: 1000700000, runAsGroup: 1000700000, fsGroup: 1000700000}}`, uid: "1000700000", containers: []string{"nats", "reloader"}},
	{name: "nats own null", values: `nats: {podSecurityContext: {runAsUser: null, runAsGroup: null, fsGroup: null}, natsBox: {enabled: true}}`, uid: "unset", containers: []string{"nats", "reloader", "nats-box"}},
}

// TestChartNATSSecurityContexts: the NATS pods (the nats chart's, which
// sets no security context of its own) get the chart's: the restricted Pod
// Security profile by default (runAsNonRoot with UID and GID 65532, seccomp
// RuntimeDefault; every container without privilege escalation or
// capabilities, its root file system read-only), following
// global.podSecurityContext and global.containerSecurityContext, so the
// OpenShift setting (runAsUser, runAsGroup and fsGroup null) leaves the UID
// to the platform for NATS too, with nats.podSecurityContext and
// nats.containerSecurityContext merged over them. The same pods are sent to
// a real kube-apiserver enforcing "restricted" in TestChartOnKubeAPIServer.
func TestChartNATSSecurityContexts(t *testing.T) {
	t.Parallel()
	for _, tc := range natsSecurityCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			set, err := natsPods(t, parseValues(t, tc.values))
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			var names []string
			for _, u := range set.pods() {
				pod := toTyped[corev1.Pod](t, u)
				checkNATSPodSecurity(t, pod, tc)
				for _, c := range pod.Spec.Containers {
					names = append(names, c.Name)
				}
			}
			if !slices.Equal(names, tc.containers) {
				t.Errorf("NATS containers %v, want %v", names, tc.containers)
			}
		})
	}
	// Helm passes the nats chart its globals without the nulls: the global
	// OpenShift setting alone would leave the NATS pods at UID 65532, so it
	// is refused, naming what to set.
	for _, tc := range []struct{ values, wantErr string }{
		{`global: {podSecurityContext: {runAsUser: null, runAsGroup: null, fsGroup: null}}`, "Set nats.podSecurityContext.fsGroup to null too"},
		{`{global: {podSecurityContext: {runAsUser: null}}, nats: {podSecurityContext: {runAsGroup: null}}}`, "global.podSecurityContext.runAsUser is null, but Helm gives the nats chart its globals without the keys set to null: the NATS pods would still get runAsUser 65532. Set nats.podSecurityContext.runAsUser to null too"},
		{`global: {containerSecurityContext: {readOnlyRootFilesystem: null}}`, "Set nats.containerSecurityContext.readOnlyRootFilesystem to null too"},
	} {
		if _, err := natsPods(t, parseValues(t, tc.values)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("values %s: error %v, want one containing %q", tc.values, err, tc.wantErr)
		}
	}
	// Without the nats chart (not fetched, as in the other tests) nothing
	// is checked: the same values render.
	mustRender(t, parseValues(t, `global: {podSecurityContext: {runAsUser: null}}`))
	// The services keep the global UID when NATS has its own.
	for n, spec := range podSpecs(t, mustRender(t, parseValues(t, `nats: {podSecurityContext: {runAsUser: 1000700000}}`))) {
		if u := spec.SecurityContext.RunAsUser; u == nil || *u != 65532 {
			t.Errorf("%s: runAsUser %v with nats.podSecurityContext set, want the global 65532", n, u)
		}
	}
	if _, err := render(t, parseValues(t, `nats: {containerSecurityContext: {readOnlyRootFilesystem: "yes"}}`)); err == nil || !strings.Contains(err.Error(), "/nats/containerSecurityContext/readOnlyRootFilesystem") {
		t.Errorf("a bad nats.containerSecurityContext: error %v, want one naming it", err)
	}
}

// checkNATSPodSecurity checks one NATS pod against what tc expects.
func checkNATSPodSecurity(t *testing.T, pod *corev1.Pod, tc natsSecurityCase) {
	t.Helper()
	id := func(p *int64) string {
		if p == nil {
			return "unset"
		}
		return strconv.FormatInt(*p, 10)
	}
	psc := pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext is not restricted: %+v", pod.Name, psc)
		return
	}
	if id(psc.RunAsUser) != tc.uid || id(psc.RunAsGroup) != tc.uid || id(psc.FSGroup) != tc.uid {
		t.Errorf("%s: runAsUser/runAsGroup/fsGroup %s/%s/%s, want %s", pod.Name, id(psc.RunAsUser), id(psc.RunAsGroup), id(psc.FSGroup), tc.uid)
	}
	for _, c := range pod.Spec.Containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s/%s: no securityContext", pod.Name, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s/%s: allowPrivilegeEscalation not false", pod.Name, c.Name)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s/%s: capabilities not drop ALL", pod.Name, c.Name)
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			t.Errorf("%s/%s: not runAsNonRoot with seccomp RuntimeDefault: %+v", pod.Name, c.Name, sc)
		case sc.ReadOnlyRootFilesystem == nil || *sc.ReadOnlyRootFilesystem == tc.writableRoot[c.Name]:
			t.Errorf("%s/%s: readOnlyRootFilesystem %v, want %v", pod.Name, c.Name, sc.ReadOnlyRootFilesystem, !tc.writableRoot[c.Name])
		case sc.RunAsUser != nil:
			t.Errorf("%s/%s: container runAsUser %d, want it from the pod", pod.Name, c.Name, *sc.RunAsUser)
		}
	}
	// A read-only root needs the PID file on the emptyDir the reloader shares.
	for _, c := range pod.Spec.Containers {
		if c.Name != "nats" || c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
			continue
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/var/run/nats" }) {
			t.Errorf("%s/nats: read-only root without /var/run/nats mounted for the PID file", pod.Name)
		}
	}
}

// testNATSPodsAdmitted sends the NATS pods of every natsSecurityCases value
// set to the kube-apiserver (dry run) in the release namespace, which
// enforces the restricted Pod Security Standard: each must be admitted.
// Dropping a key of the profile for NATS (allowPrivilegeEscalation) must get
// them refused, so the check has teeth.
func testNATSPodsAdmitted(ctx context.Context, t *testing.T, k *kube) {
	w := &warnings{}
	cl := k.client(t, k.admin, w)
	for _, tc := range natsSecurityCases {
		set, err := natsPods(t, parseValues(t, tc.values))
		if err != nil {
			t.Fatalf("%s: render: %v", tc.name, err)
		}
		for _, p := range set.pods() {
			if err := k.apply(ctx, cl, p, true); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			for _, msg := range w.take() {
				t.Errorf("%s: Pod %s: API server warning: %s", tc.name, p.GetName(), msg)
			}
		}
	}
	set, err := natsPods(t, parseValues(t, `nats: {containerSecurityContext: {allowPrivilegeEscalation: null}}`))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	if err := k.apply(ctx, cl, set.server, true); err == nil || !strings.Contains(err.Error(), "allowPrivilegeEscalation") {
		t.Errorf("a NATS pod allowing privilege escalation: error %v, want Pod Security's refusal", err)
	}
	w.take()
}
