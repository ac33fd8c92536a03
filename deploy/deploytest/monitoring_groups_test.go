package deploytest

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// groupGoneAlert is the alert on a consumer group none of whose members
// is scraped.
const groupGoneAlert = "AmbientConsumerGroupNoMembers"

// consumerGroups are the consumer groups of the chart's services by values
// key: each service joins the group named after it (libs/group; the name
// is fixed in each service's config, not a setting).
var consumerGroups = map[string]string{"kubeReconciler": "kube-reconciler", "runnerManager": "runner-manager", "eventTally": "event-tally"}

// TestMonitoringConsumerGroupWithoutMembers: when every member of a
// consumer group is gone (scaled to 0, crash-looping before it serves
// /metrics, never scheduled) its consumer_group_* series vanish, so no
// alert comparing them can fire, while its events wait. The chart renders,
// for each consumer group of an enabled service, an absent() alert scoped
// to the release's namespace. The rules are evaluated by the Prometheus
// query engine over series as the chart's ServiceMonitors label them: the
// alert fires for exactly the group whose members are gone, also when only
// the shadow track (informer.canary's event-tally) or another release's
// members of the group are left, and not while a stable or canary member
// is there; a disabled service's group has no such alert.
func TestMonitoringConsumerGroupWithoutMembers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, values string
		enabled      []string // groups of enabled services
	}{
		{"defaults", "", []string{"event-tally", "kube-reconciler"}},
		{"local runners", localRunners, []string{"event-tally", "kube-reconciler", "runner-manager"}},
		{"no kube-reconciler", `{kubeReconciler: {enabled: false}, runnerManager: {enabled: true}}`, []string{"event-tally", "runner-manager"}},
		{"no event-tally", `eventTally: {enabled: false}`, []string{"kube-reconciler"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vals := mergeValues(parseValues(t, monitoringValues), parseValues(t, tc.values))
			rule := mustRender(t, vals).find("PrometheusRule", releaseName+"-ambient-control-plane")
			if rule == nil {
				t.Fatal("no PrometheusRule rendered")
			}
			exprs, hold := alertExprs(t, rule, groupGoneAlert)
			if len(exprs) == 0 {
				t.Fatalf("no alert %s rendered: a consumer group with no member left pages nobody", groupGoneAlert)
			}
			if hold == "" {
				t.Errorf("%s fires on the first evaluation; want a \"for\" that outlasts a rollout", groupGoneAlert)
			}
			// member is one scraped member of group in namespace on track.
			member := func(group, namespace, track string) labels.Labels {
				return labels.FromStrings("__name__", "consumer_group_joined", "group", group, "member", group+"-"+track+"-0",
					"namespace", namespace, "track", track, "job", group)
			}
			for _, gone := range append(slices.Clone(tc.enabled), "none") {
				var present []labels.Labels
				for _, g := range consumerGroups {
					if g == gone {
						// Left behind: the shadow track and another
						// release's members of the same group.
						present = append(present, member(g, releaseNamespace, "shadow"), member(g, "other-release", "stable"))
						continue
					}
					present = append(present, member(g, releaseNamespace, "stable"), member(g, releaseNamespace, "canary"))
				}
				fired := firingGroups(t, exprs, present)
				var want []string
				if gone != "none" {
					want = []string{gone}
				}
				if !slices.Equal(fired, want) {
					t.Errorf("members of %q gone: %s fires for groups %q, want %q", gone, groupGoneAlert, fired, want)
				}
			}
			// Only a canary left still is a member (AmbientPartitionsUnowned
			// covers its missing partitions).
			var canaries []labels.Labels
			for _, g := range consumerGroups {
				canaries = append(canaries, member(g, releaseNamespace, "canary"))
			}
			if fired := firingGroups(t, exprs, canaries); len(fired) != 0 {
				t.Errorf("only canary members: %s fires for %q", groupGoneAlert, fired)
			}
			// With nothing scraped every enabled group, and only those, is
			// reported.
			if fired := firingGroups(t, exprs, nil); !slices.Equal(fired, tc.enabled) {
				t.Errorf("nothing scraped: %s fires for %q, want %q", groupGoneAlert, fired, tc.enabled)
			}
		})
	}
}

