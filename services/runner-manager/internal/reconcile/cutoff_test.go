package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
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

// A replica registers its runner's address (state starting) and is cut
// off from NATS before the runner passes its health check: the runner
// does not listen yet. Its heartbeat expires. Before, the peer probed the
// runner, found nothing listening and took the claim over at once (2-3 s
// after the cut), while the cut-off replica's runner came up a moment
// later: two runners of one session. Now the peer takes a starting record
// over only once it has seen it unchanged for the start wait (the health
// deadline plus a margin) and the runner still does not answer:
//   - healthy after the cut: the runner answers the peer's probe at the
//     end of the wait and the session runs on the cut-off replica alone,
//     which registers it running once NATS is back;
//   - never healthy: the cut-off replica kills it at its health deadline
//     and writes Failed, and the peer takes the claim over afterwards.
func TestCutOffStartingRunsOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		healthy bool
	}{{"healthy after the cut", true}, {"never healthy", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cutOffStarting(t, tc.healthy)
		})
	}
}

func cutOffStarting(t *testing.T, healthy bool) {
	e := newEnv(t)
	link := testenv.NewLink(t, strings.TrimPrefix(e.nats.ClientURL(), "nats://"))
	// A health deadline of 8 s: the peer's start wait is about 13 s. The
	// runner must pass its health check before it, after the gate opened
	// (about 2.5 s after the spawn).
	health := runner.HealthPolicy{Host: "127.0.0.1", Interval: 100 * time.Millisecond, Attempts: 80, FirstDelay: 10 * time.Millisecond}
	// rm-b's log tells when it saw the record and left it to its start
	// wait, and when its probe at the wait's end found the runner serving.
	peerLog := &jsonLog{}
	e.replica(replicaOpts{member: "rm-b", health: health, logs: peerLog})
	// rm-a's runner listens once gate exists.
	gate := filepath.Join(t.TempDir(), "gate")
	script := fmt.Sprintf(`while [ ! -f %s ]; do sleep 0.02; done; exec %s`, gate, demoRunner)
	nc := testenv.ConnURL(t, "nats://"+link.Addr())
	a := e.replica(replicaOpts{member: "rm-a", health: health, nc: nc, command: []string{"/bin/sh", "-c", script}})
	cut, restored := false, false
	t.Cleanup(func() { // before rm-a stops: it leaves the member set
		if cut && !restored {
			link.Restore()
		}
	})
	s := e.create("cut off starting")
	id := s.GetMetadata().GetId()
	e.handle(a, added, s)
	var started registry.Record
	testenv.Eventually(t, 10*time.Second, func() error {
		var err error
		if started, err = registry.Get(t.Context(), e.runners, id); err != nil {
			return err
		}
		if started.Owner != "rm-a" || started.State != registry.StateStarting || !started.Routable() {
			return fmt.Errorf("record %+v: not rm-a's starting runner", started)
		}
		return nil
	})
	// Cut only once rm-a knows its registration landed: it writes
	// Creating after the registration returned. A cut between the write
	// and its answer left rm-a believing its runner unregistered: it
	// killed it at the start deadline as a runner a peer may take over,
	// wrote nothing, and rm-b restarted the session (no Failed).
	e.waitPhase(id, session.PhaseCreating, 10*time.Second)
	link.Cut()
	cut = true
	cutAt := time.Now()

	// Watch until the peer's probe at the end of its start wait found the
	// runner serving (healthy), or until the peer took the claim over
	// (never healthy): never two runners. The gate opens once the peer
	// saw the record without a heartbeat and left it to its start wait,
	// where the old code probed and took the claim over, or at once if
	// the peer takes over. Causes, not times: these were 3 s and 13 s
	// after the cut, and load moves the causes past such marks.
	var gateAt, tookAt, goneAt time.Time
	var waiting, answered bool // seen in rm-b's log
	logged := 0
	deadline := cutAt.Add(60 * time.Second) // a hang guard: the watch takes about 15 s
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, l := range peerLog.since(t, logged) {
			logged++
			if !strings.Contains(l.line, id) {
				continue
			}
			waiting = waiting || strings.HasPrefix(l.msg, "owner has no heartbeat and its runner may still be starting")
			answered = answered || strings.HasPrefix(l.msg, "owner has no heartbeat but its runner answers")
		}
		now := time.Now()
		groups := sessionGroups(t, id)
		if len(groups) > 1 {
			t.Fatalf("two runners of the session at once %v after the cut: process groups %v", now.Sub(cutAt).Round(10*time.Millisecond), groups)
		}
		if goneAt.IsZero() && !slices.Contains(groups, started.PID) {
			goneAt = now
		}
		rec, err := registry.Get(t.Context(), e.runners, id)
		// rm-a cannot write: a record gone was released by the peer.
		if tookAt.IsZero() && (err == nil && rec.Owner != "rm-a" || errors.Is(err, registry.ErrNotFound)) {
			tookAt = now
		}
		if healthy && gateAt.IsZero() && (!tookAt.IsZero() || waiting) {
			if err := os.WriteFile(gate, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			gateAt = now
		}
		// Never healthy: a second of watching after the takeover (not a
		// bound: a longer one would only catch more).
		if healthy && (answered || !tookAt.IsZero()) || !healthy && !tookAt.IsZero() && now.Sub(tookAt) > time.Second {
			break
		}
		if now.After(deadline) {
			t.Fatalf("peer did not take over the claim of the dead runner within %v: record %+v (%v)", deadline.Sub(cutAt), rec, err)
		}
		<-tick.C
	}
	if healthy && !tookAt.IsZero() {
		t.Fatalf("claim taken over %v after the cut although its runner serves", tookAt.Sub(cutAt).Round(10*time.Millisecond))
	}
	if !healthy {
		t.Logf("rm-a's runner gone %v after the cut, claim taken over %v after", goneAt.Sub(cutAt).Round(10*time.Millisecond), tookAt.Sub(cutAt).Round(10*time.Millisecond))
		if goneAt.IsZero() || tookAt.Before(goneAt) {
			t.Fatalf("claim taken over %v after the cut, before rm-a killed its runner (gone at %v)", tookAt.Sub(cutAt).Round(10*time.Millisecond), goneAt)
		}
	}
	// Back on NATS (restored here: t's context, which the link dials
	// with, ends before the cleanups run).
	link.Restore()
	restored = true
	testenv.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("rm-a not reconnected: %v", nc.Status())
		}
		return nil
	})
	if healthy {
		// rm-a registers its runner running.
		testenv.Eventually(t, 10*time.Second, func() error {
			rec, err := registry.Get(t.Context(), e.runners, id)
			if err != nil {
				return err
			}
			if rec.Owner != "rm-a" || rec.State != registry.StateRunning || rec.PID != started.PID {
				return fmt.Errorf("record %+v: not rm-a's running runner %d", rec, started.PID)
			}
			if g := sessionGroups(t, id); !slices.Equal(g, []int{started.PID}) {
				return fmt.Errorf("runners %v, want rm-a's %d alone", g, started.PID)
			}
			return nil
		})
		e.waitPhase(id, session.PhaseRunning, 5*time.Second)
		return
	}
	// rm-a wrote Failed; rm-b, having taken the claim over, found it so
	// and released the claim.
	e.waitNoClaim(id)
	if g := sessionGroups(t, id); len(g) != 0 {
		t.Fatalf("runners %v of a failed session", g)
	}
	got := e.waitPhase(id, session.PhaseFailed, 5*time.Second)
	if c := condition(t, got, status.CondHealthCheckPassed); c.Reason != status.ReasonHealthCheckTimeout {
		t.Fatalf("HealthCheckPassed = %+v, want reason %s", c, status.ReasonHealthCheckTimeout)
	}
}

