package group

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// ownership knows which partitions this member owns and cancels the work
// of a partition the moment the group's config gives it to another member.
// Without it a handler kept writing after its partition moved, so an old
// apply could land after the new owner's newer one (issue 14). It is safe
// for concurrent use.
type ownership struct {
	mu      sync.Mutex
	owned   []int                        // guarded by mu; sorted
	flights map[int]map[*flight]struct{} // guarded by mu; running work by partition
	seen    uint64                       // guarded by mu; config revision owned was set from
	// rewrittenAt is when a config after the first was applied: pcgroups
	// re-creates the member's consumer on each, which can lose deliveries
	// in transit (see order.go). Guarded by mu.
	rewrittenAt time.Time
	// lostAt is when each lost partition whose work still runs was lost;
	// the member keeps reporting it as held (hand-off) until that work
	// ends or the stop grace passed. Guarded by mu.
	lostAt map[int]time.Time
	// changed gets a value (never blocking, capacity 1) when what the
	// member must report for hand-offs changed: a config was applied or
	// the last work of a lost partition ended. Run heartbeats at once.
	changed chan struct{}
}

// flight is work on one partition that must stop when it moves.
type flight struct {
	partition int
	cancel    context.CancelCauseFunc
	moved     bool // guarded by ownership.mu
}

func newOwnership() *ownership {
	return &ownership{flights: map[int]map[*flight]struct{}{}, lostAt: map[int]time.Time{}, changed: make(chan struct{}, 1)}
}

// begin registers work on partition p, cancelled with ErrPartitionMoved
// when p moves away. It returns false (and registers nothing) when this
// member does not own p now.
func (o *ownership) begin(p int, cancel context.CancelCauseFunc) (*flight, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !slices.Contains(o.owned, p) {
		return nil, false
	}
	f := &flight{partition: p, cancel: cancel}
	if o.flights[p] == nil {
		o.flights[p] = map[*flight]struct{}{}
	}
	o.flights[p][f] = struct{}{}
	return f, true
}

// end unregisters f and reports whether its partition moved meanwhile.
func (o *ownership) end(f *flight) (moved bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.flights[f.partition], f)
	if _, lost := o.lostAt[f.partition]; lost && len(o.flights[f.partition]) == 0 {
		delete(o.lostAt, f.partition)
		o.notify()
	}
	return f.moved
}

// partitions returns the partitions this member owns now.
func (o *ownership) partitions() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.owned)
}

// notify tells Run the hand-off state changed. Caller holds mu.
func (o *ownership) notify() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

// holding returns the config revision applied last and the partitions
// this member holds: those it owns and those it lost less than grace ago
// whose work still runs (work that ignores its cancellation is given up
// after grace, as a stop gives it up).
func (o *ownership) holding(grace time.Duration) (seen uint64, held []int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	held = slices.Clone(o.owned)
	for p, at := range o.lostAt {
		if time.Since(at) < grace {
			held = append(held, p)
		}
	}
	slices.Sort(held)
	return o.seen, held
}

// lastRewrite returns when a config after the first was last applied
// (zero when none was).
func (o *ownership) lastRewrite() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rewrittenAt
}

// movedAway reports whether f's partition moved.
func (o *ownership) movedAway(f *flight) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return f.moved
}

// set records the partitions this member owns now, from the config at
// revision rev, and cancels the work of every partition it lost. It
// returns the partitions it gained and those it lost.
func (o *ownership) set(owned []int, rev uint64) (gained, lost []int) {
	owned = slices.Sorted(slices.Values(owned))
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.notify()
	if o.seen != 0 && rev != o.seen {
		o.rewrittenAt = time.Now()
	}
	o.seen = rev
	for _, p := range owned {
		if !slices.Contains(o.owned, p) {
			gained = append(gained, p)
		}
	}
	for _, p := range o.owned {
		if slices.Contains(owned, p) {
			continue
		}
		lost = append(lost, p)
		if len(o.flights[p]) > 0 {
			o.lostAt[p] = time.Now()
		}
		for f := range o.flights[p] {
			f.moved = true
			f.cancel(ErrPartitionMoved)
		}
	}
	o.owned = owned
	return gained, lost
}

// watchOwnership keeps own equal to this member's partitions in the
// group's config until ctx ends or the watcher closes (the connection
// closed; pcgroups, watching the same key, stops the group then). It
// returns once the current config has been applied, so messages are never
// checked against an unknown ownership; the watch goes on in a goroutine
// whose end closes the returned channel.
func watchOwnership(ctx context.Context, m *membership, own *ownership, log *slog.Logger) (<-chan struct{}, error) {
	key := m.cfg.Stream + "." + m.cfg.Group
	w, err := m.configs.Watch(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("watch group config %s: %w", key, err)
	}
	apply := func(e jetstream.KeyValueEntry) {
		var c pcgroups.ElasticConsumerGroupConfig
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &c) != nil {
			// Deleted or unreadable: pcgroups stops consuming; so do we.
			c = pcgroups.ElasticConsumerGroupConfig{}
		}
		mine := partitionsOf(c.MemberMappings, m.cfg.Member)
		m.cfg.Stats.partitions.Store(int64(len(mine)))
		m.cfg.Stats.unowned.Store(int64(unowned(c.MemberMappings, m.cfg.Partitions)))
		gained, lost := own.set(mine, e.Revision())
		if len(lost) > 0 {
			log.Info("partitions moved away, their work is cancelled", slog.Any(keyPartitions, lost))
		}
		// "group membership changed" names the partitions of the member
		// that wrote the mapping; a member that gains partitions a peer
		// released (a handoff) learns it here, and says so.
		if len(gained) > 0 {
			log.Info("partitions gained", slog.Any(keyPartitions, gained))
		}
	}
	stop := func() {
		if err := w.Stop(); err != nil {
			log.Debug("stop group config watcher", slog.Any(logkey.Err, err))
		}
	}
	// The initial value, then nil once it has been delivered.
	for initial := true; initial; {
		select {
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("watch group config %s: %w", key, ctx.Err())
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return nil, fmt.Errorf("watch group config %s: %w", key, jetstream.ErrConnectionClosed)
			case e == nil:
				initial = false
			default:
				apply(e)
			}
		}
	}
	done := make(chan struct{})
	// Owned by Run: ends with ctx (Run cancels it before returning and
	// waits on done) or when the watcher closes.
	go func() {
		defer close(done)
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					apply(e)
				}
			}
		}
	}()
	return done, nil
}
