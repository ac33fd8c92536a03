package session_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The phase table of UPSTREAM-BEHAVIOUR.md: seven phases, the last three
// terminal; the real server's start and stop guards.
func TestPhases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p                                            session.Phase
		valid, terminal, startable, stoppable, wants bool
	}{
		{session.PhaseNone, false, false, true, false, true},
		{session.PhasePending, true, false, false, true, true},
		{session.PhaseCreating, true, false, false, true, true},
		{session.PhaseRunning, true, false, false, true, true},
		{session.PhaseStopping, true, false, false, false, false},
		{session.PhaseStopped, true, true, true, false, false},
		{session.PhaseCompleted, true, true, true, false, false},
		{session.PhaseFailed, true, true, true, false, false},
		{"running", false, false, false, false, false},
	}
	for _, tc := range tests {
		got := [5]bool{tc.p.Valid(), tc.p.Terminal(), tc.p.Startable(), tc.p.Stoppable(), tc.p.WantsRunner()}
		want := [5]bool{tc.valid, tc.terminal, tc.startable, tc.stoppable, tc.wants}
		if got != want {
			t.Errorf("%q: valid, terminal, startable, stoppable, wants runner = %v, want %v", tc.p, got, want)
		}
	}
	ps := session.Phases()
	if len(ps) != 7 || ps[0] != session.PhasePending || ps[6] != session.PhaseFailed {
		t.Fatalf("Phases = %v", ps)
	}
	ps[0] = "x" // the caller's copy
	if session.Phases()[0] != session.PhasePending {
		t.Fatal("Phases shares its array")
	}
	if p := session.PhaseOf(&ambientv1.Session{Phase: proto.String("Running")}); p != session.PhaseRunning {
		t.Fatalf("PhaseOf = %q", p)
	}
	if p := session.PhaseOf(nil); p != session.PhaseNone {
		t.Fatalf("PhaseOf(nil) = %q", p)
	}
	if got := *session.PhaseStopped.Ptr(); got != "Stopped" {
		t.Fatalf("Ptr = %q", got)
	}
}
