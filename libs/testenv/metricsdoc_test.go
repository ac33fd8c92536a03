package testenv_test

import (
	"slices"
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
)

const metricsDoc = "# Operations\n\n## Metrics\n\nPrometheus names.\n\n" +
	"**svc**\n\n| metric | type | labels | meaning |\n|---|---|---|---|\n" +
	"| `svc_things_total` | counter | `resource`, `type` | things |\n" +
	"| `svc_refused_total` | counter | `reason` | refused: bad (`reason=\"bad\"`), worse (`reason=\"worse\"`, again `reason=\"bad\"`) |\n" +
	"| `svc_wait_seconds` | histogram | `route` | waits |\n" +
	"| `svc_up` | gauge | | 1 when up |\n\nplus the consumer-group metrics below.\n\n" +
	"**other** (no group)\n\n| metric | type | labels | meaning |\n|---|---|---|---|\n| `other_total` | counter | | others |\n\n" +
	"**Consumer groups** (every member: third), labels `group` and `member`:\n\n" +
	"| metric | type | labels | meaning |\n|---|---|---|---|\n| `consumer_group_lag` | gauge | `group`, `member` | lag |\n\n" +
	"## Next\n\n**ignored**\n\n| metric | type | labels | meaning |\n|---|---|---|---|\n| `ignored_total` | counter | | no |\n"

// TestMetricsDoc: the tables of the metrics reference are read per
// section, a service that consumes through a group also gets the
// consumer-group table, and a label's listed values are found.
func TestMetricsDoc(t *testing.T) {
	t.Parallel()
	d, err := testenv.ParseMetricsDoc([]byte(metricsDoc))
	if err != nil {
		t.Fatal(err)
	}
	for svc, want := range map[string][]string{
		"svc":   {"consumer_group_lag", "svc_refused_total", "svc_things_total", "svc_up", "svc_wait_seconds"},
		"other": {"other_total"},
		"third": nil,
	} {
		got, err := d.Metrics(svc)
		if svc == "third" {
			if err == nil {
				t.Errorf("Metrics(third): no error for a service without a section")
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for n := range got {
			names = append(names, n)
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Errorf("Metrics(%s) = %q, want %q", svc, names, want)
		}
	}
	m, _ := d.Metrics("svc")
	if got := m["svc_things_total"]; got.Type != "counter" || !slices.Equal(got.Labels, []string{"resource", "type"}) {
		t.Errorf("svc_things_total = %+v", got)
	}
	if got := m["svc_up"]; got.Type != "gauge" || len(got.Labels) != 0 {
		t.Errorf("svc_up = %+v", got)
	}
	if got := m["svc_refused_total"].Values("reason"); !slices.Equal(got, []string{"bad", "worse"}) {
		t.Errorf("reasons of svc_refused_total = %q, want [bad worse]", got)
	}
	if _, err := testenv.ParseMetricsDoc([]byte("## Metrics\n\n**s**\n\n| `a` | counter | resource | x |\n")); err == nil {
		t.Errorf("a labels column without `names` parsed; want an error")
	}
}

// TestSeriesProblems: a scrape agrees with the reference when every
// series of a documented metric has exactly its documented labels, not
// counting otel_scope_*, a bucket's le, and the runtime collectors.
func TestSeriesProblems(t *testing.T) {
	t.Parallel()
	d, err := testenv.ParseMetricsDoc([]byte(metricsDoc))
	if err != nil {
		t.Fatal(err)
	}
	body := `# TYPE svc_things_total counter
svc_things_total{otel_scope_name="svc",otel_scope_version="",resource="a, b}",type="x\"y"} 1
svc_wait_seconds_bucket{le="0.1",otel_scope_name="svc",route="r"} 1
svc_wait_seconds_sum{route="r"} 0.5
svc_wait_seconds_count{route="r"} 1
svc_up 1
consumer_group_lag{group="g",member="m"} 0
go_goroutines 9
target_info{service_name="svc"} 1
`
	series, err := testenv.ParseExposition(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 8 || !slices.Equal(series[0].Labels, []string{"otel_scope_name", "otel_scope_version", "resource", "type"}) {
		t.Fatalf("ParseExposition = %+v", series)
	}
	if got, err := d.SeriesProblems("svc", series); err != nil || len(got) != 0 {
		t.Errorf("SeriesProblems of a conforming scrape = %q, %v; want none", got, err)
	}
	bad, err := testenv.ParseExposition(`svc_things_total{resource="a"} 0
svc_things_total{resource="b"} 0
svc_up{pod="p"} 1
svc_new_total 1
svc_wait_seconds_count{route="r",le="1"} 1
`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.SeriesProblems("svc", bad)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`svc_new_total: exported, but not documented in the **svc** section`,
		`svc_things_total: documented label "type" missing from a series (labels ["resource"])`,
		`svc_up: label "pod" on a series is not documented (documented [])`,
		`svc_wait_seconds_count: label "le" on a series is not documented (documented ["route"])`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("SeriesProblems =\n%q\nwant\n%q", got, want)
	}
	if _, err := testenv.ParseExposition(`x{a="b} 1`); err == nil {
		t.Errorf("an unterminated label value parsed; want an error")
	}
}

// TestOperationsMetricsDoc: docs/operations.md#metrics parses, with a
// table for every service and the consumer groups, each row a counter,
// gauge or histogram.
func TestOperationsMetricsDoc(t *testing.T) {
	t.Parallel()
	d, err := testenv.ReadMetricsDoc("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"informer", "kube-reconciler", "runner-manager", "agui-proxy", "event-tally", "Consumer groups"} {
		ms, err := d.Metrics(svc)
		if err != nil {
			t.Error(err)
			continue
		}
		if len(ms) < 3 {
			t.Errorf("%s: %d metrics documented, want its table", svc, len(ms))
		}
		for _, m := range ms {
			if m.Type != "counter" && m.Type != "gauge" && m.Type != "histogram" {
				t.Errorf("%s: %s has type %q", svc, m.Name, m.Type)
			}
		}
	}
}
