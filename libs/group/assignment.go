package group

import (
	"slices"
	"sync"
)

// Assignment tells a running member which partitions it owns, for work the
// member does beside its handler, such as a periodic resync that must touch
// only its own objects (a canary's slice stays the canary's). Run keeps it
// equal to this member's partitions in the group's mapping: set when the
// member joins, updated on every membership change it sees (each
// heartbeat), emptied when it leaves. Ownership can move at any moment after
// a read; work done on an object whose partition just moved overlaps with
// its new owner's, exactly as a handler in flight during a rebalance does,
// so it must be idempotent. Work that skips objects it does not own must
// catch up on a partition it gains (what changed while another member or
// nobody owned it): State tells when ownership changes. The zero value owns
// nothing. It is safe for concurrent use.
type Assignment struct {
	mu         sync.Mutex
	partitions int   // guarded by mu: the group's partition count
	owned      []int // guarded by mu: sorted
	// changed is closed (and replaced) when partitions or owned change;
	// guarded by mu, made on first use.
	changed chan struct{}
}

// Owned returns the partitions this member owns now, sorted; nil before it
// joined and after it left.
func (a *Assignment) Owned() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.owned)
}

// OwnsObject reports whether the partition of objectID (PartitionOf) is
// owned by this member now.
func (a *Assignment) OwnsObject(objectID string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.partitions == 0 {
		return false
	}
	_, found := slices.BinarySearch(a.owned, PartitionOf(objectID, a.partitions))
	return found
}

// State returns, read together, the group's partition count, the
// partitions this member owns now (sorted; nil before it joined and after
// it left) and a channel closed at their next change.
func (a *Assignment) State() (partitions int, owned []int, changed <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.changed == nil {
		a.changed = make(chan struct{})
	}
	return a.partitions, slices.Clone(a.owned), a.changed
}

// set records the member's partitions out of partitions and wakes State's
// waiters when they changed (Run calls it on every heartbeat, mostly with
// the same partitions).
func (a *Assignment) set(partitions int, owned []int) {
	if a == nil {
		return
	}
	owned = slices.Sorted(slices.Values(owned))
	a.mu.Lock()
	defer a.mu.Unlock()
	if partitions == a.partitions && slices.Equal(owned, a.owned) {
		return
	}
	a.partitions, a.owned = partitions, owned
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
}
