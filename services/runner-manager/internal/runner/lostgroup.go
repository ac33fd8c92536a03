package runner

// LostGroup names the process group of a runner that a previous
// incarnation of this replica started and lost track of (it was killed
// with -9, or crashed): Pdeathsig kills a runner's leader with its
// manager, not the leader's children, which live on in the group.
type LostGroup struct {
	// PGID is the group's id: the pid of the runner (its leader).
	PGID int
	// StartTicks is the leader's start time (/proc/<pid>/stat field 22,
	// clock ticks since boot) as recorded at spawn; 0 when the record
	// predates it, and then nothing is signalled.
	StartTicks uint64
	// SessionID is the runner's session: every process of a runner
	// carries SESSION_ID=<it> in its environment.
	SessionID string
}
