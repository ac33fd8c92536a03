package group

import (
	"maps"
	"sync"
	"sync/atomic"
)

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
	coalesced    atomic.Uint64
	reordered    atomic.Uint64
	parked       atomic.Uint64
	parkedNow    atomic.Int64
	lag          atomic.Uint64
	inFlight     atomic.Int64
	partitions   atomic.Int64
	unowned      atomic.Int64
	joined       atomic.Bool
	notReady     atomic.Bool

	mu sync.Mutex
	// backlog is the messages of each partition this member owns in the
	// group's work-queue stream (waiting or being handled), as last
	// counted; replaced whole. Guarded by mu.
	backlog map[int]uint64
}

// setBacklog replaces the per-partition backlog.
func (s *Stats) setBacklog(b map[int]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backlog = b
}

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	// Delivered counts every message handed to the handler, or dead
	// lettered or skipped without it, each try of a retry again; a
	// coalesced message counts once.
	Delivered uint64
	// Acked counts messages whose handler succeeded and whose ack the
	// server confirmed.
	Acked uint64
	// Retried counts handler errors that are retried (in the object's
	// lane, after the backoff).
	Retried uint64
	// DeadLettered counts messages published to the DLQ and terminated
	// (handler gave up, terminal error, or undecodable).
	DeadLettered uint64
	// Undecodable counts the subset of DeadLettered that failed to decode.
	Undecodable uint64
	// Coalesced counts messages acked without a handler call of their
	// own, because a newer message of the same object stood for them
	// (Config.Coalesce).
	Coalesced uint64
	// Reordered counts messages delivered before an older message of
	// their object that was still unsettled; each waited for it (see
	// order.go).
	Reordered uint64
	// Parked counts messages acked after a failed try, their retries
	// held in memory (Config.ParkFailures).
	Parked uint64
	// ParkedObjects is how many objects have parked work now: failed, and
	// waiting in memory for their next try.
	ParkedObjects int
	// Lag is how many messages wait in the member's consumer on the
	// server: the NumPending of the last delivery's metadata or of the
	// consumer info read at each heartbeat, whichever came last. The
	// heartbeat's read keeps it true while nothing is delivered (a member
	// whose MaxInFlight is all held, or a delivery whose metadata lagged
	// the stream). Messages delivered and waiting in their lane are in
	// InFlight instead.
	Lag uint64
	// InFlight is how many messages the member holds now (delivered, not
	// yet acked, dead-lettered or released), at most 2 x
	// Config.MaxInFlight (the head-room for lanes in backoff).
	InFlight uint64
	// Partitions is how many partitions the group's config gives this
	// member now; its Lag and InFlight are those partitions' backlog.
	Partitions int
	// Unowned is how many of the group's partitions no member consumes as,
	// by the group's config this member last saw: their events wait until
	// a member joins (only canaries are alive, or none at all).
	Unowned int
	// Backlog is, for each partition this member owns, how many of its
	// messages are in the group's work-queue stream (waiting or being
	// handled), counted at most every backlogEvery (see Run).
	Backlog map[int]uint64
	// Joined is set while the member is in the group: from the moment Run
	// has joined (heartbeat written, mapping read, consumer started; a
	// member without partitions counts) until Run returns. Readiness
	// checks use it: a member waiting for the stream, retrying its join
	// or rejoining after the group stopped does no work.
	Joined bool
	// NotReady is set while the member reports itself not ready: its
	// Config.Ready has failed for NotReadyAfter (see Config.Ready).
	NotReady bool
}

// Snapshot returns the current counters. A nil *Stats gives zeros.
func (s *Stats) Snapshot() StatsSnapshot {
	if s == nil {
		return StatsSnapshot{}
	}
	s.mu.Lock()
	backlog := maps.Clone(s.backlog)
	s.mu.Unlock()
	return StatsSnapshot{
		Backlog:       backlog,
		Delivered:     s.delivered.Load(),
		Acked:         s.acked.Load(),
		Retried:       s.retried.Load(),
		DeadLettered:  s.deadLettered.Load(),
		Undecodable:   s.undecodable.Load(),
		Coalesced:     s.coalesced.Load(),
		Reordered:     s.reordered.Load(),
		Parked:        s.parked.Load(),
		ParkedObjects: int(s.parkedNow.Load()),
		Lag:           s.lag.Load(),
		InFlight:      uint64(max(0, s.inFlight.Load())),
		Partitions:    int(s.partitions.Load()),
		Unowned:       int(s.unowned.Load()),
		Joined:        s.joined.Load(),
		NotReady:      s.notReady.Load(),
	}
}
