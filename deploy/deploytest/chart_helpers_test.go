package deploytest

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const (
	releaseName      = "acp"
	releaseNamespace = "ambient-system"
)

// repoRoot is the repository root, found from this file's location so tests
// work from any working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func chartDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(repoRoot(t), "helm", "ambient-control-plane")
}

func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// valueSet is one set of values the chart is rendered, linted and applied with.
type valueSet struct {
	name string
	vals map[string]any
}

// valueSets are the value sets of issue 7: defaults, external NATS, all
// canaries, HA and the optional monitoring/network objects; and of issue 12:
// local runners as an opt-in, NATS without per-service users, an existing
// NATS passwords Secret; and files mounted with extraVolumes for TLS.
func valueSets(t testing.TB) []valueSet {
	t.Helper()
	return []valueSet{
		{name: "defaults", vals: map[string]any{}},
		{name: "local-runners", vals: parseValues(t, localRunners)},
		{name: "nats-open", vals: parseValues(t, `nats: {ambientAuth: {enabled: false}}`)},
		{name: "nats-existing-secret", vals: parseValues(t, `nats: {ambientAuth: {existingSecret: acp-nats-users}}`)},
		{name: "external-nats", vals: parseValues(t, `
nats: {enabled: false}
externalNats:
  url: nats://nats-0.nats.messaging:4222,nats://nats-1.nats.messaging:4222
  auth: {type: creds, secretName: nats-creds}
`)},
		{name: "external-nats-userpass", vals: parseValues(t, `
nats: {enabled: false}
externalNats:
  url: tls://nats.example.com:4222
  auth: {type: userPassword, secretName: nats-user}
`)},
		// Secrets as files: the token of an external NATS and the API token
		// (its own Secret name and key) mounted in acp-secrets.
		{name: "external-nats-token", vals: localRunnersWith(t, `
nats: {enabled: false}
externalNats:
  url: nats://nats.example.com:4222
  auth: {type: token, secretName: nats-token, tokenKey: nats.token}
api: {tokenSecret: {name: api-creds, key: grpc-token}}
`)},
		{name: "canaries", vals: localRunnersWith(t, `
informer: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}
kubeReconciler: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "0-1"}}
runnerManager: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "2"}}
eventTally: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "0,3"}}
aguiProxy: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}, replicas: 1}}
`)},
		{name: "ha", vals: parseValues(t, `
informer: {replicas: 3}
kubeReconciler: {replicas: 3, sessionSelector: none}
runnerManager: {enabled: true, replicas: 3, hpa: {enabled: true, minReplicas: 3, maxReplicas: 9}}
aguiProxy: {replicas: 3, hpa: {enabled: true, minReplicas: 3, maxReplicas: 6}}
eventTally: {replicas: 3}
`)},
		{name: "sessions-on-kube", vals: parseValues(t, `
kubeReconciler: {sessionSelector: all}
runnerManager: {enabled: false}
aguiProxy: {enabled: false}
`)},
		{name: "split-by-project", vals: parseValues(t, `
kubeReconciler: {sessionSelector: "projects=team-a,team-b"}
runnerManager: {enabled: true, projects: [sandbox]}
`)},
		{name: "monitoring-netpol", vals: localRunnersWith(t, `
metrics: {serviceMonitor: {enabled: true, labels: {release: prometheus}}, prometheusRule: {enabled: true}, dashboard: {enabled: true}}
global: {otlpEndpoint: "http://otel-collector.monitoring:4317", otlpProtocol: grpc}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  otlpTo: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  natsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: nats-admin}}}]
  kubeAPIServer: {cidrs: [10.96.0.1/32]}
aguiProxy: {auth: {mode: jwt, jwt: {jwksURL: "https://id.example.com/jwks.json", issuer: "https://id.example.com", audience: ambient}}}
`)},
		{name: "authz-kube", vals: parseValues(t, `
networkPolicy: {enabled: true, kubeAPIServer: {cidrs: [10.96.0.1/32]}}
aguiProxy:
  auth: {mode: jwt, jwt: {jwksURL: "https://id.example.com/jwks.json", issuer: "https://id.example.com", audience: ambient, groupsClaim: roles}}
  authz: {mode: kube, cacheTTL: 5s}
  runnerAllowedNetworks: [10.244.0.0/16]
`)},
		// TLS with a private CA and a NATS client certificate, as files
		// mounted through global and per-service extraVolumes, named by
		// extraEnv (AMBIENT_GRPC_CA_FILE only where the API client reads it);
		// with every canary and the shadow tracks, which get them too.
		{name: "extra-files-tls", vals: localRunnersWith(t, `
api: {useTLS: true}
nats: {enabled: false}
externalNats: {url: "tls://nats.example.com:4222", auth: {type: creds, secretName: nats-creds}}
global:
  extraVolumes: [{name: acp-ca, secret: {secretName: acp-ca, defaultMode: 0440}}]
  extraVolumeMounts: [{name: acp-ca, mountPath: /etc/acp/ca, readOnly: true}]
informer:
  canary: {enabled: true, image: {tag: 0.2.0-rc.1}}
  extraEnv: [{name: AMBIENT_GRPC_CA_FILE, value: /etc/acp/ca/ca.crt}, {name: NATS_CA_FILE, value: /etc/acp/ca/ca.crt}]
kubeReconciler:
  canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "0-1"}
  extraEnv: [{name: AMBIENT_GRPC_CA_FILE, value: /etc/acp/ca/ca.crt}, {name: NATS_CA_FILE, value: /etc/acp/ca/ca.crt}]
runnerManager:
  extraVolumes: [{name: nats-client-tls, secret: {secretName: runner-manager-nats-tls, defaultMode: 0440}}]
  extraVolumeMounts: [{name: nats-client-tls, mountPath: /etc/acp/nats-client, readOnly: true}]
  extraEnv:
    - {name: AMBIENT_GRPC_CA_FILE, value: /etc/acp/ca/ca.crt}
    - {name: NATS_CA_FILE, value: /etc/acp/ca/ca.crt}
    - {name: NATS_CERT_FILE, value: /etc/acp/nats-client/tls.crt}
    - {name: NATS_KEY_FILE, value: /etc/acp/nats-client/tls.key}
aguiProxy:
  canary: {enabled: true, image: {tag: 0.2.0-rc.1}, replicas: 1}
  extraEnv: [{name: NATS_CA_FILE, value: /etc/acp/ca/ca.crt}]
eventTally:
  extraEnv: [{name: NATS_CA_FILE, value: /etc/acp/ca/ca.crt}]
`)},
		// Traces and metrics to two OTLP backends, headers (credentials)
		// from existing Secrets.
		{name: "otlp-per-signal", vals: localRunnersWith(t, otlpPerSignal)},
		// A platform that assigns UIDs itself (OpenShift), pods spread over
		// zones and prioritised, resource attributes of the user's merged
		// with the pod's, the API server's networks as single addresses,
		// the ambient API at an IPv6 address.
		{name: "platform-overrides", vals: mergeValues(localRunnersWith(t, openShiftValues), parseValues(t, `
global:
  otelResourceAttributes: {deployment.environment.name: "prod eu"}
  otlpEndpoint: "https://otlp.example.com"
  otlpMetrics: {protocol: http/protobuf}
networkPolicy: {kubeAPIServer: {cidrs: ["10.96.0.1", "fd00:10:96::1", "172.20.0.0/16"]}}
api: {grpcAddr: "[fd00:10:96::a]:9000"}
informer: {priorityClassName: system-cluster-critical}
kubeReconciler:
  podSecurityContext: {runAsUser: 1000700000}
  containerSecurityContext: {runAsUser: 1000700000}
aguiProxy:
  terminationGracePeriodSeconds: 11
  shutdownDelaySeconds: 0
  topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, minDomains: 2}]
eventTally:
  topologySpreadConstraints: []
  extraEnv: [{name: OTEL_RESOURCE_ATTRIBUTES, value: "team=tally"}]
`))},
		// The smallest or oddest values the schema and the services both
		// accept: the schema's rules must not be stricter than the services'.
		{name: "edge-values", vals: parseValues(t, `
global: {otlpEndpoint: "http://otel-collector.monitoring:4318/v1"}
api: {grpcAddr: "api.example.com:65535", tokenSecret: {name: ambient-api-token, key: .api_token-1}}
aguiProxy: {auth: {tokensSecret: {name: ambient-agui-tokens, key: tokens..txt}}}
informer:
  leaseTTL: 1000ms
  streamMaxAge: 0.1s
  resyncPeriod: "0"
  canary: {enabled: true, image: {tag: 0.2.0-rc.1}, subjectPrefix: ambient.events-shadow, eventsStream: AMBIENT_EVENTS_SHADOW2}
kubeReconciler:
  resyncInterval: 1s
  sessionSelector: "label=executor="
  namespaceDenyList: ["kube-*", "team-[a-c0-9]?", "[^a-m]*-sys"]
  canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "0", memberId: 0canary}
`)},
	}
}

