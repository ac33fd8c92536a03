package deploytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/strutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// monitoringValues turns on the optional dashboard and alert rules.
const monitoringValues = `
metrics:
  prometheusRule: {enabled: true, labels: {release: prometheus}}
  dashboard: {enabled: true, annotations: {grafana_folder: Ambient}}
`

// dashboardName is the dashboard ConfigMap's name: the release's
// namespace, ".", then the release's prefix (unique in the cluster, as
// metrics.dashboard.namespace may gather the ConfigMaps of several
// releases in one namespace).
const dashboardName = releaseNamespace + "." + releaseName + "-ambient-control-plane-dashboard"

// query is one PromQL expression of the dashboard or the alert rules.
type query struct {
	where  string // "alert X" or "panel Y"
	expr   string
	legend string // a panel target's legendFormat
	hold   string // an alert's "for" ("": it fires at once)
}

// monitoringQueries renders the chart with the dashboard and the rules on
// and returns their queries, the alerts' names, and the two objects.
func monitoringQueries(t *testing.T) (queries []query, alerts []string, rule, dashboard *unstructured.Unstructured) {
	t.Helper()
	r := mustRender(t, parseValues(t, monitoringValues))
	rule = r.find("PrometheusRule", releaseName+"-ambient-control-plane")
	dashboard = r.find("ConfigMap", dashboardName)
	if rule == nil || dashboard == nil {
		t.Fatalf("rendered PrometheusRule %v, dashboard ConfigMap %v; want both", rule != nil, dashboard != nil)
	}
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, ru := range rules {
			m := ru.(map[string]any)
			name, _ := m["alert"].(string)
			expr, _ := m["expr"].(string)
			hold, _ := m["for"].(string)
			alerts = append(alerts, name)
			queries = append(queries, query{where: "alert " + name, expr: expr, hold: hold})
		}
	}
	raw, _, _ := unstructured.NestedString(dashboard.Object, "data", "ambient-control-plane.json")
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr   string `json:"expr"`
				Legend string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries = append(queries, query{where: "panel " + p.Title, expr: tg.Expr, legend: tg.Legend})
		}
	}
	return queries, alerts, rule, dashboard
}

// metricNames parses expr as PromQL and returns the metric names it reads.
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names, nil
}

// TestMonitoringRenders: the dashboard and the rules render only when asked
// for, with the sidecar's label and the Prometheus selector's; every query
// parses as PromQL and reads at least one metric; every alert has a
// severity, a summary and a section in docs/operations.md that says what
// it means and what to do.
func TestMonitoringRenders(t *testing.T) {
	t.Parallel()
	off := mustRender(t, nil)
	if len(off.ofKind("PrometheusRule")) != 0 || off.find("ConfigMap", dashboardName) != nil {
		t.Fatal("the default install renders monitoring objects; they are opt-in")
	}
	queries, alerts, rule, dashboard := monitoringQueries(t)
	if dashboard.GetLabels()["grafana_dashboard"] != "1" || dashboard.GetAnnotations()["grafana_folder"] != "Ambient" {
		t.Errorf("dashboard ConfigMap labels %v annotations %v: want the sidecar's grafana_dashboard=1 and the folder", dashboard.GetLabels(), dashboard.GetAnnotations())
	}
	if rule.GetLabels()["release"] != "prometheus" {
		t.Errorf("PrometheusRule labels %v: want the extra label release=prometheus", rule.GetLabels())
	}
	if len(queries) < 20 || len(alerts) < 10 {
		t.Fatalf("%d queries, %d alerts: the files are not rendered whole", len(queries), len(alerts))
	}
	for _, q := range queries {
		names, err := metricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %q is not PromQL: %v", q.where, q.expr, err)
		} else if len(names) == 0 {
			t.Errorf("%s: %q reads no metric", q.where, q.expr)
		}
	}
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, ru := range rules {
			sev, _, _ := unstructured.NestedString(ru.(map[string]any), "labels", "severity")
			sum, _, _ := unstructured.NestedString(ru.(map[string]any), "annotations", "summary")
			if (sev != "warning" && sev != "critical") || sum == "" {
				t.Errorf("rule %v: want severity warning or critical and a summary", ru.(map[string]any)["alert"])
			}
		}
	}
	ops := string(readFile(t, "docs/operations.md"))
	for _, a := range alerts {
		if !strings.Contains(ops, "#### "+a+"\n") {
			t.Errorf("alert %s has no \"#### %s\" section in docs/operations.md", a, a)
		}
	}
}

