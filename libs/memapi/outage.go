package memapi

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// outage is the state of an injected outage of the whole API (StartOutage):
// the process keeps its state in memory, so it cannot be restarted to look
// down; instead every call is refused until the outage ends. Outages last
// wall-clock time, whatever WithClock says.
type outage struct {
	// until is the outage's end in Unix nanoseconds, 0 without one. Read
	// without mu by every call (InOutage), written under mu.
	until atomic.Int64
	mu    sync.Mutex
	timer *time.Timer // guarded by mu; ends the outage at until
	gen   uint64      // guarded by mu; a timer ends only the outage it was set for
}

// errOutage is what every gRPC call gets during an outage: the code a
// client sees while the real server restarts or is unreachable, which
// clients treat as transient.
var errOutage = status.Error(codes.Unavailable, "memapi: API outage injected (the server is restarting or unreachable)")

// StartOutage makes the API look down for d, as the real ambient-api-server
// does while it restarts or is unreachable: every gRPC call, unary and
// stream (the health check included), fails with codes.Unavailable, every
// REST request (/healthcheck included) answers 503, and every open watch
// stream ends with a clean EOF (EndWatches), as on the real server's
// shutdown. The stored objects are kept: after the outage the API answers
// as before it. A second StartOutage during an outage moves its end to d
// from now. It returns the number of watch streams ended. d <= 0 ends an
// outage (EndOutage).
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
	// A timer that fired while a later StartOutage held the lock must not
	// end the later outage: it ends its own generation only.
	o.timer = time.AfterFunc(d, func() { s.endOutage(gen) })
	o.mu.Unlock()
	// After the flag is set: a watch that registers from now on sees it
	// (watch checks after registering), one registered before is ended here.
	return s.EndWatches()
}

// EndOutage ends an outage started by StartOutage now (no-op without one).
func (s *Server) EndOutage() {
	s.outage.mu.Lock()
	gen := s.outage.gen
	s.outage.mu.Unlock()
	s.endOutage(gen)
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
// restarting server does, and passes the request on otherwise.
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
