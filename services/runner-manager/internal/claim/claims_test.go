package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// replicas returns Claims of each member on one registry bucket, the
// members bucket, and a heartbeat writer per member (not beating yet).
// A gone owner's claim without a runner address is taken over at once
// (WithStartWait(0)); TestStartWait tests the wait.
func replicas(t *testing.T, names ...string) (map[string]*Claims, map[string]*Members, jetstream.KeyValue) {
	t.Helper()
	return replicasWith(t, []Option{WithStartWait(0)}, names...)
}

// replicasWith is replicas with opts for every Claims.
func replicasWith(t *testing.T, opts []Option, names ...string) (map[string]*Claims, map[string]*Members, jetstream.KeyValue) {
	t.Helper()
	nc, js := testenv.JetStream(t, testenv.NATS(t))
	runners, err := bus.EnsureKV(t.Context(), js, bus.RunnersBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	membersKV, err := bus.EnsureKV(t.Context(), js, BucketConfig(1, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	cs, ms := map[string]*Claims{}, map[string]*Members{}
	for _, n := range names {
		m, err := NewMembers(membersKV, nc, n, time.Second, log)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(runners, n, m, log, opts...)
		if err != nil {
			t.Fatal(err)
		}
		cs[n], ms[n] = c, m
	}
	return cs, ms, runners
}

// beating runs m's heartbeat until the test ends and waits until m is
// Settled (it can tell a dead peer).
func beating(t *testing.T, m *Members) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)        // Run's result, read in cleanup
	go func() { done <- m.Run(ctx) }() // owned by the test; ends on cancel
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	testenv.Eventually(t, 5*time.Second, func() error {
		if !m.Settled() {
			return fmt.Errorf("%s not settled", m.Member())
		}
		return nil
	})
}

// One owner per session; a gone owner's claim goes to exactly one taker;
// a live owner's claim stays.
func TestClaimAndTakeOver(t *testing.T) {
	t.Parallel()
	cs, ms, _ := replicas(t, "a", "b", "c")
	ctx := t.Context()
	beating(t, ms["b"])
	held, err := cs["a"].Claim(ctx, "s1", "p")
	if err != nil || held.Owner != "a" || held.State != registry.StateClaimed || held.Revision == 0 {
		t.Fatalf("Claim = %+v, %v", held, err)
	}
	if _, err := cs["b"].Claim(ctx, "s1", "p"); !errors.Is(err, registry.ErrClaimed) {
		t.Fatalf("second Claim = %v, want ErrClaimed", err)
	}
	rec, err := cs["b"].Get(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	// Its own claim is gone for a only when no runner of it runs there.
	for _, runsHere := range []bool{true, false} {
		if gone, err := cs["a"].OwnerGone(ctx, rec, runsHere); err != nil || gone == runsHere {
			t.Fatalf("a.OwnerGone(runsHere %v) = %v, %v", runsHere, gone, err)
		}
	}
	if err := ms["a"].Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if gone, err := cs["b"].OwnerGone(ctx, rec, false); err != nil || gone {
		t.Fatalf("live owner gone = %v, %v", gone, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error { // the beat expires (kill -9)
		if gone, err := cs["b"].OwnerGone(ctx, rec, false); err != nil || !gone {
			return fmt.Errorf("owner gone = %v, %v", gone, err)
		}
		return nil
	})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
	)
	for _, n := range []string{"b", "c"} {
		wg.Add(1)
		go func() { // owned by this test, waited below
			defer wg.Done()
			got, err := cs[n].TakeOver(ctx, rec)
			switch {
			case err == nil && got.Owner == n:
				mu.Lock()
				winners = append(winners, n)
				mu.Unlock()
			case !errors.Is(err, registry.ErrConflict):
				t.Errorf("%s: TakeOver = %+v, %v", n, got, err)
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("winners = %v, want exactly one", winners)
	}
	now, err := cs["a"].Get(ctx, "s1")
	if err != nil || now.Owner != winners[0] {
		t.Fatalf("record = %+v, %v", now, err)
	}
	// The old owner cannot release what is not its any more.
	cs["a"].Release(ctx, slog.New(slog.DiscardHandler), "s1")
	if _, err := cs["a"].Get(ctx, "s1"); err != nil {
		t.Fatalf("record released by a non-owner: %v", err)
	}
	cs[winners[0]].Release(ctx, slog.New(slog.DiscardHandler), "s1")
	if _, err := cs["a"].Get(ctx, "s1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("after release: %v", err)
	}
}

// Update keeps a peer's stop request and reports it, and says ErrLost once
// the record moved to another owner or vanished.
func TestUpdate(t *testing.T) {
	t.Parallel()
	cs, _, _ := replicas(t, "a", "b")
	ctx := t.Context()
	held, err := cs["a"].Claim(ctx, "s1", "p")
	if err != nil {
		t.Fatal(err)
	}
	held, stop, err := cs["a"].Update(ctx, held, func(e *registry.Endpoint) { e.Host, e.Port, e.State = "h", 9100, registry.StateStarting })
	if err != nil || stop || held.Port != 9100 {
		t.Fatalf("Update = %+v, %v, %v", held, stop, err)
	}
	peerView, err := cs["b"].Get(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs["b"].RequestStop(ctx, peerView); err != nil {
		t.Fatal(err)
	}
	// a still holds the old revision: Update reads again and keeps the stop.
	held, stop, err = cs["a"].Update(ctx, held, func(e *registry.Endpoint) { e.State = registry.StateRunning })
	if err != nil || !stop || held.State != registry.StateStopping {
		t.Fatalf("Update after a stop request = %+v, %v, %v", held, stop, err)
	}
	if _, err := cs["b"].TakeOver(ctx, held); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cs["a"].Update(ctx, held, func(*registry.Endpoint) {}); !errors.Is(err, ErrLost) {
		t.Fatalf("Update after a takeover = %v, want ErrLost", err)
	}
	cs["b"].Release(ctx, slog.New(slog.DiscardHandler), "s1")
	held.Revision = 0 // a stale revision reads the record first: it is gone
	if _, _, err := cs["a"].Update(ctx, held, func(*registry.Endpoint) {}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Update of a released record = %v, want ErrNotFound", err)
	}
}

// Scan sorts the records: a replica's own, and the stale ones (its own
// without a runner here, and those of owners without a heartbeat).
func TestScan(t *testing.T) {
	t.Parallel()
	cs, ms, _ := replicas(t, "a", "live", "dead")
	ctx := t.Context()
	for owner, ids := range map[string][]string{"a": {"a1", "a2"}, "live": {"l1"}, "dead": {"d1"}} {
		for _, id := range ids {
			if _, err := cs[owner].Claim(ctx, id, "p"); err != nil {
				t.Fatal(err)
			}
		}
	}
	beating(t, ms["a"])
	hold := make(chan struct{})
	held := make(chan error, 1) // Hold's result
	go func() {                 // owned by this test; ends when hold closes
		held <- ms["live"].Hold(ctx, func(context.Context) error { <-hold; return nil })
	}()
	defer func() {
		close(hold)
		if err := <-held; err != nil {
			t.Error(err)
		}
	}()
	testenv.Eventually(t, 5*time.Second, func() error {
		if ok, err := ms["a"].Alive(ctx, "live"); err != nil || !ok {
			return fmt.Errorf("live not alive: %v", err)
		}
		return nil
	})
	mine, stale, err := cs["a"].Scan(ctx, func(id string) bool { return id == "a1" })
	if err != nil {
		t.Fatal(err)
	}
	ids := func(recs []registry.Record) []string {
		var out []string
		for _, r := range recs {
			out = append(out, r.SessionID)
		}
		slices.Sort(out)
		return out
	}
	if got := ids(mine); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("mine = %v", got)
	}
	if got := ids(stale); !slices.Equal(got, []string{"a2", "d1"}) {
		t.Errorf("stale = %v", got)
	}
}

// Watch delivers the records there are, then every change, and ends with
// its ctx.
func TestWatch(t *testing.T) {
	t.Parallel()
	cs, _, _ := replicas(t, "a")
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := cs["a"].Claim(ctx, "before", "p"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string           // guarded by mu
	done := make(chan error, 1) // Watch's result
	go func() {                 // owned by this test; ends on cancel
		done <- cs["a"].Watch(ctx, func(ep registry.Endpoint) {
			mu.Lock()
			seen = append(seen, ep.SessionID+":"+ep.State)
			mu.Unlock()
		})
	}()
	testenv.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(seen, "before:claimed") {
			return fmt.Errorf("seen %v", seen)
		}
		return nil
	})
	held, err := cs["a"].Claim(ctx, "after", "p")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs["a"].RequestStop(ctx, held); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(seen, "after:stopping") {
			return fmt.Errorf("seen %v", seen)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch = %v", err)
	}
}

// watchGates is a Watch callback that stops the watch at chosen records
// (by "session:state") until the test lets it go on, so the test can act
// while the watch lags behind the bucket.
type watchGates struct {
	mu      sync.Mutex
	gates   map[string]chan struct{} // guarded by mu
	reached chan string
}

func newWatchGates() *watchGates {
	return &watchGates{gates: map[string]chan struct{}{}, reached: make(chan string)}
}

// hold makes the watch stop at the next record of session:state.
func (g *watchGates) hold(at string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	gate := make(chan struct{})
	g.gates[at] = gate
	return gate
}

// reach waits for the watch to stop at a held gate and returns which.
func reach(t *testing.T, g *watchGates) string {
	t.Helper()
	select {
	case at := <-g.reached:
		return at
	case <-time.After(30 * time.Second):
		t.Fatal("the watch stopped at no held gate within 30s")
		return ""
	}
}

// drop disarms the gate at session:state, which the watch did not reach.
func (g *watchGates) drop(at string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.gates, at)
}

func (g *watchGates) see(ep registry.Endpoint) {
	at := ep.SessionID + ":" + ep.State
	g.mu.Lock()
	gate, ok := g.gates[at]
	delete(g.gates, at)
	g.mu.Unlock()
	if ok {
		g.reached <- at
		<-gate
	}
}

// A record this replica releases stops naming its port at once, not when
// the watch delivers the delete: a session that waits for a port starts
// right after a runner's release (TestCapacity/port_exhaustion waited for
// a resync when the watch lagged). Updates of the record that the watch
// delivers after the release do not bring the port back; a new claim of
// the session does. The release purges the record's earlier revisions,
// so the watch may never deliver the update made before it: the subtest
// "purged" drops that update from the watch as the purge would.
func TestReleaseFreesPortAtOnce(t *testing.T) {
	t.Parallel()
	for _, purged := range []bool{false, true} {
		name := "delivered"
		if purged {
			name = "purged"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testReleaseFreesPortAtOnce(t, purged)
		})
	}
}

func testReleaseFreesPortAtOnce(t *testing.T, purged bool) {
	cs, _, _ := replicas(t, "a")
	c := cs["a"]
	ctx, cancel := context.WithCancel(t.Context())
	gates := newWatchGates()
	synced := gates.hold("synced:claimed")
	if _, err := c.Claim(ctx, "synced", "p"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1) // Watch's result
	see := gates.see
	if purged {
		var dropped bool // read on the watch's goroutine only
		see = func(ep registry.Endpoint) {
			if ep.SessionID == "late" && ep.State == registry.StateRunning && !dropped {
				dropped = true
				return
			}
			gates.see(ep)
		}
	}
	go func() { // owned by this test; ends on cancel
		done <- c.Watch(ctx, see)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch = %v", err)
		}
	})
	<-gates.reached
	close(synced)
	log := slog.New(slog.DiscardHandler)
	running := func(port int) func(*registry.Endpoint) {
		return func(e *registry.Endpoint) { e.Host, e.Port, e.State = "h", port, registry.StateRunning }
	}
	namesPort := func(port int) bool {
		t.Helper()
		named, err := c.NamedPorts(ctx, "h")
		if err != nil {
			t.Fatal(err)
		}
		return named[port]
	}

	// The index holds the record; the watch is stopped before the delete.
	gate := gates.hold("indexed:running")
	held, err := c.Claim(ctx, "indexed", "p")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Update(ctx, held, running(9101)); err != nil {
		t.Fatal(err)
	}
	<-gates.reached
	if !namesPort(9101) {
		t.Fatal("a running record's port is not named")
	}
	c.Release(ctx, log, "indexed")
	if namesPort(9101) {
		t.Error("released record still names its port until the watch catches up")
	}
	close(gate)

	// The watch is behind the record's last update when it is released.
	gate = gates.hold("late:claimed")
	held, err = c.Claim(ctx, "late", "p")
	if err != nil {
		t.Fatal(err)
	}
	<-gates.reached
	if _, _, err := c.Update(ctx, held, running(9102)); err != nil {
		t.Fatal(err)
	}
	c.Release(ctx, log, "late")
	stale := gates.hold("late:running")
	// The release purges the record's earlier revisions: the watch's
	// consumer delivers the update only if it had it before the purge
	// (almost always; not on a loaded machine now and then). A claim made
	// after the release tells when the watch is past both.
	after := gates.hold("after:claimed")
	close(gate)
	if _, err := c.Claim(ctx, "after", "p"); err != nil {
		t.Fatal(err)
	}
	switch at := reach(t, gates); at {
	case "late:running": // the watch delivers the update made before the release
		if namesPort(9102) {
			t.Error("an update older than the release brought the port back")
		}
		close(stale)
		if at := reach(t, gates); at != "after:claimed" {
			t.Fatalf("watch at %s, want after:claimed", at)
		}
	case "after:claimed":
		t.Log("the release purged the update before the watch's consumer had it")
		// The gate would stop the watch at the session's next claim below.
		gates.drop("late:running")
		close(stale)
		if namesPort(9102) {
			t.Error("a released record names its port")
		}
	default:
		t.Fatalf("watch at %s, want late:running or after:claimed", at)
	}
	close(after)

	// A new claim of the session is indexed as usual.
	held, err = c.Claim(ctx, "late", "p")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Update(ctx, held, running(9103)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if !namesPort(9103) {
			return errors.New("the new claim's port is not named")
		}
		return nil
	})
}