// TestMonitoringStuckSessionsCoverPassingPhases: AmbientSessionsStuck
// reads the idle time of every phase a session only passes through (one
// that wants a runner but is not Running yet, and Stopping) and of no
// other. A session without a phase, which the informer labels "none"
// (docs/operations.md#metrics), wants a runner like Pending: a new session
// that no executor selects, or whose events no consumer handles, stays so.
// Before, the alert read only Pending, Creating and Stopping and missed it.
func TestMonitoringStuckSessionsCoverPassingPhases(t *testing.T) {
	t.Parallel()
	const alert, metric, noPhase = "alert AmbientSessionsStuck", "informer_sessions_idle_max_seconds", "none"
	if ops := string(readFile(t, "docs/operations.md")); !strings.Contains(ops, "(`"+noPhase+"`: no phase yet)") {
		t.Fatalf("docs/operations.md#metrics does not give %q as the phase label of a session without a phase", noPhase)
	}
	matchers, _ := alertReads(t, alert, metric)
	for _, p := range append([]session.Phase{session.PhaseNone}, session.Phases()...) {
		label := string(p)
		if p == session.PhaseNone {
			label = noPhase
		}
		passing := (p.WantsRunner() && p != session.PhaseRunning) || p == session.PhaseStopping
		if read := selects(matchers, "phase", label); read != passing {
			t.Errorf("%s reads phase=%q: %v; want %v (a phase a session only passes through)", alert, label, read, passing)
		}
	}
}

// alertReads parses the expression of alert ("alert X") and returns the
// label matchers of its selectors of metric and the functions it calls on
// them (absent, rate, ...); it fails when the alert does not read metric.
func alertReads(t *testing.T, alert, metric string) (matchers []*labels.Matcher, calls []string) {
	t.Helper()
	queries, _, _, _ := monitoringQueries(t)
	for _, q := range queries {
		if q.where != alert {
			continue
		}
		e, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr)
		if err != nil {
			t.Fatalf("%s: %v", alert, err)
		}
		parser.Inspect(e, func(n parser.Node, path []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok || vs.Name != metric {
				return nil
			}
			matchers = append(matchers, vs.LabelMatchers...)
			for _, up := range path {
				if c, ok := up.(*parser.Call); ok {
					calls = append(calls, c.Func.Name)
				}
			}
			return nil
		})
	}
	if matchers == nil {
		t.Fatalf("%s does not read %s", alert, metric)
	}
	return matchers, calls
}

// selects reports whether selectors with matchers read a series whose
// label name has value.
func selects(matchers []*labels.Matcher, name, value string) bool {
	for _, m := range matchers {
		if m.Name == name && !m.Matches(value) {
			return false
		}
	}
	return true
}

// TestMonitoringStatusWritesAlertCountsFailuresOnly: runner-manager counts
// a status write for a session deleted meanwhile as result="not_found" (a
// user deleting a running session); the alert on failing writes reads
// only result="error", or steady deletes would page.
func TestMonitoringStatusWritesAlertCountsFailuresOnly(t *testing.T) {
	t.Parallel()
	const alert = "alert AmbientSessionStatusWritesFailing"
	matchers, _ := alertReads(t, alert, "runner_manager_status_writes_total")
	for result, want := range map[string]bool{"error": true, "not_found": false, "ok": false} {
		if read := selects(matchers, "result", result); read != want {
			t.Errorf("%s reads result=%q: %v, want %v", alert, result, read, want)
		}
	}
}

// TestMonitoringNoLeaderFiresWithoutInformers: with every informer pod gone
// no informer_lease_leader series is left for a comparison to fail, the
// worst case of "no leader"; the alert must also fire on absent().
func TestMonitoringNoLeaderFiresWithoutInformers(t *testing.T) {
	t.Parallel()
	const alert = "alert AmbientInformerNoLeader"
	if _, calls := alertReads(t, alert, "informer_lease_leader"); !slices.Contains(calls, "absent") {
		t.Errorf("%s: functions over informer_lease_leader %q; want absent() among them, or it is silent when no informer is scraped", alert, calls)
	}
}

