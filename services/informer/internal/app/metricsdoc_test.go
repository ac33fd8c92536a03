package app_test

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// TestCountersAtZeroFromTermStart: docs/operations.md#metrics promises
// that every informer counter exists at 0 from the start of a leader's
// term, so an alert on its rate() sees 0 rather than no data. Right after
// a leader took over an empty API (nothing published, omitted, repaired
// or audited yet), /metrics has a series of every counter of the
// informer's table for every resource, and every series carries exactly
// the labels the table lists (the counters with a second label, type or
// omitted, included).
func TestCountersAtZeroFromTermStart(t *testing.T) {
	t.Parallel()
	doc, err := testenv.ReadMetricsDoc("../../../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	documented, err := doc.Metrics("informer")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	inf := h.start("a", nil)
	h.waitLeaderReady(inf, 30*time.Second)
	_, body, err := inf.httpGet("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	series, err := testenv.ParseExposition(body)
	if err != nil {
		t.Fatal(err)
	}
	counters := 0
	for _, name := range slices.Sorted(maps.Keys(documented)) {
		m := documented[name]
		if m.Type != "counter" {
			continue
		}
		counters++
		if !slices.Contains(m.Labels, "resource") {
			if _, ok := testenv.MetricSum(body, m.Name); !ok {
				t.Errorf("%s is not exported at the start of the term", m.Name)
			}
			continue
		}
		for _, r := range []eventsv1.Resource{eventsv1.Resource_RESOURCE_SESSIONS, eventsv1.Resource_RESOURCE_PROJECTS, eventsv1.Resource_RESOURCE_PROJECT_SETTINGS} {
			filter := `resource="` + events.ResourceToken(r) + `"`
			if _, ok := testenv.MetricSum(body, m.Name, filter); !ok {
				t.Errorf("%s{%s} is not exported at the start of the term", m.Name, filter)
			}
		}
	}
	if counters < 10 {
		t.Fatalf("%d counters in the informer's table of docs/operations.md#metrics: not the whole table", counters)
	}
	problems, err := doc.SeriesProblems("informer", series)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("/metrics disagrees with docs/operations.md#metrics: %s", p)
	}
}
