package group

import "time"

// schedule is Config.Backoff as a backoff.BackOff: the n-th wait is
// delays[min(start+n, len-1)], so a message that already had tries (on a
// member that died) goes on where they left off. Not safe for concurrent
// use; each retry loop has its own.
type schedule struct {
	delays []time.Duration
	start  int
	n      int
	// waited is set when the caller waited out the next delay itself (a
	// parked lane, see waitParked): the next wait is 0, once.
	waited bool
}

// NextBackOff returns the next wait (0 with no delays).
func (s *schedule) NextBackOff() time.Duration {
	if len(s.delays) == 0 {
		return 0
	}
	d := s.delays[min(s.n, len(s.delays)-1)]
	s.n++
	if s.waited {
		s.waited = false
		return 0
	}
	return d
}

// Reset goes back to the first wait (backoff.Retry calls it on start).
func (s *schedule) Reset() { s.n = s.start }