// localRunners are the values of the local-runners opt-in (single-tenant or
// development use): the runner-manager runs every session, so no session
// becomes an AgenticSession.
const localRunners = `
kubeReconciler: {sessionSelector: none}
runnerManager: {enabled: true}
`

// localRunnersWith is localRunners merged with more values.
func localRunnersWith(t testing.TB, more string) map[string]any {
	t.Helper()
	return mergeValues(parseValues(t, localRunners), parseValues(t, more))
}

// mergeValues merges src into dst, maps key by key, as Helm merges values
// files; dst is returned.
func mergeValues(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = mergeValues(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func parseValues(t testing.TB, s string) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad test values: %v\n%s", err, s)
	}
	return m
}

// rendered is one rendered release: its objects (hooks included) in manifest order.
type rendered struct {
	objects []*unstructured.Unstructured
	notes   string
}

// render renders the chart like `helm install --dry-run` (client only): values
// are validated against values.schema.json and every template is executed.
// The chart on disk is rendered once per set of values in a test binary
// (renders); each call parses the manifests anew, so callers own what they get.
func render(t testing.TB, vals map[string]any) (rendered, error) {
	t.Helper()
	dir := chartDir(t)
	m, err := renders.get(valuesKey(vals), func() (manifests, error) {
		// Install mutates the chart (it sets the enabled dependencies), so
		// every render loads its own copy: parallel tests share nothing.
		c, err := loader.Load(dir)
		if err != nil {
			return manifests{}, fmt.Errorf("%w: load chart: %w", errCannotRender, err)
		}
		return renderManifests(c, releaseName, releaseNamespace, vals)
	})
	return parsed(t, m, err)
}