// sessionGroups returns the process groups (sorted) of the live processes
// of session id: one per runner, whatever it has spawned.
func sessionGroups(t *testing.T, id string) []int {
	t.Helper()
	all, err := procfs.AllProcs()
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, p := range all {
		env, err := p.Environ()
		if err != nil || !slices.Contains(env, runner.EnvSessionID+"="+id) || !pidAlive(p.PID) {
			continue
		}
		st, err := p.Stat()
		if err != nil {
			continue // exited meanwhile
		}
		if !slices.Contains(out, st.PGRP) {
			out = append(out, st.PGRP)
		}
	}
	slices.Sort(out)
	return out
}

// The health deadline kills a runner that never became healthy at once,
// whoever holds its session's lock: its supervisor's registration and
// Creating write (onSpawned) hold it for seconds in an outage, and so may
// a sweep's or resync's writes, while a peer takes the record over once
// its start wait (the deadline plus a margin) is over. Before, the kill
// waited for onSpawned and then for the lock.
func TestHealthTimeoutKillsWithoutLock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// hold returns, once the lock is held for as long as the test
		// lasts, what to release it with.
		hold func(e *env, rp *replica, api *hangingCreating, id string) (release func())
	}{
		{"lock held", func(e *env, rp *replica, api *hangingCreating, id string) func() {
			api.release() // no hanging write: the lock is the test's
			// Once registered: an unregistered runner is killed at the
			// start deadline without the lock (giveUpUnregistered).
			testenv.Eventually(e.t, 5*time.Second, func() error {
				if rec, err := registry.Get(e.t.Context(), e.runners, id); err != nil || rec.State != registry.StateStarting {
					return fmt.Errorf("record %+v (%v) not starting", rec, err)
				}
				return nil
			})
			return rp.rec.sup.Lock(id)
		}},
		{"creating write hangs", func(e *env, _ *replica, api *hangingCreating, _ string) func() {
			select {
			case <-api.hanging:
			case <-time.After(5 * time.Second):
				e.t.Fatal("no Creating write within 5 s")
			}
			return api.release
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			api := &hangingCreating{sessionAPI: e.client, hanging: make(chan struct{}), released: make(chan struct{})}
			health := runner.HealthPolicy{Host: "127.0.0.1", Interval: 100 * time.Millisecond, Attempts: 10}
			rp := e.replica(replicaOpts{api: api, health: health, command: []string{"/bin/sh", "-c", "exec sleep 60"}})
			s := e.create("never healthy")
			id := s.GetMetadata().GetId()
			e.handle(rp, added, s)
			release := tc.hold(e, rp, api, id)
			released := false
			defer func() {
				if !released {
					release()
				}
			}()
			var pid int
			testenv.Eventually(t, 5*time.Second, func() error {
				g := sessionGroups(t, id)
				if len(g) != 1 {
					return fmt.Errorf("runners %v, want one", g)
				}
				pid = g[0] // the group's leader: the runner
				return nil
			})
			// The deadline is 1 s after the spawn.
			testenv.Eventually(t, 10*time.Second, func() error {
				if pidAlive(pid) {
					return fmt.Errorf("runner %d alive while the session lock is held", pid)
				}
				return nil
			})
			release()
			released = true
			got := e.waitPhase(id, session.PhaseFailed, 10*time.Second)
			if c := condition(t, got, status.CondHealthCheckPassed); c.Reason != status.ReasonHealthCheckTimeout {
				t.Fatalf("HealthCheckPassed = %+v, want reason %s", c, status.ReasonHealthCheckTimeout)
			}
		})
	}
}

