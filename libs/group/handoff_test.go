package group

import (
	"slices"
	"testing"
	"time"

	"github.com/synadia-io/orbit.go/pcgroups"
)

func TestHandoffRule(t *testing.T) {
	t.Parallel()
	mm := func(m string, ps ...int) pcgroups.MemberMapping {
		return pcgroups.MemberMapping{Member: m, Partitions: ps}
	}
	rec := func(seen uint64, holding ...int) memberRecord {
		return memberRecord{Handoff: &handoffRecord{Seen: seen, Holding: holding}}
	}
	const rev = 7
	tests := []struct {
		name      string
		cur, want []pcgroups.MemberMapping
		live      map[string]memberRecord
		out       []pcgroups.MemberMapping
	}{
		{
			name: "first mapping is written at once",
			want: []pcgroups.MemberMapping{mm("a", 0, 1, 2, 3)},
			live: map[string]memberRecord{"a": rec(0)},
			out:  []pcgroups.MemberMapping{mm("a", 0, 1, 2, 3)},
		},
		{
			name: "join: the moving partitions are revoked from the live owner first",
			cur:  []pcgroups.MemberMapping{mm("a", 0, 1, 2, 3)},
			want: []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3)},
			live: map[string]memberRecord{"a": rec(rev, 0, 1, 2, 3), "b": rec(rev)},
			out:  []pcgroups.MemberMapping{mm(unassignedMember, 2, 3), mm("a", 0, 1)},
		},
		{
			name: "granted once every member applied the revocation and released",
			cur:  []pcgroups.MemberMapping{mm(unassignedMember, 2, 3), mm("a", 0, 1)},
			want: []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3)},
			live: map[string]memberRecord{"a": rec(rev, 0, 1), "b": rec(rev)},
			out:  []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3)},
		},
		{
			name: "held while the old owner's work on it still runs",
			cur:  []pcgroups.MemberMapping{mm(unassignedMember, 2, 3), mm("a", 0, 1)},
			want: []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3)},
			live: map[string]memberRecord{"a": rec(rev, 0, 1, 3), "b": rec(rev)},
			out:  []pcgroups.MemberMapping{mm(unassignedMember, 3), mm("a", 0, 1), mm("b", 2)},
		},
		{
			name: "held while a member has not applied the revocation",
			cur:  []pcgroups.MemberMapping{mm(unassignedMember, 2, 3), mm("a", 0, 1)},
			want: []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3)},
			live: map[string]memberRecord{"a": rec(rev-1, 0, 1), "b": rec(rev)},
			out:  []pcgroups.MemberMapping{mm(unassignedMember, 2, 3), mm("a", 0, 1)},
		},
		{
			name: "a dead member's partitions move at once",
			cur:  []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3)},
			want: []pcgroups.MemberMapping{mm("a", 0, 1, 2, 3)},
			live: map[string]memberRecord{"a": rec(rev, 0, 1)},
			out:  []pcgroups.MemberMapping{mm("a", 0, 1, 2, 3)},
		},
		{
			name: "an owner without hand-off state (older version) loses them at once",
			cur:  []pcgroups.MemberMapping{mm("a", 0, 1, 2, 3)},
			want: []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3)},
			live: map[string]memberRecord{"a": {}, "b": rec(rev)},
			out:  []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3)},
		},
		{
			name: "revoked to nobody at once (only a canary left)",
			cur:  []pcgroups.MemberMapping{mm("a", 0, 1), mm("c", 2, 3)},
			want: []pcgroups.MemberMapping{mm(unassignedMember, 0, 1), mm("c", 2, 3)},
			live: map[string]memberRecord{"a": rec(rev, 0, 1), "c": rec(rev, 2, 3)},
			out:  []pcgroups.MemberMapping{mm(unassignedMember, 0, 1), mm("c", 2, 3)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := handoff(4, tc.cur, tc.want, tc.live, rev); !mappingsEqual(got, tc.out) {
				t.Fatalf("handoff = %v, want %v", got, tc.out)
			}
		})
	}
}

// TestOwnershipHoldsLostWorkUntilItEnds: a lost partition is reported as
// held while its work runs (at most the grace), and its end is announced.
func TestOwnershipHoldsLostWorkUntilItEnds(t *testing.T) {
	t.Parallel()
	o := newOwnership()
	if gained, lost := o.set([]int{1, 0}, 3); !slices.Equal(gained, []int{0, 1}) || lost != nil {
		t.Fatalf("first set: gained %v, lost %v; want [0 1] and none", gained, lost)
	}
	<-o.changed
	f, ok := o.begin(1, func(error) {})
	if !ok {
		t.Fatal("begin on an owned partition refused")
	}
	if gained, lost := o.set([]int{0, 2}, 4); !slices.Equal(gained, []int{2}) || !slices.Equal(lost, []int{1}) {
		t.Fatalf("second set: gained %v, lost %v; want [2] and [1]", gained, lost)
	}
	<-o.changed
	if seen, held := o.holding(time.Hour); seen != 4 || !slices.Equal(held, []int{0, 1, 2}) {
		t.Fatalf("holding = %d %v, want 4 [0 1 2]: partition 1's work still runs", seen, held)
	}
	if _, held := o.holding(0); !slices.Equal(held, []int{0, 2}) {
		t.Fatalf("holding past the grace = %v, want [0 2]", held)
	}
	if !o.end(f) {
		t.Fatal("end did not report the move")
	}
	select {
	case <-o.changed:
	default:
		t.Fatal("the end of a lost partition's last work was not announced")
	}
	if _, held := o.holding(time.Hour); !slices.Equal(held, []int{0, 2}) {
		t.Fatalf("holding after the work ended = %v, want [0 2]", held)
	}
}