// alertExprs returns the expressions of every rule of the PrometheusRule
// named alert, and the "for" of the last.
func alertExprs(t *testing.T, rule *unstructured.Unstructured, alert string) (exprs []string, hold string) {
	t.Helper()
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, ru := range rules {
			m := ru.(map[string]any)
			if m["alert"] != alert {
				continue
			}
			expr, _ := m["expr"].(string)
			exprs = append(exprs, expr)
			hold, _ = m["for"].(string)
		}
	}
	return exprs, hold
}

// firingGroups evaluates exprs with the Prometheus query engine over
// series (each scraped every 30s for the last 10 minutes, value 1) and
// returns the sorted group labels of the elements they return.
func firingGroups(t *testing.T, exprs []string, series []labels.Labels) []string {
	t.Helper()
	var scraped []scrapedSeries
	for _, ls := range series {
		scraped = append(scraped, scrapedSeries{ls, func(int) float64 { return 1 }})
	}
	var fired []string
	for _, ls := range evalExprs(t, exprs, scraped) {
		fired = append(fired, ls.Get("group"))
	}
	slices.Sort(fired)
	return fired
}

// scrapedSeries is a series scraped every 30s for the last 10 minutes:
// its labels and its value at the i-th scrape (0 to 20).
type scrapedSeries struct {
	labels labels.Labels
	value  func(i int) float64
}

// evalExprs evaluates exprs with the Prometheus query engine over series
// at the last scrape and returns the labels of the elements they return.
func evalExprs(t *testing.T, exprs []string, series []scrapedSeries) []labels.Labels {
	t.Helper()
	end := time.Unix(0, 0).Add(time.Hour)
	var stored []storage.Series
	for _, s := range series {
		var samples []chunks.Sample
		for i, at := 0, end.Add(-10*time.Minute); !at.After(end); i, at = i+1, at.Add(30*time.Second) {
			samples = append(samples, sample{t: at.UnixMilli(), f: s.value(i)})
		}
		stored = append(stored, storage.NewListSeries(s.labels, samples))
	}
	slices.SortFunc(stored, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	q := &storage.MockQueryable{MockQuerier: &storage.MockQuerier{
		SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			var out []storage.Series
			for _, s := range stored {
				if matchAll(ms, s.Labels()) {
					out = append(out, s)
				}
			}
			return &seriesSet{series: out}
		},
	}}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	var fired []labels.Labels
	for _, expr := range exprs {
		qry, err := engine.NewInstantQuery(context.Background(), q, nil, expr, end)
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		res := qry.Exec(t.Context())
		if res.Err != nil {
			t.Fatalf("%q: %v", expr, res.Err)
		}
		vec, err := res.Vector()
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		for _, s := range vec {
			fired = append(fired, s.Metric)
		}
		qry.Close()
	}
	return fired
}

// sample is one float sample of a stored series.
type sample struct {
	t int64
	f float64
}

func (s sample) T() int64                    { return s.t }
func (sample) ST() int64                     { return 0 }
func (s sample) F() float64                  { return s.f }
func (sample) H() *histogram.Histogram       { return nil }
func (sample) FH() *histogram.FloatHistogram { return nil }
func (sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sample) Copy() chunks.Sample         { return s }

