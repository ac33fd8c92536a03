package group

import "sync/atomic"

// Stats counts what a member did with its messages. Run exports it as
// metrics when Config.Meter is set; pass one in Config.Stats to read it
// directly (tests) or to keep counting across rejoins. It is safe for
// concurrent use. A retried message counts once per delivery in Delivered.
type Stats struct {
	delivered    atomic.Uint64
	acked        atomic.Uint64
	retried      atomic.Uint64
	deadLettered atomic.Uint64
	undecodable  atomic.Uint64
	lag          atomic.Uint64
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
	// Lag is how many messages waited in the member's consumer behind the
	// last delivery (its metadata's NumPending): the member's backlog.
	Lag uint64
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
		Lag:          s.lag.Load(),
	}
}
