package session_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/session"
)

func TestConditions(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	cs := session.Conditions{}.
		Set(session.Condition{Type: "A", Status: session.StatusUnknown}, t0).
		Set(session.Condition{Type: "B", Status: session.StatusTrue, Reason: "R"}, t0)
	// Same status later: the transition time stays; the reason may change.
	cs = cs.Set(session.Condition{Type: "A", Status: session.StatusUnknown, Reason: "Polling"}, t0.Add(time.Hour))
	a, ok := cs.Get("A")
	if !ok || a.Reason != "Polling" || !a.LastTransitionTime.Equal(t0.Truncate(time.Second)) {
		t.Fatalf("A = %+v", a)
	}
	// New status: a new time, and the order is kept.
	cs = cs.Set(session.Condition{Type: "A", Status: session.StatusTrue}, t0.Add(time.Hour))
	if a, _ := cs.Get("A"); !a.LastTransitionTime.Equal(t0.Add(time.Hour).Truncate(time.Second)) || cs[0].Type != "A" || len(cs) != 2 {
		t.Fatalf("conditions = %+v", cs)
	}
	if _, ok := cs.Get("C"); ok {
		t.Fatal("Get found a missing type")
	}
	want := `[{"type":"A","status":"True","lastTransitionTime":"2026-01-02T04:04:05Z"},{"type":"B","status":"True","reason":"R","lastTransitionTime":"2026-01-02T03:04:05Z"}]`
	if got := cs.JSON(); got != want {
		t.Fatalf("JSON =\n%s\nwant\n%s", got, want)
	}
}

// Times are stored in UTC whatever the caller's zone, and a time the caller
// gives is kept as given, even when the status did not change.
func TestConditionTimes(t *testing.T) {
	t.Parallel()
	east := time.FixedZone("UTC+2", 2*60*60)
	local := time.Date(2026, 1, 2, 5, 4, 5, 600, east) // 03:04:05.0000006 UTC
	cs := session.Conditions{}.Set(session.Condition{Type: "A", Status: session.StatusTrue}, local)
	if got, want := cs.JSON(), `[{"type":"A","status":"True","lastTransitionTime":"2026-01-02T03:04:05Z"}]`; got != want {
		t.Fatalf("JSON = %s, want %s (UTC, whole seconds)", got, want)
	}
	given := time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)
	cs = cs.Set(session.Condition{Type: "A", Status: session.StatusTrue, LastTransitionTime: given}, local.Add(time.Hour))
	if a, _ := cs.Get("A"); !a.LastTransitionTime.Equal(given) {
		t.Fatalf("A's time = %v, want the given %v", a.LastTransitionTime, given)
	}
}

// A condition without a time (kube-reconciler's) marshals without one, so
// the same failure is the same bytes; foreign fields of the CRD's
// conditions survive a round trip.
func TestConditionJSONAsStored(t *testing.T) {
	t.Parallel()
	plain := session.Conditions{{Type: "Reconciled", Status: session.StatusFalse, Reason: "InvalidSpec", Message: "m"}}
	if got, want := plain.JSON(), `[{"type":"Reconciled","status":"False","reason":"InvalidSpec","message":"m"}]`; got != want {
		t.Fatalf("JSON = %s, want %s", got, want)
	}
	crd := `[{"type":"Ready","status":"True","reason":"R","message":"m","lastTransitionTime":"2026-01-02T03:04:05Z","observedGeneration":3}]`
	cs, err := session.ParseConditions(crd)
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.JSON(); got != crd {
		t.Fatalf("round trip = %s, want %s", got, crd)
	}
	if got := session.Conditions(nil).JSON(); got != "[]" {
		t.Fatalf("empty JSON = %s", got)
	}
	for _, bad := range []string{"{}", "[1]", `[{"type":1}]`, "x"} {
		if _, err := session.ParseConditions(bad); !errors.Is(err, session.ErrInvalidConditions) {
			t.Errorf("ParseConditions(%q) err = %v, want ErrInvalidConditions", bad, err)
		}
	}
	for _, empty := range []string{"", "null", "[]"} {
		if cs, err := session.ParseConditions(empty); err != nil || len(cs) != 0 {
			t.Errorf("ParseConditions(%q) = %v, %v", empty, cs, err)
		}
	}
}

// Conditions come from the API as JSON strings: malformed input is an
// error, never a panic, and a condition set on whatever parsed reads back.
func FuzzConditions(f *testing.F) {
	for _, s := range []string{"", "[]", "null", `[{"type":"RunnerStarted","status":"True"}]`, `{"a":"b"}`, `[1,2]`, "\x00",
		`[{"type":"A","status":"True","lastTransitionTime":"bad"}]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cs, err := session.ParseConditions(s)
		if err != nil && !errors.Is(err, session.ErrInvalidConditions) {
			t.Fatalf("error %v does not wrap ErrInvalidConditions", err)
		}
		cs = cs.Set(session.Condition{Type: "RunnerStarted", Status: session.StatusTrue, Reason: "Started"}, time.Unix(1, 0))
		back, err := session.ParseConditions(cs.JSON())
		if err != nil {
			t.Fatalf("our own JSON does not parse: %v: %s", err, cs.JSON())
		}
		if c, ok := back.Get("RunnerStarted"); !ok || c.Status != session.StatusTrue {
			t.Fatalf("round trip lost the condition: %s", cs.JSON())
		}
	})
}
