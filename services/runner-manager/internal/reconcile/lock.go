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
func (r *Reconciler) goStart(ctx context.Context, fn func(ctx context.Context)) {
	r.starts.Add(1)
	go func() { // owned by the Reconciler (r.starts); ends when fn returns
		defer r.starts.Done()
		fn(context.WithoutCancel(ctx))
	}()
}
