package runner

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestSnapshotsAreSharedAndFresh: callers that ask while a scan runs wait
// for the next scan and share it (a burst of runner exits costs a few
// scans, not one per exit), and no caller gets a snapshot that began
// before it asked.
func TestSnapshotsAreSharedAndFresh(t *testing.T) {
	var (
		world   atomic.Int64 // what the process table "is"; bumped before each ask
		scans   atomic.Int64
		release = make(chan struct{})
		inScan  = make(chan struct{}, 16)
	)
	s := newProcScanner(func() []proc {
		scans.Add(1)
		seen := world.Load() // the table as this scan reads it
		inScan <- struct{}{}
		<-release
		return []proc{{pid: int(seen)}}
	})
	// The first caller starts a scan that blocks in the table.
	first := make(chan []proc, 1)
	world.Add(1)
	go func() { first <- s.snapshot() }() // ends when released below
	<-inScan
	// Twenty callers ask while it runs, each after a change to the table.
	const callers = 20
	var wg sync.WaitGroup
	got := make([][]proc, callers)
	asked := make([]int64, callers)
	for i := range callers {
		asked[i] = world.Add(1)
		wg.Go(func() { got[i] = s.snapshot() })
	}
	// Once all of them wait, let the first scan end; the next one must
	// start for them, and only one.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := s.waiters(); n < callers {
			return fmt.Errorf("%d of %d callers waiting", n, callers)
		}
		return nil
	})
	release <- struct{}{}
	select {
	case <-inScan:
	case <-time.After(10 * time.Second):
		t.Fatal("no second scan for the callers that asked during the first")
	}
	close(release)
	wg.Wait()
	if p := <-first; p[0].pid != 1 {
		t.Errorf("first caller saw table %d, want 1", p[0].pid)
	}
	for i, p := range got {
		if int64(p[0].pid) < asked[i] {
			t.Errorf("caller %d asked after change %d and got a scan of %d", i, asked[i], p[0].pid)
		}
	}
	if n := scans.Load(); n != 2 {
		t.Errorf("%d scans for 21 callers, want 2", n)
	}
}
