package session

import (
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Phase is a session's phase, as the API stores it (Session.phase,
// UpdateSessionStatusRequest.phase).
type Phase string

// The phases UpdateSessionStatus accepts, in lifecycle order, and the empty
// phase of a session nothing has written a phase for yet.
const (
	// PhaseNone is a new session's phase: the API leaves it empty until
	// someone writes one. It is not a phase UpdateSessionStatus accepts.
	PhaseNone      Phase = ""
	PhasePending   Phase = "Pending"
	PhaseCreating  Phase = "Creating"
	PhaseRunning   Phase = "Running"
	PhaseStopping  Phase = "Stopping"
	PhaseStopped   Phase = "Stopped"
	PhaseCompleted Phase = "Completed"
	PhaseFailed    Phase = "Failed"
)

// phases are the seven phases UpdateSessionStatus accepts.
var phases = [...]Phase{PhasePending, PhaseCreating, PhaseRunning, PhaseStopping, PhaseStopped, PhaseCompleted, PhaseFailed}

// Phases returns the seven phases UpdateSessionStatus accepts, in lifecycle
// order (the last three are terminal). The caller owns the slice.
func Phases() []Phase {
	out := make([]Phase, len(phases))
	copy(out, phases[:])
	return out
}

// PhaseOf returns s's phase (PhaseNone for a nil session or an unset phase).
func PhaseOf(s *ambientv1.Session) Phase { return Phase(s.GetPhase()) }

// Valid reports whether p is one of the seven phases UpdateSessionStatus
// accepts (PhaseNone is not).
func (p Phase) Valid() bool {
	for _, q := range phases {
		if p == q {
			return true
		}
	}
	return false
}

// Terminal reports whether p is final: Stopped, Completed or Failed. No
// runner runs a session in a terminal phase; only a start leaves it.
func (p Phase) Terminal() bool {
	return p == PhaseStopped || p == PhaseCompleted || p == PhaseFailed
}

// Startable reports whether the API's start (POST /sessions/{id}/start)
// accepts a session in phase p: no phase yet, or a terminal one. A start
// sets PhasePending.
func (p Phase) Startable() bool { return p == PhaseNone || p.Terminal() }

// Stoppable reports whether the API's stop (POST /sessions/{id}/stop)
// accepts a session in phase p: Pending, Creating or Running. A stop sets
// PhaseStopping.
func (p Phase) Stoppable() bool {
	return p == PhasePending || p == PhaseCreating || p == PhaseRunning
}

// WantsRunner reports whether a session in phase p is meant to run: no
// phase yet, Pending, Creating or Running. An executor starts (or keeps)
// a runner for it; Stopping and the terminal phases want none.
func (p Phase) WantsRunner() bool { return p == PhaseNone || p.Stoppable() }

// Ptr returns p as the optional string field of a status request.
func (p Phase) Ptr() *string {
	s := string(p)
	return &s
}