// hangingCreating is the API, with the first Creating write hanging
// (ignoring its ctx, as a stuck connection may) until release.
type hangingCreating struct {
	sessionAPI
	once     sync.Once
	hanging  chan struct{} // closed when the Creating write hangs
	released chan struct{}
	rel      sync.Once
}

func (h *hangingCreating) UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	if req.GetPhase() == string(session.PhaseCreating) {
		first := false
		h.once.Do(func() { first = true })
		if first {
			close(h.hanging)
			<-h.released
		}
	}
	return h.sessionAPI.UpdateSessionStatus(ctx, req)
}

func (h *hangingCreating) release() { h.rel.Do(func() { close(h.released) }) }

// A replica registers its runner's address (state starting) and is cut
// off from NATS before the runner passes its health check; the user stops
// the session, and the peer, which gets the Stopping event, asks the
// owner to stop through the record (state stopping: the owner's start
// wait still runs). Before, the stop request ended the start wait: the
// peer's next sweep probed the runner, found nothing listening yet, took
// the claim over and wrote Stopped, while the cut-off replica's runner
// lived on (came up, and ran until its owner heard of the session's end).
// Now a stopping record waits as a starting one does: the runner comes up
// (the gate opens once the peer has left the stopping record to its start
// wait), its owner finds the session Stopping at its Running write and
// stops it, and the session ends Stopped with no runner left and no claim.
func TestCutOffStartingStopRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	link := testenv.NewLink(t, strings.TrimPrefix(e.nats.ClientURL(), "nats://"))
	// A health deadline of 8 s, as in cutOffStarting: the peer's start
	// wait is about 13 s.
	health := runner.HealthPolicy{Host: "127.0.0.1", Interval: 100 * time.Millisecond, Attempts: 80, FirstDelay: 10 * time.Millisecond}
	peerLog := &jsonLog{}
	b := e.replica(replicaOpts{member: "rm-b", health: health, logs: peerLog})
	gate := filepath.Join(t.TempDir(), "gate")
	script := fmt.Sprintf(`while [ ! -f %s ]; do sleep 0.02; done; exec %s`, gate, demoRunner)
	nc := testenv.ConnURL(t, "nats://"+link.Addr())
	a := e.replica(replicaOpts{member: "rm-a", health: health, nc: nc, command: []string{"/bin/sh", "-c", script}})
	restored := false
	t.Cleanup(func() { // before rm-a stops: it leaves the member set
		if !restored {
			link.Restore()
		}
	})
	s := e.create("stopped while cut off starting")
	id := s.GetMetadata().GetId()
	e.handle(a, added, s)
	var started registry.Record
	testenv.Eventually(t, 10*time.Second, func() error {
		var err error
		if started, err = registry.Get(t.Context(), e.runners, id); err != nil {
			return err
		}
		if started.Owner != "rm-a" || started.State != registry.StateStarting || !started.Routable() {
			return fmt.Errorf("record %+v: not rm-a's starting runner", started)
		}
		return nil
	})
	// rm-a's Creating write comes after the registration: written after
	// the user's Stopping, it would replace it (the API has no
	// precondition on status writes) and rm-b would find the Stopping
	// event stale.
	e.waitPhase(id, session.PhaseCreating, 10*time.Second)
	link.Cut()
	cutAt := time.Now()

	// The user stops the session; the event reaches rm-b.
	e.handleRedelivered(b, modified, e.setPhase(id, session.PhaseStopping))
	rec, err := registry.Get(t.Context(), e.runners, id)
	if err != nil || rec.Owner != "rm-a" || rec.State != registry.StateStopping {
		t.Fatalf("record after the Stopping event: %+v (%v), want rm-a's with a stop request", rec, err)
	}
	logged := len(peerLog.since(t, 0))

	// Watch until rm-a stopped its runner and wrote Stopped. The gate
	// opens once rm-b has left the stopping record to its start wait (two
	// sweeps that said so after the stop request: the first may have
	// read its index before the watch delivered the request), or at once
	// if rm-b takes the claim over. Never: the claim taken over, or the
	// session Stopped, while rm-a's runner lives.
	var gateAt time.Time
	waits := 0
	deadline := cutAt.Add(60 * time.Second) // a hang guard: the watch takes a few seconds
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, l := range peerLog.since(t, logged) {
			logged++
			if strings.Contains(l.line, id) && strings.HasPrefix(l.msg, "owner has no heartbeat and its runner may still be starting") {
				waits++
			}
		}
		now := time.Now()
		groups := sessionGroups(t, id)
		if len(groups) > 1 {
			t.Fatalf("two runners of the session at once %v after the cut: process groups %v", now.Sub(cutAt).Round(10*time.Millisecond), groups)
		}
		alive := slices.Contains(groups, started.PID)
		rec, err := registry.Get(t.Context(), e.runners, id)
		// rm-a cannot write: a record gone was released by the peer.
		took := err == nil && rec.Owner != "rm-a" || errors.Is(err, registry.ErrNotFound)
		if took && alive {
			t.Fatalf("claim taken over %v after the cut while rm-a's runner %d lives (record %+v, %v)", now.Sub(cutAt).Round(10*time.Millisecond), started.PID, rec, err)
		}
		cur := e.get(id)
		if session.PhaseOf(cur) == session.PhaseStopped && alive {
			t.Fatalf("session Stopped %v after the cut while rm-a's runner %d lives", now.Sub(cutAt).Round(10*time.Millisecond), started.PID)
		}
		if gateAt.IsZero() && (took || waits >= 2) {
			if err := os.WriteFile(gate, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			gateAt = now
		}
		if !gateAt.IsZero() && !alive && session.PhaseOf(cur) == session.PhaseStopped {
			break
		}
		if now.After(deadline) {
			t.Fatalf("session not Stopped with rm-a's runner gone within %v of the cut: phase %q, runners %v, record %+v (%v)", deadline.Sub(cutAt), cur.GetPhase(), groups, rec, err)
		}
		<-tick.C
	}
	t.Logf("rm-a's runner stopped and the session Stopped %v after the cut (gate opened %v after it)", time.Since(cutAt).Round(10*time.Millisecond), gateAt.Sub(cutAt).Round(10*time.Millisecond))
	// Back on NATS, the claim is released (by rm-a, or by rm-b once its
	// start wait is over) and nothing runs.
	link.Restore()
	restored = true
	testenv.Eventually(t, 30*time.Second, func() error {
		rec, err := registry.Get(t.Context(), e.runners, id)
		if !errors.Is(err, registry.ErrNotFound) {
			return fmt.Errorf("claim still present: %+v (%v)", rec, err)
		}
		return nil
	})
	if g := sessionGroups(t, id); len(g) != 0 {
		t.Fatalf("runners %v of a stopped session", g)
	}
	e.waitPhase(id, session.PhaseStopped, 5*time.Second)
}