// TestMonitoringAlertDelaysAsDocumented: docs/operations.md says after how
// long AmbientSessionsStuck (15 minutes without a change) and
// AmbientEventsNotConsumed (10 minutes without a handled event) fire; the
// delay is the rule's own threshold or rate window plus its "for".
func TestMonitoringAlertDelaysAsDocumented(t *testing.T) {
	t.Parallel()
	queries, _, _, _ := monitoringQueries(t)
	forOf := map[string]time.Duration{}
	exprOf := map[string]parser.Expr{}
	for _, q := range queries {
		name, ok := strings.CutPrefix(q.where, "alert ")
		if !ok || (name != "AmbientSessionsStuck" && name != "AmbientEventsNotConsumed") {
			continue
		}
		d, err := model.ParseDuration(q.hold)
		if err != nil {
			t.Fatalf("%s: for %q: %v", name, q.hold, err)
		}
		forOf[name] = time.Duration(d)
		if exprOf[name], err = parser.NewParser(parser.Options{}).ParseExpr(q.expr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// The idle threshold: the number the idle gauge is compared with.
	var idle time.Duration
	parser.Inspect(exprOf["AmbientSessionsStuck"], func(n parser.Node, _ []parser.Node) error {
		if b, ok := n.(*parser.BinaryExpr); ok && b.Op == parser.GTR {
			if num, ok := b.RHS.(*parser.NumberLiteral); ok {
				idle = time.Duration(num.Val) * time.Second
			}
		}
		return nil
	})
	// The rate window of the handled counter.
	var window time.Duration
	parser.Inspect(exprOf["AmbientEventsNotConsumed"], func(n parser.Node, _ []parser.Node) error {
		if ms, ok := n.(*parser.MatrixSelector); ok && ms.VectorSelector.(*parser.VectorSelector).Name == "consumer_group_handled_total" {
			window = ms.Range
		}
		return nil
	})
	ops := string(readFile(t, "docs/operations.md"))
	for _, c := range []struct {
		alert, doc string
		got, want  time.Duration
	}{
		{"AmbientSessionsStuck", "for 15 minutes without any\nchange", idle + forOf["AmbientSessionsStuck"], 15 * time.Minute},
		{"AmbientEventsNotConsumed", "has handled none for 10 minutes", window + forOf["AmbientEventsNotConsumed"], 10 * time.Minute},
	} {
		if !regexp.MustCompile(c.doc).MatchString(ops) {
			t.Errorf("docs/operations.md no longer says %q of %s: update this test with it", c.doc, c.alert)
		}
		if c.got != c.want {
			t.Errorf("%s fires %v after the fact, docs/operations.md says %v", c.alert, c.got, c.want)
		}
	}
}

// monitoredServices are the services the dev stack runs and their offset
// from its --metrics-port-base (docs/configuration.md#devstack).
var monitoredServices = map[string]int{"informer": 1, "runner-manager": 2, "agui-proxy": 3, "event-tally": 4}

// TestMonitoringMetricsAreExported is acceptance 2 of issue 16: every
// metric the dashboard and the alert rules read is one the services
// export, with every label they select, group or show by. The services run
// as processes (the dev stack: NATS, the in-memory API, informer,
// runner-manager, agui-proxy, event-tally) and a session goes from create
// to Stopped with a chat in between, then each service's /metrics is
// scraped; a name missing from every scrape, or a label no series of the
// metric carries, fails. The same scrapes check docs/operations.md#metrics
// (testenv.MetricsDoc, the parser kube-reconciler's TestMetricsAsDocumented
// uses for the service the dev stack does not run): each service's section
// documents every metric the service exports, and every series carries
// exactly the labels its row lists (label names; the exporter's
// otel_scope_* labels, target_info and the runtime collectors aside).
func TestMonitoringMetricsAreExported(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the dev stack")
	}
	t.Parallel()
	queries, _, _, _ := monitoringQueries(t)

	st := startDevStack(t)
	st.exerciseSession(t)
	exported := map[string]map[string]bool{} // metric -> its series' label names
	bySvc := map[string][]testenv.Series{}   // service -> its series
	for svc, off := range monitoredServices {
		for _, smp := range scrape(t, st.base+off) {
			name := smp.Get(model.MetricNameLabel)
			if exported[name] == nil {
				exported[name] = map[string]bool{}
			}
			series := testenv.Series{Name: name}
			smp.Range(func(l labels.Label) {
				exported[name][l.Name] = true
				if l.Name != model.MetricNameLabel {
					series.Labels = append(series.Labels, l.Name)
				}
			})
			bySvc[svc] = append(bySvc[svc], series)
		}
	}

	missing := map[string][]string{} // problem -> where
	for _, q := range queries {
		for _, p := range queryProblems(q, exported) {
			missing[p] = append(missing[p], q.where)
		}
	}
	var lines []string
	for p, where := range missing {
		lines = append(lines, fmt.Sprintf("%s (used by %s)", p, strings.Join(slices.Compact(where), ", ")))
	}
	sort.Strings(lines)
	if len(lines) > 0 {
		t.Errorf("series no running service exports:\n  %s", strings.Join(lines, "\n  "))
	}

	doc, err := testenv.ReadMetricsDoc(filepath.Join(repoRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for svc, series := range bySvc {
		problems, err := doc.SeriesProblems(svc, series)
		if err != nil {
			t.Errorf("docs/operations.md#metrics: %v", err)
			continue
		}
		for _, p := range problems {
			t.Errorf("%s's /metrics disagrees with docs/operations.md#metrics: %s", svc, p)
		}
	}
}

// queryProblems returns what q reads that no scrape shows: a metric name,
// or a label (selected, grouped by, or shown in the legend) that no series
// of the metric carries. The track and namespace labels are added at
// scrape time (scrapeLabels).
func queryProblems(q query, exported map[string]map[string]bool) []string {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr)
	if err != nil {
		return []string{fmt.Sprintf("%q is not PromQL: %v", q.expr, err)}
	}
	var out []string
	// has: a metric read below n carries label l.
	has := func(n parser.Node, l string) bool {
		found := false
		parser.Inspect(n, func(c parser.Node, _ []parser.Node) error {
			if vs, ok := c.(*parser.VectorSelector); ok && exported[vs.Name][l] {
				found = true
			}
			return nil
		})
		return found
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			if _, ok := exported[n.Name]; !ok {
				out = append(out, n.Name)
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel && !scrapeLabels[m.Name] && !exported[n.Name][m.Name] {
					out = append(out, fmt.Sprintf("%s{%s}", n.Name, m.Name))
				}
			}
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			for _, l := range n.Grouping {
				if !scrapeLabels[l] && !has(n.Expr, l) {
					out = append(out, fmt.Sprintf("%s by (%s)", n.Expr, l))
				}
			}
		}
		return nil
	})
	for _, m := range legendLabel.FindAllStringSubmatch(q.legend, -1) {
		if !scrapeLabels[m[1]] && !has(e, m[1]) {
			out = append(out, fmt.Sprintf("legend {{%s}} of %s", m[1], q.expr))
		}
	}
	return out
}