// renderChart is render for a chart already loaded (tests add templates).
func renderChart(t testing.TB, c *chart.Chart, vals map[string]any) (rendered, error) {
	t.Helper()
	return renderRelease(t, c, releaseName, releaseNamespace, vals)
}

// renderRelease is renderChart as release name in namespace.
func renderRelease(t testing.TB, c *chart.Chart, name, namespace string, vals map[string]any) (rendered, error) {
	t.Helper()
	m, err := renderManifests(c, name, namespace, vals)
	return parsed(t, m, err)
}

// errCannotRender is a failure of the rendering itself, not the chart
// refusing the values: it fails the test, where a refusal is returned.
var errCannotRender = errors.New("cannot render the chart")

// manifests are the documents of one rendered release (hooks included)
// in manifest order, and its notes.
type manifests struct {
	docs  []string
	notes string
}

// renderManifests renders c as release name in namespace. A refusal of the
// values is returned as it is; errCannotRender marks any other failure.
func renderManifests(c *chart.Chart, name, namespace string, vals map[string]any) (manifests, error) {
	inst := action.NewInstall(&action.Configuration{})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.ReleaseName = name
	inst.Namespace = namespace
	inst.IncludeCRDs = false
	kv, err := chartutil.ParseKubeVersion("v1.37.2")
	if err != nil {
		return manifests{}, fmt.Errorf("%w: parse kube version: %w", errCannotRender, err)
	}
	inst.KubeVersion = kv
	inst.APIVersions = chartutil.VersionSet{"monitoring.coreos.com/v1"}
	rel, err := inst.Run(c, vals)
	if err != nil {
		return manifests{}, err
	}
	split := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(split))
	for k := range split {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	out := manifests{docs: make([]string, 0, len(keys)+len(rel.Hooks)), notes: rel.Info.Notes}
	for _, k := range keys {
		out.docs = append(out.docs, split[k])
	}
	for _, h := range rel.Hooks {
		out.docs = append(out.docs, h.Manifest)
	}
	return out, nil
}

// parsed is the rendered release of m, or err; it fails t when the
// rendering itself failed (errCannotRender) or a manifest is not YAML.
func parsed(t testing.TB, m manifests, err error) (rendered, error) {
	t.Helper()
	if errors.Is(err, errCannotRender) {
		t.Fatal(err)
	}
	if err != nil {
		return rendered{}, err
	}
	out := rendered{notes: m.notes}
	for _, d := range m.docs {
		if strings.TrimSpace(d) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(d), &u.Object); err != nil {
			t.Fatalf("rendered manifest is not YAML: %v\n%s", err, d)
		}
		if len(u.Object) == 0 {
			continue
		}
		out.objects = append(out.objects, u)
	}
	return out, nil
}

// renderMemo holds one render of the chart on disk per set of values.
// Rendering is a pure function of the chart and the values (the random
// NATS passwords aside, which no test compares between renders), and the
// tests render the same sets again and again: each of valueSets in five
// or six tests, the defaults twenty times. Of a run's 600 renders, 145
// were repeats, at most of a CPU second each under -race (the package
// took 502 CPU seconds with them, 387 without). The memo keeps the
// manifests' text, not parsed objects, so a caller may change what it
// gets. Safe for concurrent use: parallel tests asking for the same
// values wait for the one render.
type renderMemo struct {
	mu sync.Mutex
	m  map[string]*memoEntry // by valuesKey; guarded by mu
}

