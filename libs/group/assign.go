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
