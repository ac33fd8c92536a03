package reconcile

import "context"

// sessionLock is the session lock a handler, the resync or the capacity
// queue holds (supervise.Supervisor.Lock). A start hands it to the
// goroutine that finishes the start (ensureRunning), so that no other
// event, sweep or resync acts on the session meanwhile.
type sessionLock struct {
	unlock func()
	handed bool
}

// lock locks session id.
func (r *Reconciler) lock(id string) *sessionLock { return &sessionLock{unlock: r.sup.Lock(id)} }

// release unlocks, unless the lock was handed off.
func (l *sessionLock) release() {
	if !l.handed {
		l.unlock()
	}
}

// handOff gives the lock away: the caller's goroutine must call the
// returned unlock; release then does nothing.
func (l *sessionLock) handOff() (unlock func()) {
	l.handed = true
	return l.unlock
}

// goStart runs fn on a goroutine owned by the reconciler (r.starts, waited
// in Run before the supervisor shuts down). fn keeps ctx's values (the
// trace) but not its cancellation: the event that asked for the start is
// acked as soon as its handler returns.
//
// While fn runs, the start of session id counts in r.starting. When it
// ends, the queue is woken (startWaiting) if sessions wait, unless id went
// back to the queue: a runner that held its slot while its start still
// counted was counted twice and may have kept a queued session waiting,
// and a start given up (stale, deleted, claimed elsewhere) left its slot
// to them. A start deferred for capacity does not wake it: that would
// retry at once, and again, while the capacity hint is wrong (ports held
// by other processes of the host).
func (r *Reconciler) goStart(ctx context.Context, id string, fn func(ctx context.Context)) {
	r.starts.Add(1)
	r.starting.Add(1)
	r.projectStarts.handOff(id)
	go func() { // owned by the Reconciler (r.starts); ends when fn returns
		defer r.starts.Done()
		fn(context.WithoutCancel(ctx))
		r.starting.Add(-1)
		r.projectStarts.done(id)
		if r.queue.Len() > 0 && !r.queue.Has(id) {
			r.queue.Freed()
		}
	}()
}
