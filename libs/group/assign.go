package group

import (
	"slices"

	"github.com/synadia-io/orbit.go/pcgroups"
)

// unassignedMember holds partitions while no sharing member is alive (only
// pinned canaries are): pcgroups needs every partition mapped, and a
// canary must never receive more than its slice. Nobody consumes as this
// member, so those messages wait in the group's work-queue stream. Member
// names may not start with '_', so it cannot collide.
const unassignedMember = "_unassigned"

// assign maps every partition to one live member. Pinned members (non-empty
// wanted slice) get their slice first, in name order, a partition wanted
// twice going to the first name; sharing members split the rest into
// contiguous, nearly equal runs in name order. The result is deterministic,
// so members with the same view write the same config, and sorted by
// member name.
func assign(partitions int, live map[string][]int) []pcgroups.MemberMapping {
	names := make([]string, 0, len(live))
	for n := range live {
		names = append(names, n)
	}
	slices.Sort(names)

	owner := make([]string, partitions)
	var shared []string
	for _, n := range names {
		want := live[n]
		if len(want) == 0 {
			shared = append(shared, n)
			continue
		}
		for _, p := range want {
			if p >= 0 && p < partitions && owner[p] == "" {
				owner[p] = n
			}
		}
	}
	var rest []int
	for p, o := range owner {
		if o == "" {
			rest = append(rest, p)
		}
	}
	switch {
	case len(rest) == 0:
	case len(shared) == 0:
		for _, p := range rest {
			owner[p] = unassignedMember
		}
	default:
		k := len(shared)
		for i, n := range shared {
			for _, p := range rest[i*len(rest)/k : (i+1)*len(rest)/k] {
				owner[p] = n
			}
		}
	}

	return mappingOf(owner)
}

// takers returns what assign shares the partitions among: each live
// member's pinned slice (empty = sharing), without the sharing members
// that are not ready while a sharing member is ready and settled. When no
// such member is left (the API down for every member, or the ready ones
// only just back from failing) every live member takes its share as if
// all were ready, so an outage common to all, and the members' reconnects
// seconds apart after it, move nothing. A pinned member keeps its slice
// whatever its readiness: a canary's objects must not flip between
// versions.
func takers(live map[string]memberRecord) map[string][]int {
	settled := false
	for _, rec := range live {
		if len(rec.Partitions) == 0 && !rec.NotReady && !rec.Settling {
			settled = true
			break
		}
	}
	out := make(map[string][]int, len(live))
	for n, rec := range live {
		if settled && len(rec.Partitions) == 0 && rec.NotReady {
			continue
		}
		out[n] = rec.Partitions
	}
	return out
}

// mappingsEqual compares two mappings as produced by assign.
func mappingsEqual(a, b []pcgroups.MemberMapping) bool {
	return slices.EqualFunc(a, b, func(x, y pcgroups.MemberMapping) bool {
		return x.Member == y.Member && slices.Equal(x.Partitions, y.Partitions)
	})
}

// partitionsOf returns member's partitions in m (nil when absent).
func partitionsOf(m []pcgroups.MemberMapping, member string) []int {
	for _, mm := range m {
		if mm.Member == member {
			return mm.Partitions
		}
	}
	return nil
}

// unowned counts the partitions (of 0..partitions-1) no member consumes
// as: mapped to unassignedMember (only canaries alive) or to nobody (the
// group's config deleted). A dead member still mapped counts as an owner
// until the survivors reconcile it away, one MemberTTL later.
func unowned(m []pcgroups.MemberMapping, partitions int) int {
	owned := make([]bool, partitions)
	for _, mm := range m {
		if mm.Member == unassignedMember {
			continue
		}
		for _, p := range mm.Partitions {
			if p >= 0 && p < partitions {
				owned[p] = true
			}
		}
	}
	n := 0
	for _, o := range owned {
		if !o {
			n++
		}
	}
	return n
}
