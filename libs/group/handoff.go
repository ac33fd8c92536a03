package group

import (
	"slices"
	"strings"

	"github.com/synadia-io/orbit.go/pcgroups"
)

// A partition that changes hands between two live members is handed off
// in two config writes, as in Kafka's cooperative rebalance:
//
//  1. revoke: the partition goes to unassignedMember, so the old owner's
//     consumer drops it, its watch cancels the partition's lanes and
//     nobody consumes it meanwhile;
//  2. grant: once every live member has reported (in its heartbeat) that
//     it applied that config and holds no running work on the partition,
//     it goes to its new owner.
//
// Writing the new owner at once let the new owner's consumer take the
// partition while the old owner's handler was still finishing an older
// version of an object: both members' pcgroups and the old owner's own
// watch react to the same config write independently, so the new owner
// could handle v3 before the old owner's v2 returned.
//
// A partition leaving a member that turned not ready, or coming back to it
// (takers in assign.go), moves between live members in the same two steps.
//
// A member that is gone (no heartbeat) holds nothing, so its partitions
// are granted at once; so are those of a member whose record carries no
// hand-off state (a version before hand-offs, during a rolling upgrade).

// handoffRecord is the hand-off part of a member's heartbeat: what it has
// applied and what it still runs.
type handoffRecord struct {
	// Seen is the revision of the group config the member's partitions
	// were last set from.
	Seen uint64 `json:"seen"`
	// Holding is every partition the member owns or still runs work on
	// after losing it (bounded by its stop grace).
	Holding []int `json:"holding,omitempty"`
}

// handoff returns the mapping to write instead of want when the config in
// force is cur (at revision rev): want, except that a partition moving
// between live members is revoked first and granted only once released
// (see the package comment above). The result is deterministic, so
// concurrent reconcilers write the same config.
func handoff(partitions int, cur, want []pcgroups.MemberMapping, live map[string]memberRecord, rev uint64) []pcgroups.MemberMapping {
	from, to := ownersOf(partitions, cur), ownersOf(partitions, want)
	released := func(p int) bool {
		for _, rec := range live {
			if rec.Handoff == nil {
				continue
			}
			if rec.Handoff.Seen < rev || slices.Contains(rec.Handoff.Holding, p) {
				return false
			}
		}
		return true
	}
	for p, next := range to {
		prev := from[p]
		switch {
		case prev == "" || prev == next || next == unassignedMember:
			// Never assigned, unchanged, or revoked to nobody.
		case prev == unassignedMember:
			if !released(p) {
				to[p] = unassignedMember
			}
		default:
			if rec, ok := live[prev]; ok && rec.Handoff != nil {
				to[p] = unassignedMember
			}
		}
	}
	return mappingOf(to)
}

// ownersOf returns each partition's member in m ("" when unmapped).
func ownersOf(partitions int, m []pcgroups.MemberMapping) []string {
	owner := make([]string, partitions)
	for _, mm := range m {
		for _, p := range mm.Partitions {
			if p >= 0 && p < partitions {
				owner[p] = mm.Member
			}
		}
	}
	return owner
}

// mappingOf groups partitions by owner, sorted by member name (partitions
// ascending); unmapped ("") partitions are left out.
func mappingOf(owner []string) []pcgroups.MemberMapping {
	byMember := map[string][]int{}
	for p, o := range owner {
		if o != "" {
			byMember[o] = append(byMember[o], p)
		}
	}
	out := make([]pcgroups.MemberMapping, 0, len(byMember))
	for m, ps := range byMember {
		out = append(out, pcgroups.MemberMapping{Member: m, Partitions: ps})
	}
	slices.SortFunc(out, func(a, b pcgroups.MemberMapping) int { return strings.Compare(a.Member, b.Member) })
	return out
}
