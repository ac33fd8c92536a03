package group

import "sync/atomic"

// Stats counts what a member did with its messages. Pass one in
// Config.Stats and read it from a metrics callback; it is safe for
// concurrent use. A retried message counts once per delivery in Delivered.
type Stats struct {
	delivered    atomic.Uint64
	acked        atomic.Uint64
	retried      atomic.Uint64
	deadLettered atomic.Uint64
	undecodable  atomic.Uint64
}

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	// Delivered counts every delivery handed to the member (retries too).
	Delivered uint64
	// Acked counts messages whose handler succeeded and whose ack the
	// server confirmed.
	Acked uint64
	// Retried counts NakWithDelay after a handler error.
	Retried uint64
	// DeadLettered counts messages published to the DLQ and terminated
	// (handler gave up, terminal error, or undecodable).
	DeadLettered uint64
	// Undecodable counts the subset of DeadLettered that failed to decode.
	Undecodable uint64
}

// Snapshot returns the current counters. A nil *Stats gives zeros.
func (s *Stats) Snapshot() StatsSnapshot {
	if s == nil {
		return StatsSnapshot{}
	}
	return StatsSnapshot{
		Delivered:    s.delivered.Load(),
		Acked:        s.acked.Load(),
		Retried:      s.retried.Load(),
		DeadLettered: s.deadLettered.Load(),
		Undecodable:  s.undecodable.Load(),
	}
}
