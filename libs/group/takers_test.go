package group

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestTakers: the not-ready sharing members drop out only while a sharing
// member is ready and settled; pinned members always keep their slice.
func TestTakers(t *testing.T) {
	t.Parallel()
	ready, settling, notReady := memberRecord{}, memberRecord{Settling: true}, memberRecord{NotReady: true}
	pinned := func(rec memberRecord, ps ...int) memberRecord {
		rec.Partitions = ps
		return rec
	}
	tests := []struct {
		name string
		live map[string]memberRecord
		want map[string][]int
	}{
		{name: "all ready", live: map[string]memberRecord{"a": ready, "b": ready}, want: map[string][]int{"a": nil, "b": nil}},
		{name: "not ready with a ready peer", live: map[string]memberRecord{"a": notReady, "b": ready}, want: map[string][]int{"b": nil}},
		{name: "a record from before readiness counts as ready", live: map[string]memberRecord{"a": notReady, "b": {Handoff: &handoffRecord{}}}, want: map[string][]int{"b": nil}},
		{name: "none ready: all share", live: map[string]memberRecord{"a": notReady, "b": notReady}, want: map[string][]int{"a": nil, "b": nil}},
		{name: "the ready peer still settling: all share", live: map[string]memberRecord{"a": notReady, "b": settling}, want: map[string][]int{"a": nil, "b": nil}},
		{name: "a settling member takes its share", live: map[string]memberRecord{"a": settling, "b": ready, "c": notReady}, want: map[string][]int{"a": nil, "b": nil}},
		{name: "a not-ready canary keeps its pins", live: map[string]memberRecord{"c": pinned(notReady, 1), "b": ready}, want: map[string][]int{"b": nil, "c": {1}}},
		{name: "a ready canary takes no shared partitions", live: map[string]memberRecord{"c": pinned(ready, 1), "a": notReady}, want: map[string][]int{"a": nil, "c": {1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, takers(tc.live), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("takers differ (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReadinessHysteresis: a member turns not ready only after Ready has
// failed for NotReadyAfter without a break, ready again at the first pass,
// and is settled once Ready has passed for NotReadyAfter without a break.
func TestReadinessHysteresis(t *testing.T) {
	t.Parallel()
	failing := false
	m := &membership{log: slog.New(slog.DiscardHandler), cfg: Config{NotReadyAfter: 10 * time.Second, Stats: &Stats{},
		Ready: func() error {
			if failing {
				return errors.New("api unreachable")
			}
			return nil
		}}}
	t0 := time.Unix(1_700_000_000, 0)
	steps := []struct {
		at                 time.Duration
		failing            bool
		notReady, settling bool
	}{
		{at: 0, settling: true}, // joined: ready, not yet settled
		{at: 10 * time.Second},
		{at: 11 * time.Second, failing: true, settling: true},
		{at: 20 * time.Second, failing: true, settling: true},
		{at: 21 * time.Second, settling: true}, // a 10 s blip moved nothing
		{at: 22 * time.Second, failing: true, settling: true},
		{at: 32 * time.Second, failing: true, notReady: true},
		{at: 40 * time.Second, failing: true, notReady: true},
		{at: 41 * time.Second, settling: true}, // ready again at once
		{at: 51 * time.Second},
	}
	for _, s := range steps {
		failing = s.failing
		notReady, settling := m.readiness(t0.Add(s.at))
		if notReady != s.notReady || settling != s.settling {
			t.Fatalf("at %s (failing %t): not ready %t, settling %t; want %t, %t", s.at, s.failing, notReady, settling, s.notReady, s.settling)
		}
		if got := m.cfg.Stats.Snapshot().NotReady; got != s.notReady {
			t.Fatalf("at %s: Stats.NotReady %t, want %t", s.at, got, s.notReady)
		}
	}
}
