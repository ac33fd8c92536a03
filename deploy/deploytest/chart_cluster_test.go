package deploytest

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/strvals"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/ambient-code/control-plane/libs/bus"
)

// sharedAcrossReleases are the objects two installations in one cluster
// share, as the README says ("Two installations in one cluster"): the
// AgenticSession CRD and the project ClusterRoles, cluster-scoped and
// named by the platform, which only the first installation creates
// (crds.install=false and projectRoles.create=false in the others).
var sharedAcrossReleases = []string{
	"ClusterRole//ambient-project-admin",
	"ClusterRole//ambient-project-edit",
	"ClusterRole//ambient-project-view",
	"CustomResourceDefinition//agenticsessions.vteam.ambient-code",
}

// TestChartTwoReleasesInOneCluster: two installations in one cluster
// share no object but the documented ones: the cluster-scoped
// ClusterRoles and ClusterRoleBindings of the kube-reconciler and of the
// agui-proxy (authz mode kube) name the release's namespace, and so does
// the dashboard ConfigMap, which metrics.dashboard.namespace may put in a
// namespace of its own. Before, a release named alike in another
// namespace took over the first one's bindings (Helm refuses to adopt
// them, so its install failed). Names are told apart also where joining
// namespace and release name with "-" would not: release c in namespace
// a-b and release b-c in namespace a.
func TestChartTwoReleasesInOneCluster(t *testing.T) {
	t.Parallel()
	const everything = `
aguiProxy:
  auth: {mode: jwt, jwt: {jwksURL: "https://id.example.com/jwks.json", issuer: "https://id.example.com", audience: ambient}}
  authz: {mode: kube}
metrics: {dashboard: {enabled: true, namespace: monitoring}, prometheusRule: {enabled: true}, serviceMonitor: {enabled: true}}
`
	objects := func(release, namespace, more string) map[string]bool {
		t.Helper()
		r, err := renderRelease(t, loadChart(t), release, namespace, mergeValues(parseValues(t, everything), parseValues(t, more)))
		if err != nil {
			t.Fatalf("render %s/%s: %v", namespace, release, err)
		}
		out := map[string]bool{}
		for _, o := range r.objects {
			out[o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()] = true
		}
		return out
	}
	shared := func(a, b map[string]bool) []string {
		var out []string
		for k := range a {
			if b[k] {
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return out
	}
	for _, pair := range [][2][2]string{
		{{"acp", "team-a"}, {"acp", "team-b"}},
		{{"c", "a-b"}, {"b-c", "a"}},
	} {
		first := objects(pair[0][0], pair[0][1], ``)
		if got := shared(first, objects(pair[1][0], pair[1][1], ``)); !slices.Equal(got, sharedAcrossReleases) {
			t.Errorf("releases %s/%s and %s/%s share %q, want only the documented %q", pair[0][1], pair[0][0], pair[1][1], pair[1][0], got, sharedAcrossReleases)
		}
		// The second installation as the README says.
		if got := shared(first, objects(pair[1][0], pair[1][1], `{crds: {install: false}, projectRoles: {create: false}}`)); len(got) != 0 {
			t.Errorf("releases %s/%s and %s/%s (crds.install=false, projectRoles.create=false) share %q", pair[0][1], pair[0][0], pair[1][1], pair[1][0], got)
		}
	}
	readme := string(readFile(t, "helm/ambient-control-plane/README.md"))
	for _, want := range []string{"crds.install=false", "projectRoles.create=false"} {
		if !strings.Contains(readme, want) {
			t.Errorf("README does not tell a second installation to set %s", want)
		}
	}
}

// TestChartPDBsLetUnhealthyPodsGo: every PodDisruptionBudget lets an
// unready pod be evicted (unhealthyPodEvictionPolicy AlwaysAllow). The
// services' readiness depends on systems outside the pod (the API, NATS,
// the CRD): with the default policy a release whose pods are all unready
// blocks every eviction, and `kubectl drain` of their nodes hangs.
// maxUnavailable takes the values that let a pod go (0 and 0% are
// refused: TestChartRejectsBadValues).
func TestChartPDBsLetUnhealthyPodsGo(t *testing.T) {
	t.Parallel()
	sets := append(valueSets(t), valueSet{name: "percent", vals: parseValues(t, `{informer: {pdb: {maxUnavailable: "50%"}}, aguiProxy: {pdb: {maxUnavailable: "100%"}}, eventTally: {pdb: {maxUnavailable: 2}}}`)})
	var pdbs int
	for _, vs := range sets {
		for _, u := range mustRender(t, vs.vals).ofKind("PodDisruptionBudget") {
			pdbs++
			p := toTyped[policyv1.PodDisruptionBudget](t, u)
			if p.Spec.UnhealthyPodEvictionPolicy == nil || *p.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
				t.Errorf("%s/%s: unhealthyPodEvictionPolicy %v, want AlwaysAllow", vs.name, p.Name, p.Spec.UnhealthyPodEvictionPolicy)
			}
			if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.String() == "0" || p.Spec.MaxUnavailable.String() == "0%" {
				t.Errorf("%s/%s: maxUnavailable %v lets no pod go", vs.name, p.Name, p.Spec.MaxUnavailable)
			}
		}
	}
	if pdbs < len(components) {
		t.Errorf("%d PodDisruptionBudgets checked", pdbs)
	}
}

// TestChartStreamReplicasFitBundledNATS: informer.streamReplicas
// (STREAM_REPLICAS, and the runner-manager's BUCKET_REPLICAS) must fit the
// bundled NATS: a stream with more replicas than servers is refused by
// NATS for good, and the informer and runner-manager exit 1 at start-up
// (docs/configuration.md, STREAM_REPLICAS) after `helm install` succeeded.
// The nats chart runs nats.config.cluster.replicas servers with clustering
// on, else one. The chart refuses the values, naming them; with an
// external NATS it cannot know the servers and takes any count.
func TestChartStreamReplicasFitBundledNATS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, values string
		replicas     string   // STREAM_REPLICAS and BUCKET_REPLICAS when accepted
		wantErr      []string // parts of the error when refused
	}{
		{"defaults", ``, "3", nil},
		{"clustering off", `nats: {config: {cluster: {enabled: false}}}`, "",
			[]string{"informer.streamReplicas is 3", "1 server", "nats.config.cluster.enabled is false"}},
		{"clustering off, one replica", `{nats: {config: {cluster: {enabled: false}}}, informer: {streamReplicas: 1}}`, "1", nil},
		{"two servers", `nats: {config: {cluster: {replicas: 2}}}`, "",
			[]string{"informer.streamReplicas is 3", "2 servers", "nats.config.cluster.replicas"}},
		{"five servers", `{nats: {config: {cluster: {replicas: 5}}}, informer: {streamReplicas: 5}}`, "5", nil},
		{"no informer", `{informer: {enabled: false}, nats: {config: {cluster: {enabled: false}}}}`, "",
			[]string{"informer.streamReplicas is 3"}},
		{"external", `{nats: {enabled: false}, externalNats: {url: "nats://nats.messaging:4222"}, informer: {streamReplicas: 5}}`, "5", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := render(t, localRunnersWith(t, tc.values))
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("values accepted: the informer and runner-manager would crash-loop")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			if got := envOf(t, r, deployment(t, r, name("informer")))["STREAM_REPLICAS"]; got != tc.replicas {
				t.Errorf("STREAM_REPLICAS = %q, want %q", got, tc.replicas)
			}
			if got := envOf(t, r, deployment(t, r, name("runner-manager")))["BUCKET_REPLICAS"]; got != tc.replicas {
				t.Errorf("BUCKET_REPLICAS = %q, want %q", got, tc.replicas)
			}
		})
	}
}

