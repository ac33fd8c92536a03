package diff

import (
	"fmt"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// fuzzIDs is how many objects FuzzListingConverges plays with: few, so
// that list reads, changes and deliveries of one object meet often.
const fuzzIDs = 4

// FuzzListingConverges plays a relist against a changing table: the table
// changes (creates, updates, deletes; ids are never reused), the watch
// delivers each change later and in order, and the list reads each id at
// some point in between, while live events are applied to the store (as
// the watcher does between pages). Whatever the interleaving, once the
// listing is finished and the remaining events are applied, the store must
// hold exactly the table: every live object in its newest state, nothing
// deleted.
func FuzzListingConverges(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 2, 1, 2, 2})
	f.Add([]byte{2, 0, 4, 1, 5, 2, 9, 2, 1, 2})
	f.Add([]byte{0, 4, 8, 12, 2, 2, 2, 2, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, script []byte) {
		type version struct {
			alive bool
			v     int // updated_at in µs, and the name's number
		}
		var table [fuzzIDs]version // the API's truth now
		var gone [fuzzIDs]bool     // deleted: never created again
		type change struct {
			id  int
			now version
		}
		var changes []change // every change so far; changes[:delivered] applied
		delivered := 0
		clock := 1
		id := func(i int) string { return fmt.Sprintf("o%d", i) }
		obj := func(i int, v version) *ambientv1.Session { return sess(id(i), fmt.Sprintf("v%d", v.v), v.v, 0) }

		// The store starts in step with a table of objects o0 and o1.
		s := NewStore[*ambientv1.Session]()
		for i := range 2 {
			table[i] = version{alive: true, v: clock}
			clock++
		}
		s.Sync([]*ambientv1.Session{obj(0, table[0]), obj(1, table[1])}, nil)

		deliver := func() {
			c := changes[delivered]
			delivered++
			if c.now.alive {
				s.Apply(upd(obj(c.id, c.now)))
			} else {
				s.Apply(del(id(c.id)))
			}
		}
		l := s.StartList()
		read := 0 // the list reads ids in order, one per step
		for _, b := range script {
			i := int(b>>2) % fuzzIDs
			switch b % 4 {
			case 0, 3: // the table changes
				switch {
				case gone[i]:
					continue
				case table[i].alive && b%8 == 3: // delete
					table[i], gone[i] = version{}, true
				default: // create or update
					table[i] = version{alive: true, v: clock}
					clock++
				}
				changes = append(changes, change{id: i, now: table[i]})
			case 1: // the watch delivers the next change
				if delivered < len(changes) {
					deliver()
				}
			case 2: // the list reads the next id as it is now
				if read < fuzzIDs {
					if table[read].alive {
						l.Add([]*ambientv1.Session{obj(read, table[read])})
					}
					read++
				}
			}
		}
		for ; read < fuzzIDs; read++ {
			if table[read].alive {
				l.Add([]*ambientv1.Session{obj(read, table[read])})
			}
		}
		l.Finish(nil)
		for delivered < len(changes) {
			deliver()
		}
		for i := range fuzzIDs {
			got, ok := s.Get(id(i))
			switch {
			case ok != table[i].alive:
				t.Fatalf("%s present=%v, want %v (script %v)", id(i), ok, table[i].alive, script)
			case ok && got.GetName() != fmt.Sprintf("v%d", table[i].v):
				t.Fatalf("%s = %s, want v%d (script %v)", id(i), got.GetName(), table[i].v, script)
			}
		}
	})
}