// matchAll reports whether ls satisfies every matcher.
func matchAll(ms []*labels.Matcher, ls labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

// seriesSet is a storage.SeriesSet over a slice, in its order.
type seriesSet struct {
	series []storage.Series
	cur    storage.Series
}

func (s *seriesSet) Next() bool {
	if len(s.series) == 0 {
		return false
	}
	s.cur, s.series = s.series[0], s.series[1:]
	return true
}

func (s *seriesSet) At() storage.Series                { return s.cur }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// TestMonitoringFiringGroups: the evaluation TestMonitoringConsumerGroupWithoutMembers
// relies on reports what a query returns, by group.
func TestMonitoringFiringGroups(t *testing.T) {
	t.Parallel()
	a := labels.FromStrings("__name__", "consumer_group_joined", "group", "a", "track", "stable")
	b := labels.FromStrings("__name__", "consumer_group_joined", "group", "b", "track", "shadow")
	for _, c := range []struct {
		expr   string
		series []labels.Labels
		want   []string
	}{
		{`consumer_group_joined{track!="shadow"}`, []labels.Labels{a, b}, []string{"a"}},
		{`absent(consumer_group_joined{group="b", track!="shadow"})`, []labels.Labels{a, b}, []string{"b"}},
		{`absent(consumer_group_joined{group="a", track!="shadow"})`, []labels.Labels{a, b}, nil},
		{`absent(consumer_group_joined{group="a"})`, nil, []string{"a"}},
	} {
		if got := firingGroups(t, []string{c.expr}, c.series); !slices.Equal(got, c.want) {
			t.Errorf("%s over %v: groups %q, want %q", c.expr, c.series, got, c.want)
		}
	}
}

// proxyDownAlert is the alert on an agui-proxy none of whose pods is scraped.
const proxyDownAlert = "AmbientProxyDown"

// TestMonitoringProxyDown: with every agui-proxy pod gone (scaled to 0,
// never scheduled, crash-looping before it serves /metrics) its series
// vanish and AmbientProxyErrors, a ratio of them, stays silent while no
// chat reaches any runner. The chart renders an absent() alert for the
// agui-proxy when it is enabled, scoped to the release's namespace and
// the agui-proxy's scrape job (the ServiceMonitor's job is the Service's
// name): evaluated by the Prometheus engine, it fires when no stable or
// canary proxy is scraped, also when only another release's proxies or
// other services of this release are, and not while one is.
func TestMonitoringProxyDown(t *testing.T) {
	t.Parallel()
	rule := mustRender(t, parseValues(t, monitoringValues)).find("PrometheusRule", releaseName+"-ambient-control-plane")
	if rule == nil {
		t.Fatal("no PrometheusRule rendered")
	}
	exprs, hold := alertExprs(t, rule, proxyDownAlert)
	if len(exprs) != 1 {
		t.Fatalf("%d %s rules rendered, want 1: with every agui-proxy gone nothing pages", len(exprs), proxyDownAlert)
	}
	if hold == "" {
		t.Errorf("%s fires on the first evaluation; want a \"for\" that outlasts a rollout", proxyDownAlert)
	}
	// scraped is one scraped pod's process_start_time_seconds, labelled as
	// the ServiceMonitors label their targets.
	scraped := func(component, namespace, track string) labels.Labels {
		return labels.FromStrings("__name__", "process_start_time_seconds", "job", name(component), "namespace", namespace,
			"track", track, "pod", name(component)+"-"+track+"-0", "service", name(component))
	}
	others := []labels.Labels{scraped("event-tally", releaseNamespace, "stable"), scraped("informer", releaseNamespace, "stable"), scraped("agui-proxy", "other-release", "stable")}
	for _, tc := range []struct {
		name   string
		series []labels.Labels
		fires  bool
	}{
		{"stable proxies", append(slices.Clone(others), scraped("agui-proxy", releaseNamespace, "stable"), scraped("agui-proxy", releaseNamespace, "canary")), false},
		{"only the canary", append(slices.Clone(others), scraped("agui-proxy", releaseNamespace, "canary")), false},
		{"no proxy here", others, true},
		{"nothing scraped", nil, true},
	} {
		if fired := len(firingGroups(t, exprs, tc.series)) > 0; fired != tc.fires {
			t.Errorf("%s: %s fires = %v, want %v", tc.name, proxyDownAlert, fired, tc.fires)
		}
	}
	off := mustRender(t, mergeValues(parseValues(t, monitoringValues), parseValues(t, `aguiProxy: {enabled: false}`))).find("PrometheusRule", releaseName+"-ambient-control-plane")
	if exprs, _ := alertExprs(t, off, proxyDownAlert); len(exprs) != 0 {
		t.Errorf("agui-proxy disabled: %s still rendered (it would fire forever)", proxyDownAlert)
	}
}

// TestMonitoringAlertsPerNamespace: an alert of one release is not
// silenced by another release in the cluster, whose series Prometheus
// scrapes alike but in its own namespace. Evaluated by the Prometheus
// engine with this release's rules: a leaderless release fires
// AmbientInformerNoLeader for its namespace while another has a leader,
// and so does a release whose informers are all gone; a consumer group
// that handles nothing fires AmbientEventsNotConsumed while another
// release's group of the same name handles its events; a failing proxy
// fires AmbientProxyErrors while another release's busy proxies succeed.
// Before, these rules aggregated over every namespace. Each fires for the
// failing namespace only.
func TestMonitoringAlertsPerNamespace(t *testing.T) {
	t.Parallel()
	rule := mustRender(t, parseValues(t, monitoringValues)).find("PrometheusRule", releaseName+"-ambient-control-plane")
	if rule == nil {
		t.Fatal("no PrometheusRule rendered")
	}
	const other = "other-release"
	series := func(metric, namespace string, value func(i int) float64, more ...string) scrapedSeries {
		return scrapedSeries{labels.FromStrings(append([]string{"__name__", metric, "namespace", namespace, "track", "stable"}, more...)...), value}
	}
	constant := func(v float64) func(int) float64 { return func(int) float64 { return v } }
	perScrape := func(v float64) func(int) float64 { return func(i int) float64 { return v * float64(i) } }
	tests := []struct {
		alert  string
		series []scrapedSeries
	}{
		{"AmbientInformerNoLeader", []scrapedSeries{
			series("informer_lease_leader", releaseNamespace, constant(0), "pod", "informer-0"),
			series("informer_lease_leader", releaseNamespace, constant(0), "pod", "informer-1"),
			series("informer_lease_leader", other, constant(1), "pod", "informer-0"),
			series("informer_lease_leader", other, constant(0), "pod", "informer-1"),
		}},
		{"AmbientInformerNoLeader", []scrapedSeries{
			series("informer_lease_leader", other, constant(1), "pod", "informer-0"),
		}},
		{"AmbientEventsNotConsumed", []scrapedSeries{
			series("consumer_group_lag", releaseNamespace, constant(5), "group", "kube-reconciler", "member", "kube-reconciler-0"),
			series("consumer_group_handled_total", releaseNamespace, constant(100), "group", "kube-reconciler", "member", "kube-reconciler-0"),
			series("consumer_group_lag", other, constant(5), "group", "kube-reconciler", "member", "kube-reconciler-0"),
			series("consumer_group_handled_total", other, perScrape(30), "group", "kube-reconciler", "member", "kube-reconciler-0"),
		}},
		{"AmbientProxyErrors", []scrapedSeries{
			series("agui_proxy_requests_total", releaseNamespace, perScrape(30), "code", "502", "route", "agui"),
			series("agui_proxy_requests_total", other, perScrape(3000), "code", "200", "route", "agui"),
		}},
	}
	for i, tc := range tests {
		exprs, _ := alertExprs(t, rule, tc.alert)
		if len(exprs) == 0 {
			t.Fatalf("no alert %s", tc.alert)
		}
		var namespaces []string
		for _, ls := range evalExprs(t, exprs, tc.series) {
			namespaces = append(namespaces, ls.Get("namespace"))
		}
		slices.Sort(namespaces)
		namespaces = slices.Compact(namespaces)
		if !slices.Equal(namespaces, []string{releaseNamespace}) {
			t.Errorf("case %d: %s fires for namespaces %q, want [%s] (failing there while %s is healthy)", i, tc.alert, namespaces, releaseNamespace, other)
		}
	}
}

// TestMonitoringDashboardSelectsNamespace: the dashboard is one per
// cluster (README, "Monitoring and network policies"): its $namespace
// variable lists the namespaces with control plane series, and every
// panel query reads only the selected namespace's, so releases are shown
// apart rather than summed.
func TestMonitoringDashboardSelectsNamespace(t *testing.T) {
	t.Parallel()
	_, _, _, dashboard := monitoringQueries(t)
	raw, _, _ := unstructured.NestedString(dashboard.Object, "data", "ambient-control-plane.json")
	type variable struct{ Name, Type string }
	var dash struct {
		Templating struct {
			List []variable `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(dash.Templating.List, variable{"namespace", "query"}) {
		t.Errorf("dashboard variables %+v: want a query variable \"namespace\"", dash.Templating.List)
	}
	queries, _, _, _ := monitoringQueries(t)
	var panels int
	for _, q := range queries {
		if !strings.HasPrefix(q.where, "panel ") {
			continue
		}
		panels++
		e, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr)
		if err != nil {
			t.Fatalf("%s: %v", q.where, err)
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			if !slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
				return m.Name == "namespace" && m.Type == labels.MatchRegexp && m.Value == "$namespace"
			}) {
				t.Errorf("%s: %s does not select namespace=~\"$namespace\"", q.where, vs)
			}
			return nil
		})
	}
	if panels < 20 {
		t.Errorf("%d panel queries checked", panels)
	}
}