// TestChartLeaseTTLIsTheServiceDefault: the chart's informer.leaseTTL is
// the informer's own default (libs/bus DefaultLeaseTTL), the one whose
// failover docs/operations.md gives ("~12.5 s with the default 10 s").
// It was 15 s in the chart, for no recorded reason, so a Helm install
// failed over in about 19 s while the docs said 12.5 s.
func TestChartLeaseTTLIsTheServiceDefault(t *testing.T) {
	t.Parallel()
	r := mustRender(t, nil)
	got, err := time.ParseDuration(envOf(t, r, deployment(t, r, name("informer")))["LEASE_TTL"])
	if err != nil {
		t.Fatal(err)
	}
	if got != bus.DefaultLeaseTTL {
		t.Errorf("chart LEASE_TTL = %v, the informer's default %v", got, bus.DefaultLeaseTTL)
	}
	failover := got + got/4
	ops := string(readFile(t, "docs/operations.md"))
	if want := fmt.Sprintf("~%g s with the default %g s", failover.Seconds(), got.Seconds()); !strings.Contains(ops, want) {
		t.Errorf("docs/operations.md does not say %q", want)
	}
}

// TestChartLeaderUnsyncedTimeout: informer.leaderUnsyncedTimeout reaches
// the informer and the shadow informer as LEADER_UNSYNCED_TIMEOUT; its
// default is the informer's own (2m, docs/configuration.md), 0 turns the
// step-down off, and a value the informer refuses (below its
// WATCH_BACKOFF_MAX, 30s) fails the render naming the key
// (TestChartValuesFollowServiceLoaders checks the limits against the
// informer's loader). The chart had no value for it before.
func TestChartLeaderUnsyncedTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, values, want, wantErr string
	}{
		{name: "default, the informer's", want: "2m"},
		{name: "off", values: `informer: {leaderUnsyncedTimeout: "0"}`, want: "0"},
		{name: "longer", values: `informer: {leaderUnsyncedTimeout: 5m30s}`, want: "5m30s"},
		{name: "the shortest", values: `informer: {leaderUnsyncedTimeout: 30s}`, want: "30s"},
		{name: "below the backoff cap", values: `informer: {leaderUnsyncedTimeout: 29s}`, wantErr: `informer.leaderUnsyncedTimeout must be 0 (off) or at least 30s, got "29s"`},
		{name: "not a duration", values: `informer: {leaderUnsyncedTimeout: 2 minutes}`, wantErr: "leaderUnsyncedTimeout"},
	}
	docs := string(readFile(t, "docs/configuration.md"))
	if !strings.Contains(docs, "| `LEADER_UNSYNCED_TIMEOUT` | `2m` |") {
		t.Error("docs/configuration.md does not give LEADER_UNSYNCED_TIMEOUT's default as 2m")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vals := localRunnersWith(t, `informer: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}`)
			mergeValues(vals, parseValues(t, tc.values))
			r, err := render(t, vals)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("render error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, dn := range []string{"informer", "informer-shadow"} {
				if got := envOf(t, r, deployment(t, r, name(dn)))["LEADER_UNSYNCED_TIMEOUT"]; got != tc.want {
					t.Errorf("%s: LEADER_UNSYNCED_TIMEOUT = %q, want %q", dn, got, tc.want)
				}
			}
		})
	}
}