// scrapeLabels are the labels Prometheus gives every target of the chart's
// ServiceMonitors and that no /metrics page carries: the pod's track, the
// namespace (every alert is per namespace, the absent() ones select the
// release's, the dashboard's $namespace variable selects one) and the job,
// the Service's name (AmbientProxyDown selects the agui-proxy's).
var scrapeLabels = map[string]bool{trackLabel: true, "namespace": true, "job": true}

// legendLabel is a label reference in a Grafana legendFormat.
var legendLabel = regexp.MustCompile(`{{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*}}`)

// TestMonitoringQueryProblems: the check of TestMonitoringMetricsAreExported
// finds a missing metric and a label that a selector, a grouping or a
// legend uses and no series carries, and passes what the scrape has.
func TestMonitoringQueryProblems(t *testing.T) {
	t.Parallel()
	exported := map[string]map[string]bool{
		"a_total":               {"__name__": true, "resource": true},
		"h_seconds_bucket":      {"__name__": true, "le": true, "route": true},
		"consumer_group_lag":    {"__name__": true, "group": true, "member": true},
		"informer_lease_leader": {"__name__": true},
	}
	for _, c := range []struct {
		q    query
		want []string
	}{
		{query{expr: `sum by (resource) (rate(a_total{track!="shadow"}[5m]))`, legend: "{{resource}}"}, nil},
		{query{expr: `histogram_quantile(0.9, sum by (le, route) (rate(h_seconds_bucket[5m])))`, legend: "{{ route }}"}, nil},
		{query{expr: `count by (group) (consumer_group_lag == 0) and max(informer_lease_leader) < 1`}, nil},
		{query{expr: `absent(consumer_group_lag{group="a", namespace="ns", track!="shadow"})`}, nil},
		{query{expr: `sum by (namespace, group) (consumer_group_lag{namespace=~"$namespace"})`, legend: "{{namespace}} {{group}}"}, nil},
		{query{expr: `absent(consumer_group_lag{group="a", pod="p"})`}, []string{"consumer_group_lag{pod}"}},
		{query{expr: `sum(rate(h_seconds[5m]))`}, []string{"h_seconds"}},
		{query{expr: `sum(rate(a_total{result="ok"}[5m]))`}, []string{`a_total{result}`}},
		{query{expr: `sum by (type) (rate(a_total[5m]))`}, []string{"rate(a_total[5m]) by (type)"}},
		{query{expr: `sum by (resource) (rate(a_total[5m]))`, legend: "{{resource}} {{type}}"}, []string{"legend {{type}} of sum by (resource) (rate(a_total[5m]))"}},
	} {
		if got := queryProblems(c.q, exported); !slices.Equal(got, c.want) {
			t.Errorf("%s: problems %q, want %q", c.q.expr, got, c.want)
		}
	}
}