type memoEntry struct {
	once sync.Once
	m    manifests
	err  error
}

// renders is the test binary's renderMemo: it is shared by tests, which
// are separate functions, so it cannot live in any one of them.
var renders = &renderMemo{m: map[string]*memoEntry{}}

// get returns the render of key, made by fn on the first call.
func (r *renderMemo) get(key string, fn func() (manifests, error)) (manifests, error) {
	r.mu.Lock()
	e, ok := r.m[key]
	if !ok {
		e = &memoEntry{}
		r.m[key] = e
	}
	r.mu.Unlock()
	e.once.Do(func() { e.m, e.err = fn() })
	return e.m, e.err
}

// valuesKey identifies a set of values with the Go types of its leaves:
// the schema tells an integer from a string or a float, so 1, "1" and
// 1.0 must not share a render (JSON or %v would print two of them alike).
func valuesKey(v any) string {
	var b strings.Builder
	writeValuesKey(&b, v)
	return b.String()
}

func writeValuesKey(b *strings.Builder, v any) {
	switch v := v.(type) {
	case map[string]any:
		b.WriteString("{")
		for _, k := range slices.Sorted(maps.Keys(v)) {
			fmt.Fprintf(b, "%q:", k)
			writeValuesKey(b, v[k])
			b.WriteString(",")
		}
		b.WriteString("}")
	case []any:
		b.WriteString("[")
		for _, e := range v {
			writeValuesKey(b, e)
			b.WriteString(",")
		}
		b.WriteString("]")
	default:
		fmt.Fprintf(b, "%T(%#v)", v, v)
	}
}

// mustRender renders and fails the test on error.
func mustRender(t testing.TB, vals map[string]any) rendered {
	t.Helper()
	r, err := render(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

// find returns the object of a kind and name, or nil.
func (r rendered) find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// ofKind returns every object of a kind.
func (r rendered) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// crdFilePrefix is where the chart keeps its CRDs: one source, rendered by
// templates/crds/ when crds.install is true and loaded by the
// kube-reconciler's envtest tests.
const crdFilePrefix = "files/crds/"

// crdObjects returns the chart's CRDs (files/crds/) as objects.
func crdObjects(t testing.TB, c *chart.Chart) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, f := range c.Files {
		if !strings.HasPrefix(f.Name, crdFilePrefix) {
			continue
		}
		for _, doc := range releaseutil.SplitManifests(string(f.Data)) {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("CRD %s: %v", f.Name, err)
			}
			if len(u.Object) > 0 {
				out = append(out, u)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("chart has no CRDs in %s", crdFilePrefix)
	}
	return out
}

// readFile reads a file relative to the repository root.
func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// TestRenderMemo: the memo of renders (renders) gives each caller objects
// of its own, so a test changing what it got cannot change what another
// test gets, and it renders apart values that differ only in a leaf's
// type, which the schema tells apart (1 and "1" print alike with %v, 1
// and 1.0 in JSON).
func TestRenderMemo(t *testing.T) {
	t.Parallel()
	first := mustRender(t, map[string]any{})
	first.objects[0].SetName("changed-by-a-test")
	if again := mustRender(t, map[string]any{}); again.objects[0].GetName() == "changed-by-a-test" {
		t.Error("a second render of the defaults returned the first caller's changed object")
	}
	for _, pair := range [][2]any{{1, "1"}, {1, 1.0}, {int64(1), 1}, {nil, "<nil>"}, {[]any{"a,b"}, []any{"a", "b"}}} {
		a, b := map[string]any{"x": pair[0]}, map[string]any{"x": pair[1]}
		if valuesKey(a) == valuesKey(b) {
			t.Errorf("values x=%#v (%T) and x=%#v (%T) share the memo key %s", pair[0], pair[0], pair[1], pair[1], valuesKey(a))
		}
	}
	// Rendered through the memo one after the other: a key that took
	// "10" for 10 would hand the second the first's refusal.
	if _, err := render(t, localRunnersWith(t, `runnerManager: {maxSessions: "10"}`)); err == nil {
		t.Error(`runnerManager.maxSessions "10" (a string) rendered; the schema wants an integer`)
	}
	if _, err := render(t, localRunnersWith(t, `runnerManager: {maxSessions: 10}`)); err != nil {
		t.Errorf("runnerManager.maxSessions 10 refused: %v", err)
	}
}
