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
// so it must be idempotent. The zero value owns nothing. It is safe for
// concurrent use.
type Assignment struct {
	mu         sync.Mutex
	partitions int   // guarded by mu: the group's partition count
	owned      []int // guarded by mu: sorted
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

// set records the member's partitions out of partitions.
func (a *Assignment) set(partitions int, owned []int) {
	if a == nil {
		return
	}
	owned = slices.Sorted(slices.Values(owned))
	a.mu.Lock()
	defer a.mu.Unlock()
	a.partitions, a.owned = partitions, owned
}