// TestChartReadmeExamples: the install examples of the README (the
// `--set` flags of each `helm install`, and the values files shown as
// "# values-*.yaml") render, and point the agui-proxy's authority (authz
// mode api: aguiProxy.authz.apiURL, AMBIENT_API_SERVER_URL) at the same
// ambient-api-server as api.grpcAddr. The bundled-NATS example moved the
// gRPC address to namespace ambient-code and left the REST URL on
// ambient-api-server in the release's namespace.
func TestChartReadmeExamples(t *testing.T) {
	t.Parallel()
	readme := string(readFile(t, "helm/ambient-control-plane/README.md"))
	examples := map[string]map[string]any{}
	for i, block := range regexp.MustCompile("(?s)```(sh|yaml)\n(.*?)```").FindAllStringSubmatch(readme, -1) {
		body := block[2]
		switch {
		case block[1] == "sh" && strings.Contains(body, "helm install"):
			cmd := strings.ReplaceAll(body, "\\\n", " ")
			for _, line := range strings.Split(cmd, "\n") {
				if !strings.Contains(line, "helm install") {
					continue
				}
				vals := map[string]any{}
				for _, m := range regexp.MustCompile(`--set\s+(\S+)`).FindAllStringSubmatch(line, -1) {
					if err := strvals.ParseInto(m[1], vals); err != nil {
						t.Fatalf("README: %s: %v", m[1], err)
					}
				}
				examples[fmt.Sprintf("block %d: %s", i, strings.Join(strings.Fields(line), " "))] = vals
			}
		case block[1] == "yaml" && strings.HasPrefix(body, "# values-"):
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(body), &vals); err != nil {
				t.Fatalf("README block %d: %v", i, err)
			}
			examples[strings.SplitN(body, "\n", 2)[0]] = vals
		}
	}
	if len(examples) < 3 {
		t.Fatalf("%d install examples found in the README, want the bundled-NATS, own-NATS and TLS ones", len(examples))
	}
	for what, vals := range examples {
		r, err := render(t, vals)
		if err != nil {
			t.Errorf("README example %s: %v", what, err)
			continue
		}
		grpcHost, _, err := net.SplitHostPort(envOf(t, r, deployment(t, r, name("informer")))["AMBIENT_GRPC_SERVER_ADDR"])
		if err != nil {
			t.Fatal(err)
		}
		proxy := envOf(t, r, deployment(t, r, name("agui-proxy")))
		if proxy["AGUI_AUTHZ"] != "api" {
			continue
		}
		u, err := url.Parse(proxy["AMBIENT_API_SERVER_URL"])
		if err != nil {
			t.Fatal(err)
		}
		if u.Hostname() != grpcHost {
			t.Errorf("README example %s: api.grpcAddr names host %q, aguiProxy.authz.apiURL %q: two different API servers", what, grpcHost, u.Hostname())
		}
	}
}

// TestChartDocsRunnerNetworksRefused: agui-proxy refuses a
// runnerAllowedNetworks entry with bits set beyond its prefix length (the
// chart too: TestChartHostBitsName, TestChartValuesFollowServiceLoaders);
// the README and values.yaml must not say it widens such an entry to the
// network, as the proxy did before.
func TestChartDocsRunnerNetworksRefused(t *testing.T) {
	t.Parallel()
	widens := regexp.MustCompile(`(?i)(silently|would)\s+widen`)
	for _, doc := range []string{"helm/ambient-control-plane/README.md", "helm/ambient-control-plane/values.yaml", "docs/configuration.md"} {
		text := strings.Join(strings.Fields(string(readFile(t, doc))), " ")
		if m := widens.FindString(text); m != "" {
			t.Errorf("%s says the proxy %q a runner network with host bits; it refuses it", doc, m)
		}
	}
}