// scrape reads a /metrics page and returns its samples' labels (the
// metric name as __name__).
func scrape(t *testing.T, port int) []labels.Labels {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatalf("scrape :%d: %v", port, err)
	}
	defer resp.Body.Close() //nolint:errcheck // read-only
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape :%d: %s %v", port, resp.Status, err)
	}
	p := parser.NewParser(parser.Options{})
	var out []labels.Labels
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		// The value follows the last space (the exporter writes no
		// timestamps).
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("scrape :%d: line %q has no value", port, line)
		}
		ls, err := p.ParseMetric(line[:i])
		if err != nil {
			t.Fatalf("scrape :%d: line %q: %v", port, line, err)
		}
		out = append(out, ls)
	}
	return out
}

// devStack is a running dev stack (bin/devstack with every service).
type devStack struct {
	bin                     string
	rest, grpc, proxy, nats int
	base                    int
	out                     *testenv.Buffer
	stateDir                string
	cmd                     *exec.Cmd
	token                   string
	waitOnce                sync.Once
	waitErr                 error
}

// startDevStack builds the services (with the repository's go.work, as
// `make build`) and runs devstack on free loopback ports until the test
// ends; it stops it with SIGINT, as Ctrl-C does.
func startDevStack(t *testing.T) *devStack {
	t.Helper()
	root := repoRoot(t)
	bin := t.TempDir()
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin+string(filepath.Separator),
		"./libs/cmd/memapi", "./services/informer/cmd/informer", "./services/event-tally/cmd/event-tally",
		"./services/runner-manager/cmd/runner-manager", "./services/runner-manager/cmd/demo-runner",
		"./services/agui-proxy/cmd/agui-proxy", "./services/ambientctl/cmd/ambientctl", "./services/devstack/cmd/devstack")
	build.Dir = root
	build.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the services: %v\n%s", err, out)
	}
	// Every port from one free block below the ephemeral range: NATS, API
	// gRPC and REST, proxy, the metrics base (services at base+1..base+5)
	// and one runner port.
	p, _ := testenv.FreePortRange(t, 4+6+1)
	st := &devStack{bin: bin, nats: p, grpc: p + 1, rest: p + 2, proxy: p + 3, base: p + 4, out: &testenv.Buffer{}, stateDir: t.TempDir(), token: "deploytest"}
	st.cmd = exec.Command(filepath.Join(bin, "devstack"), "--bin-dir", bin, "--state-dir", st.stateDir, "--token", st.token,
		"--nats-port", strconv.Itoa(st.nats), "--api-grpc-port", strconv.Itoa(st.grpc), "--api-rest-port", strconv.Itoa(st.rest),
		"--proxy-port", strconv.Itoa(st.proxy), "--metrics-port-base", strconv.Itoa(st.base),
		"--runner-ports", fmt.Sprintf("%d-%d", p+10, p+10), "--raw-logs", "--stop-grace", "10s")
	st.cmd.Stdout, st.cmd.Stderr = st.out, st.out
	if err := st.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = st.cmd.Process.Signal(os.Interrupt) //nolint:errcheck // it may have exited
		if err := st.wait(90 * time.Second); err != nil {
			t.Errorf("devstack: %v", err)
		}
		if t.Failed() {
			t.Logf("devstack output:\n%s", st.out.String())
		}
	})
	testenv.Eventually(t, 2*time.Minute, func() error {
		if strings.Contains(st.out.String(), "ambient control plane is running") {
			return nil
		}
		return fmt.Errorf("devstack not running yet")
	})
	return st
}

