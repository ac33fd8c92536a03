package app_test

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// kvMessages is the number of messages (records and markers) in the
// runners bucket.
func (w *world) kvMessages(t testing.TB) uint64 {
	t.Helper()
	st, err := w.runners.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st.Values()
}

// rss is a process's resident set size in KiB.
func rss(t testing.TB, pid int) int {
	t.Helper()
	now, _, err := testenv.Memory(pid)
	if err != nil {
		t.Fatal(err)
	}
	return int(now >> 10)
}

// createDelete runs n sessions through create, Running and delete, batch
// at a time, and waits until their claims are released.
func createDelete(t testing.TB, w *world, prefix string, n, batch int) {
	t.Helper()
	for done := 0; done < n; done += batch {
		var ids []string
		for i := range min(batch, n-done) {
			ids = append(ids, w.create(fmt.Sprintf("%s%d", prefix, done+i)))
		}
		w.waitAll(ids, "Running", time.Minute)
		for _, id := range ids {
			if err := w.client.DeleteSession(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, time.Minute, func() error {
			for _, id := range ids {
				if _, err := w.record(id); !errors.Is(err, registry.ErrNotFound) {
					return fmt.Errorf("claim of %s: %v", id, err)
				}
			}
			return nil
		})
	}
}

// Issue 14 point 4: KV ambient-runners kept the delete marker of every
// session ever run (11,850 after 4,000 create+delete). Released claims
// now leave markers that expire (RUNNERS_MARKER_TTL), so after the cycles
// the bucket holds what it held before.
func TestCreateDeleteLeavesNoMarkers(t *testing.T) {
	w := newWorld(t)
	// 20 ports for more sessions than that, created and deleted in turn:
	// ports are reused at once (PORT_REUSE_DELAY=0), as the test counts
	// markers, not the wait for a port.
	w.start("rm-0", 20, "RUNNERS_MARKER_TTL=1s", "PORT_REUSE_DELAY=0")
	base := w.kvMessages(t)
	const n = 30
	createDelete(t, w, "c", n, 10)
	testenv.Eventually(t, 15*time.Second, func() error {
		if got := w.kvMessages(t); got > base+base/10 {
			return fmt.Errorf("bucket holds %d messages after %d create+delete cycles, %d before", got, n, base)
		}
		return nil
	})
}

// BenchmarkCreateDelete4000 is issue 14 point 4 at its measured size:
// 4,000 sessions created, run and deleted (in batches of 50) on one
// service process. It reports the runners bucket's messages and the
// service's RSS before and after (after: once the markers expired and the
// service idled for a few sweeps), and their ratios. CREATE_DELETE_N
// overrides 4,000.
func BenchmarkCreateDelete4000(b *testing.B) {
	n := 4000
	if v := os.Getenv("CREATE_DELETE_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	w := newWorld(b)
	svc := w.start("rm-0", 60, "RUNNERS_MARKER_TTL=1s")
	pid := svc.cmd.Process.Pid
	createDelete(b, w, "warm", 50, 50) // the first runners and buffers
	var msgsBefore, msgsAfter uint64
	var rssBefore, rssAfter int
	for b.Loop() {
		idle(2 * time.Second)
		msgsBefore, rssBefore = w.kvMessages(b), rss(b, pid)
		createDelete(b, w, "n", n, 50)
		idle(5 * time.Second) // markers expire (1 s), sweeps run, the heap is collected
		msgsAfter, rssAfter = w.kvMessages(b), rss(b, pid)
	}
	b.ReportMetric(float64(msgsBefore), "kv-msgs-before")
	b.ReportMetric(float64(msgsAfter), "kv-msgs-after")
	b.ReportMetric(float64(rssBefore)/1024, "rss-MiB-before")
	b.ReportMetric(float64(rssAfter)/1024, "rss-MiB-after")
	b.ReportMetric(float64(rssAfter)/float64(rssBefore), "rss-ratio")
}

// idle lets the service run undisturbed for d (a benchmark's settling
// time, not a wait for a condition).
func idle(d time.Duration) { <-time.After(d) }
