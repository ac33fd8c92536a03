package runner

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"
)

// TestManagerFreeLeavesOutCoolingPorts: a slot whose runner ended and
// whose port waits out the reuse delay is no room for a start: Free and
// FreeFor say 0 until the delay has passed. Before, Free counted the
// cooling port (Size-InUse = 1), and the capacity queue tried a start
// that could only fail, putting its session behind younger ones.
func TestManagerFreeLeavesOutCoolingPorts(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	p, _ := poolOnOnePort(t, clock, WithReuseDelay(time.Minute))
	m, err := New(Config{
		Command: []string{demoRunner}, WorkspaceRoot: t.TempDir(), MaxSessions: 2, StopGrace: 300 * time.Millisecond,
		HostEnv: []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"},
	}, p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 5*time.Second)
		defer cancel()
		if err := m.StopAll(ctx); err != nil {
			t.Errorf("stop all: %v", err)
		}
		m.Wait()
	})
	a, err := m.Start(t.Context(), Session{ID: "a", ProjectID: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WaitHealthy(t.Context(), http.DefaultClient, fastHealth); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitDone(t, a, 5*time.Second)
	a.ReleasePort()
	if got, gotFor := m.Free(), m.FreeFor("p"); got != 0 || gotFor != 0 {
		t.Fatalf("Free = %d, FreeFor = %d with a free slot and the only port cooling; want 0, 0", got, gotFor)
	}
	clock.Advance(time.Minute)
	if got := m.Free(); got != 1 {
		t.Fatalf("Free once the delay has passed = %d, want 1", got)
	}
}