// wait waits for devstack to exit, killing it after timeout.
func (st *devStack) wait(timeout time.Duration) error {
	st.waitOnce.Do(func() {
		done := make(chan error, 1)           // Wait's one result
		go func() { done <- st.cmd.Wait() }() // owned by wait; ends when devstack exits
		select {
		case st.waitErr = <-done:
		case <-time.After(timeout):
			_ = st.cmd.Process.Kill() //nolint:errcheck // teardown
			st.waitErr = fmt.Errorf("did not stop within %v: %w", timeout, <-done)
		}
	})
	return st.waitErr
}

// exerciseSession creates a project and a session, waits for Running,
// chats through the proxy with ambientctl, stops it and waits for Stopped:
// every service does its work once, so its metrics have series.
func (st *devStack) exerciseSession(t *testing.T) {
	t.Helper()
	st.call(t, http.MethodPost, "/projects", `{"name":"monitored"}`)
	var sess struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(st.call(t, http.MethodPost, "/sessions", `{"name":"watched","project_id":"monitored"}`), &sess); err != nil || sess.ID == "" {
		t.Fatalf("create session: %v", err)
	}
	st.waitPhase(t, sess.ID, "Running")
	testenv.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(st.bin, "ambientctl"), "--token", st.token,
			"--proxy", fmt.Sprintf("http://127.0.0.1:%d", st.proxy), "chat", sess.ID, "count me").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "count me") {
			return fmt.Errorf("chat: %v: %s", err, out)
		}
		return nil
	})
	st.call(t, http.MethodPost, "/sessions/"+sess.ID+"/stop", "")
	st.waitPhase(t, sess.ID, "Stopped")
}

// call calls the in-memory API's REST interface and returns the body.
func (st *devStack) call(t *testing.T, method, path, body string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, fmt.Sprintf("http://127.0.0.1:%d/api/ambient/v1%s", st.rest, path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+st.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close() //nolint:errcheck // read-only
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %s %s %v", method, path, resp.Status, b, err)
	}
	return b
}

func (st *devStack) waitPhase(t *testing.T, id, phase string) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() error {
		var s struct {
			Phase string `json:"phase"`
		}
		if err := json.Unmarshal(st.call(t, http.MethodGet, "/sessions/"+id, ""), &s); err != nil {
			return err
		}
		if s.Phase != phase {
			return fmt.Errorf("session %s phase %q, want %q", id, s.Phase, phase)
		}
		return nil
	})
}

// TestChartOTLPExport: global.otlpEndpoint and global.otlpProtocol become
// every service's standard OTEL_EXPORTER_OTLP_ENDPOINT and _PROTOCOL; with
// no endpoint neither is set (nothing exported); an endpoint the services
// would refuse (no http(s) scheme) is refused by the schema.
func TestChartOTLPExport(t *testing.T) {
	t.Parallel()
	on := mustRender(t, parseValues(t, `global: {otlpEndpoint: "http://collector:4318", otlpProtocol: http/protobuf}`))
	off := mustRender(t, nil)
	for _, svc := range []string{"informer", "event-tally", "agui-proxy"} {
		name := releaseName + "-ambient-control-plane-" + svc + "-env"
		cm := on.find("ConfigMap", name)
		if cm == nil {
			t.Fatalf("no ConfigMap %s", name)
		}
		ep, _, _ := unstructured.NestedString(cm.Object, "data", "OTEL_EXPORTER_OTLP_ENDPOINT")
		proto, _, _ := unstructured.NestedString(cm.Object, "data", "OTEL_EXPORTER_OTLP_PROTOCOL")
		if ep != "http://collector:4318" || proto != "http/protobuf" {
			t.Errorf("%s: endpoint %q protocol %q", name, ep, proto)
		}
		if cm := off.find("ConfigMap", name); cm != nil {
			if _, set, _ := unstructured.NestedString(cm.Object, "data", "OTEL_EXPORTER_OTLP_ENDPOINT"); set {
				t.Errorf("%s: the default install sets an OTLP endpoint", name)
			}
		}
	}
	for _, bad := range []string{`global: {otlpEndpoint: "collector:4317"}`, `global: {otlpEndpoint: "http://c:4318", otlpProtocol: http/json}`} {
		if _, err := render(t, parseValues(t, bad)); err == nil {
			t.Errorf("values %s rendered; want a schema error", bad)
		}
	}
}

