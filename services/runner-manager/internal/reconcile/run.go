package reconcile

import (
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// run is one local runner and what this replica knows about it.
type run struct {
	id        string
	projectID string
	proc      *runner.Process
	received  time.Time // when the event that started it arrived

	stopCh   chan struct{} // closed by requestStop
	stopOnce sync.Once

	mu      sync.Mutex
	rev     uint64            // guarded by mu; registry revision last written
	ep      registry.Endpoint // guarded by mu; registry record last written
	conds   conditions        // guarded by mu
	deleted bool              // guarded by mu; the session was deleted
	stopped bool              // guarded by mu; a Stopping phase asked for the stop
	final   bool              // guarded by mu; a terminal phase was written already
	lost    bool              // guarded by mu; another replica took the claim over
	unsent  *statusUpdate     // guarded by mu; a Creating/Running write that failed, retried by the sweep
	// runningSince is the start_time written with Running; zero until the
	// health check passed. Guarded by mu.
	runningSince time.Time
}

// setUnsent records (or with nil clears) a status write to retry.
func (rn *run) setUnsent(u *statusUpdate) {
	rn.mu.Lock()
	rn.unsent = u
	rn.mu.Unlock()
}

func newRun(id string, proc *runner.Process, received time.Time, conds conditions) *run {
	return &run{id: id, proc: proc, received: received, conds: conds, stopCh: make(chan struct{})}
}

// requestStop asks the supervisor to stop the runner (idempotent).
func (rn *run) requestStop(deleted bool) {
	rn.mu.Lock()
	rn.stopped = true
	if deleted {
		rn.deleted = true
	}
	rn.mu.Unlock()
	rn.stopOnce.Do(func() { close(rn.stopCh) })
}

// markLost records that the claim belongs to someone else now: the runner is
// killed and nothing more is written for it.
func (rn *run) markLost() {
	rn.mu.Lock()
	rn.lost = true
	rn.final = true
	rn.mu.Unlock()
	rn.stopOnce.Do(func() { close(rn.stopCh) })
}

func (rn *run) getState() string {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.ep.State
}

func (rn *run) setCond(c Condition) conditions {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.conds = rn.conds.set(c, time.Now())
	return rn.conds
}
