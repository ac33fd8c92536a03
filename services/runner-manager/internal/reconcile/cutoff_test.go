package reconcile

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// A replica claims a session and is cut off from NATS (its connection
// alone: testenv.Link) before it registers its runner's address, so the
// record stays "claimed", with nothing a peer could probe; it spawns the
// runner all the same, and the runner serves (the API is reachable). Its
// heartbeat expires. Before, the peer took the claim over at its next
// sweep once settled and started a second runner beside the first, which
// ran on for as long as the cut lasted (two runners of one session 2.4 s
// after the cut). Now the peer leaves a claim without
// an address alone until it has seen it unchanged for longer than the
// start deadline plus a margin (claim.WithStartWait), and the cut-off
// replica kills a runner it has not registered by the start deadline: the
// session runs once, then on the peer.
func TestCutOffClaimRunsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	link := testenv.NewLink(t, strings.TrimPrefix(e.nats.ClientURL(), "nats://"))
	// A start deadline of 2 s.
	health := runner.HealthPolicy{Host: "127.0.0.1", Interval: 100 * time.Millisecond, Attempts: 20, FirstDelay: 10 * time.Millisecond}
	e.replica(replicaOpts{member: "rm-b", health: health})
	cut := &cutAtReread{sessionAPI: e.client, cut: link.Cut}
	nc := testenv.ConnURL(t, "nats://"+link.Addr())
	a := e.replica(replicaOpts{member: "rm-a", health: health, api: cut, nc: nc})
	restored := false
	t.Cleanup(func() { // before rm-a stops: it leaves the member set
		if !restored && !cut.at().IsZero() {
			link.Restore()
		}
	})
	s := e.create("cut off")
	id := s.GetMetadata().GetId()
	e.handle(a, added, s) // claims; the re-read cuts rm-a off before the spawn

	var (
		twice []int
		rec   registry.Record
	)
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pids := sessionProcesses(t, id)
		if len(pids) > 1 {
			twice = pids
			break
		}
		var err error
		rec, err = registry.Get(t.Context(), e.runners, id)
		if err == nil && rec.Owner == "rm-b" && rec.State == registry.StateRunning && len(pids) == 1 && pids[0] == rec.PID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session not running on rm-b alone within 30 s: record %+v (%v), runners %v", rec, err, pids)
		}
		<-tick.C
	}
	took := time.Since(cut.at())
	if twice != nil {
		t.Fatalf("two runners of the session at once %v after the cut: %v", took.Round(10*time.Millisecond), twice)
	}
	t.Logf("running on rm-b alone %v after the cut", took.Round(10*time.Millisecond))
	if n := a.mgr.Count(); n != 0 {
		t.Errorf("rm-a still has %d runners", n)
	}
	// Back on NATS, rm-a finds the claim rm-b's and leaves it be.
	link.Restore()
	restored = true
	testenv.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("rm-a not reconnected: %v", nc.Status())
		}
		return nil
	})
	a.stop(t)
	rec, err := registry.Get(t.Context(), e.runners, id)
	if err != nil || rec.Owner != "rm-b" || len(sessionProcesses(t, id)) != 1 {
		t.Fatalf("after rm-a's return: record %+v (%v), runners %v", rec, err, sessionProcesses(t, id))
	}
}

// cutAtReread is the API, with the replica's NATS link cut at its first
// session read (the one after the claim, before the spawn).
type cutAtReread struct {
	sessionAPI
	cut  func()
	once sync.Once
	mu   sync.Mutex
	when time.Time // guarded by mu
}

func (c *cutAtReread) GetSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	c.once.Do(func() {
		c.cut()
		c.mu.Lock()
		c.when = time.Now()
		c.mu.Unlock()
	})
	return c.sessionAPI.GetSession(ctx, id)
}

// at is when the link was cut.
func (c *cutAtReread) at() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.when
}
