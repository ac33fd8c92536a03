package controller

import "testing"

// TestOwedFloor: the floor to persist is the lowest known sequence owed
// since nothing was owed; it goes down at once, stays while anything is
// owed (no scan per remove), is gone once nothing is, and a held floor of
// an earlier term stays whatever is owed.
func TestOwedFloor(t *testing.T) {
	t.Parallel()
	type step struct {
		add, remove string
		seq         uint64
		hold        uint64
		want        uint64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "lowest goes down at once", steps: []step{
			{add: "a", seq: 20, want: 20}, {add: "b", seq: 10, want: 10}, {add: "c", seq: 30, want: 10},
		}},
		{name: "stays until nothing is owed", steps: []step{
			{add: "a", seq: 10, want: 10}, {add: "b", seq: 20, want: 10},
			{remove: "a", want: 10}, {remove: "b", want: 0},
		}},
		{name: "an id owed again keeps its lower sequence", steps: []step{
			{add: "a", seq: 10, want: 10}, {add: "a", seq: 40, want: 10}, {add: "a", seq: 0, want: 10}, {remove: "a", want: 0},
		}},
		{name: "unknown sequences are no floor", steps: []step{
			{add: "a", seq: 0, want: 0}, {add: "b", seq: 15, want: 15}, {remove: "b", want: 15}, {remove: "a", want: 0},
		}},
		{name: "a held floor stays", steps: []step{
			{hold: 5, want: 5}, {add: "a", seq: 10, want: 5}, {add: "b", seq: 3, want: 3}, {remove: "a", want: 3}, {remove: "b", want: 5},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := newOwedWrites()
			for i, s := range tc.steps {
				switch {
				case s.add != "":
					o.add(s.add, s.seq)
				case s.remove != "":
					o.remove(s.remove)
				default:
					o.hold(s.hold)
				}
				if got := o.lowest(); got != s.want {
					t.Fatalf("step %d: floor %d, want %d", i, got, s.want)
				}
			}
		})
	}
}