// trackLabel is the target label the ServiceMonitors copy each pod's
// ambient-code.io/track (stable, canary or shadow) into.
const trackLabel = "track"

// TestMonitoringIgnoresShadowTrack: the shadow informer and the shadow
// event-tally (informer.canary) sit behind the live services' metrics
// Services, so Prometheus scrapes them with the live pods. Each
// ServiceMonitor labels every target with its pod's track, and no alert
// rule or dashboard query reads a series of the shadow track (a shadow
// leader would hide a live informer without one; shadow publish errors
// would page for the live stream), while stable and canary series, and
// series scraped without the track label, still count.
func TestMonitoringIgnoresShadowTrack(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `{informer: {canary: {enabled: true, image: {tag: 0.2.0-rc.1}}}, metrics: {serviceMonitor: {enabled: true}}}`))
	// What Prometheus's Kubernetes discovery calls a pod label.
	podLabel := func(l string) string { return "__meta_kubernetes_pod_label_" + strutil.SanitizeLabelName(l) }
	for _, comp := range components {
		sm := r.find("ServiceMonitor", name(comp))
		if sm == nil {
			t.Fatalf("no ServiceMonitor %s", name(comp))
		}
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		for _, ep := range endpoints {
			cfgs := relabelConfigs(t, ep.(map[string]any)["relabelings"])
			for _, track := range []string{"stable", "canary", "shadow"} {
				lb := labels.NewBuilder(labels.FromStrings(podLabel("ambient-code.io/track"), track, podLabel("app.kubernetes.io/component"), comp))
				if !relabel.ProcessBuilder(lb, cfgs...) || lb.Get(trackLabel) != track {
					t.Errorf("ServiceMonitor %s: a %s pod is scraped with %s=%q, want %q", sm.GetName(), track, trackLabel, lb.Get(trackLabel), track)
				}
			}
		}
	}

	queries, _, _, _ := monitoringQueries(t)
	for _, q := range queries {
		e, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr)
		if err != nil {
			t.Fatalf("%s: %v", q.where, err)
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			reads := func(track string) bool {
				for _, m := range vs.LabelMatchers {
					if m.Name == trackLabel && !m.Matches(track) {
						return false
					}
				}
				return true
			}
			if reads("shadow") || !reads("stable") || !reads("canary") || !reads("") {
				t.Errorf("%s: %s reads shadow=%v stable=%v canary=%v untracked=%v; want every track but the shadow", q.where, vs, reads("shadow"), reads("stable"), reads("canary"), reads(""))
			}
			return nil
		})
	}
}

// relabelConfigs turns a ServiceMonitor endpoint's relabelings (the
// Prometheus Operator's camelCase fields) into Prometheus relabel configs.
func relabelConfigs(t *testing.T, relabelings any) []*relabel.Config {
	t.Helper()
	items, _ := relabelings.([]any)
	var out []*relabel.Config
	for _, it := range items {
		m := it.(map[string]any)
		c := relabel.DefaultRelabelConfig
		c.NameValidationScheme = model.UTF8Validation
		if ls, ok := m["sourceLabels"].([]any); ok {
			for _, l := range ls {
				c.SourceLabels = append(c.SourceLabels, model.LabelName(l.(string)))
			}
		}
		if s, ok := m["separator"].(string); ok {
			c.Separator = s
		}
		if s, ok := m["targetLabel"].(string); ok {
			c.TargetLabel = s
		}
		if s, ok := m["regex"].(string); ok {
			c.Regex = relabel.MustNewRegexp(s)
		}
		if s, ok := m["replacement"].(string); ok {
			c.Replacement = s
		}
		if s, ok := m["action"].(string); ok {
			c.Action = relabel.Action(strings.ToLower(s))
		}
		if err := c.Validate(model.UTF8Validation); err != nil {
			t.Fatalf("relabeling %v: %v", m, err)
		}
		out = append(out, &c)
	}
	return out
}
