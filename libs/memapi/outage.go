package memapi

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// outage is the state of an injected outage of the whole API (StartOutage):
// the process keeps its state in memory, so instead of restarting it, Serve
// closes its listeners and connections for the outage and listens again
// after it, which is what clients see of a restart. Outages last
// wall-clock time, whatever WithClock says.
type outage struct {
	// until is the outage's end in Unix nanoseconds, 0 without one. Read
	// without mu by every call (InOutage), written under mu.
	until atomic.Int64
	mu    sync.Mutex
	timer *time.Timer // guarded by mu; ends the outage at until
	gen   uint64      // guarded by mu; a timer ends only the outage it was set for
	// serving is where Serve is (guarded by mu), and changed (guarded by
	// mu) is closed and replaced whenever an outage starts or ends and
	// whenever serving changes: StartOutage and EndOutage wait on it for
	// Serve to follow, Serve waits on it for outages.
	serving serveState
	changed chan struct{} // made by New
}

// serveState is where Serve is in following outages.
type serveState int

const (
	notServing serveState = iota // Serve has not started or has returned
	listening                    // accepting connections
	closed                       // listeners and connections closed for an outage
	reopening                    // the outage ended; listening again
)

// broadcastLocked wakes every waiter on changed.
func (o *outage) broadcastLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// snapshot returns whether an outage is on, where Serve is, and a channel
// closed at the next change of either.
func (o *outage) snapshot() (on bool, st serveState, changed <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.until.Load() != 0, o.serving, o.changed
}

// setServing records where Serve is.
func (o *outage) setServing(st serveState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.serving = st
	o.broadcastLocked()
}

// reopen waits until no outage is on and records that Serve listens
// again, in one step, so that an outage starting meanwhile waits for Serve
// to close again. It returns false when ctx ends first.
func (o *outage) reopen(ctx context.Context) bool {
	for {
		o.mu.Lock()
		if o.until.Load() == 0 {
			o.serving = reopening
			o.broadcastLocked()
			o.mu.Unlock()
			return true
		}
		changed := o.changed
		o.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// settle waits until Serve follows the outage state: closed during an
// outage, listening without one, or not serving at all (then there is
// nothing to wait for). Serve bounds its way there (outageGrace, a few
// attempts to listen again).
func (o *outage) settle() {
	for {
		on, st, changed := o.snapshot()
		if st == notServing || (on && st == closed) || (!on && st == listening) {
			return
		}
		<-changed
	}
}

// errOutage is what a gRPC call gets during an outage when it reaches the
// server at all: between the start of an outage and the closing of its
// connection, or on a grpc.Server of NewGRPCServer, which Serve does not
// run. It is the code a client sees while the real server restarts.
var errOutage = status.Error(codes.Unavailable, "memapi: API outage injected (the server is restarting or unreachable)")

// StartOutage makes the API look like the real ambient-api-server while it
// restarts, for d: every open watch stream ends with a clean EOF
// (EndWatches), as on the real server's shutdown; then Serve stops like
// that server (a gRPC GOAWAY and the REST server's shutdown, in-flight
// calls finishing within outageGrace), so every connection, gRPC and REST,
// is closed, and its listeners are closed, so new connections are refused
// (a client dials ECONNREFUSED and retries on its own backoff) until the
// outage ends and Serve listens again on the same addresses. The stored
// objects are kept: after the outage the API answers as before it.
//
// StartOutage returns once the connections are closed (at once without a
// running Serve). A call that reaches the server anyway (the moment before
// the connection closes, or a server of NewGRPCServer or Handler that Serve
// does not run) fails with codes.Unavailable, or REST 503. A second
// StartOutage during an outage moves its end to d from now. It returns the
// number of watch streams ended. d <= 0 ends an outage (EndOutage).
func (s *Server) StartOutage(d time.Duration) int {
	if d <= 0 {
		s.EndOutage()
		return 0
	}
	o := &s.outage
	o.mu.Lock()
	if o.timer != nil {
		o.timer.Stop()
	}
	o.gen++
	gen := o.gen
	o.until.Store(time.Now().Add(d).UnixNano())
	o.broadcastLocked()
	// A timer that fired while a later StartOutage held the lock must not
	// end the later outage: it ends its own generation only.
	o.timer = time.AfterFunc(d, func() { s.endOutage(gen) })
	o.mu.Unlock()
	// After the flag is set: a watch that registers from now on sees it
	// (watch checks after registering), one registered before is ended here.
	n := s.EndWatches()
	o.settle()
	return n
}

// EndOutage ends an outage started by StartOutage now (no-op without one).
// It returns once Serve listens again (at once without a running Serve);
// clients reconnect on their own backoff.
func (s *Server) EndOutage() {
	s.outage.mu.Lock()
	gen := s.outage.gen
	s.outage.mu.Unlock()
	s.endOutage(gen)
	s.outage.settle()
}

// endOutage ends the outage of generation gen, if it is still on.
func (s *Server) endOutage(gen uint64) {
	o := &s.outage
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.until.Load() == 0 || o.gen != gen {
		return
	}
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
	o.until.Store(0)
	o.broadcastLocked()
	s.opts.log.Info("API outage over")
}

// InOutage reports whether an outage is on, and until when. It takes no
// lock: every gRPC and REST call asks it.
func (s *Server) InOutage() (bool, time.Time) {
	until := s.outage.until.Load()
	if until == 0 {
		return false, time.Time{}
	}
	return true, time.Unix(0, until)
}

// refuseInOutage is errOutage during an outage, else nil.
func (s *Server) refuseInOutage() error {
	if down, _ := s.InOutage(); down {
		return errOutage
	}
	return nil
}

// outageHandler answers 503 during an outage, as a proxy in front of a
// restarting server does, and passes the request on otherwise. Under
// Serve a request rarely gets here during an outage: only in the moment
// before its connection is closed.
func (s *Server) outageHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down, _ := s.InOutage(); down {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "memapi: API outage injected (the server is restarting or unreachable)", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}
