package app_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// history records every session change the API announces (its watch), with
// the time it arrived, for a test to tell who wrote what and when.
type history struct {
	mu      sync.Mutex
	changes []change // guarded by mu
}

// change is one announced change of a session: the object as the API sent
// it (read when the event was sent, so a burst of writes can arrive as one).
type change struct {
	at   time.Time
	sess *ambientv1.Session
}

// watchHistory records the API's session changes until the test ends.
func (w *world) watchHistory() *history {
	t := w.t
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	stream, err := w.client.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := &history{}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() { // owned by the test; ends when the watch ends (cleanup cancels it)
		defer close(done)
		for {
			we, err := stream.Recv()
			if err != nil {
				return
			}
			if we.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED {
				continue
			}
			h.mu.Lock()
			h.changes = append(h.changes, change{at: time.Now(), sess: we.GetSession()})
			h.mu.Unlock()
		}
	}()
	testenv.Eventually(t, 5*time.Second, func() error {
		if w.api.Watchers() < 2 { // the informer's and this one
			return errors.New("history watch not registered")
		}
		return nil
	})
	return h
}

// since returns the changes of sessions ids the API made at or after at
// (the object's updated_at: the server's clock, this host's).
func (h *history) since(at time.Time, ids []string) []change {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []change
	for _, c := range h.changes {
		if slices.Contains(ids, c.sess.GetMetadata().GetId()) && !c.sess.GetMetadata().GetUpdatedAt().AsTime().Before(at) {
			out = append(out, c)
		}
	}
	return out
}

// watchProbes samples every 20 ms, until the returned func is called, the
// established TCP connections to ports that were not open when it was
// called (seen from the client's side). The func returns the most seen
// open at once, and the most seen open at once besides those: the sweep's
// probes of frozen runners and its recoveries' probes are two such groups
// when each group's probes run together; recoveries one after the other
// leave the second at 1.
func watchProbes(t *testing.T, ports []uint64) func() (first, second int) {
	t.Helper()
	conns := func() map[uint64]bool { // by the client's port
		out := map[uint64]bool{}
		b, _ := os.ReadFile("/proc/net/tcp") // always readable on Linux
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ...: addresses are
			// hex IP:port, st 01 is ESTABLISHED.
			f := strings.Fields(line)
			if len(f) < 4 || f[3] != "01" {
				continue
			}
			local, rem := hexPort(f[1]), hexPort(f[2])
			if slices.Contains(ports, rem) {
				out[local] = true
			}
		}
		return out
	}
	before := conns() // the frozen replica's own
	done := make(chan struct{})
	seen := make(chan []map[uint64]bool, 1) // the samples, sent once
	go func() {                             // owned by the test; ends when the returned func closes done
		var samples []map[uint64]bool
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			open := conns()
			for c := range before {
				delete(open, c)
			}
			samples = append(samples, open)
			select {
			case <-done:
				seen <- samples
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	var first, second int // set once, by stop
	stop := func() (int, int) {
		once.Do(func() {
			close(done)
			samples := <-seen
			var most map[uint64]bool
			for _, s := range samples {
				if len(s) > len(most) {
					most = s
				}
			}
			first = len(most)
			for _, s := range samples {
				n := 0
				for c := range s {
					if !most[c] {
						n++
					}
				}
				second = max(second, n)
			}
		})
		return first, second
	}
	t.Cleanup(func() { stop() }) // a test that failed before asking
	return stop
}

// hexPort is the port of a /proc/net/tcp address (hex IP:port); 0 if
// malformed.
func hexPort(addr string) uint64 {
	_, port, _ := strings.Cut(addr, ":")
	n, _ := strconv.ParseUint(port, 16, 16) // 0 on error: no port matches
	return n
}

// signalGroups sends sig to each process group.
func signalGroups(t *testing.T, pgids []int, sig syscall.Signal) {
	t.Helper()
	for _, pg := range pgids {
		if err := syscall.Kill(-pg, sig); err != nil {
			t.Errorf("%v to process group %d: %v", sig, pg, err)
		}
	}
}

// pgidOf is pid's process group (0 when pid is gone).
func pgidOf(pid int) int {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return st.PGRP
}

// liveGroups returns those of pgids that still hold a live (not zombie)
// process, in one pass over /proc.
func liveGroups(pgids []int) []int {
	live := map[int]bool{}
	all, _ := procfs.AllProcs() // always readable on Linux
	for _, p := range all {
		if st, err := p.Stat(); err == nil && st.State != "Z" && slices.Contains(pgids, st.PGRP) {
			live[st.PGRP] = true
		}
	}
	var out []int
	for _, pg := range pgids {
		if live[pg] {
			out = append(out, pg)
		}
	}
	return out
}

// A whole node paused (VM live-migration stall, a frozen cgroup): replica
// rm-a and every runner of it are stopped together (SIGSTOP) for longer
// than MEMBER_TTL. rm-b sees no heartbeat and no /health answer, takes the
// claims over and starts a runner of its own per session. On the thaw the
// old runners resume beside the new ones until rm-a notices its records
// are rm-b's (its record watch delivers rm-b's takeovers at once; the
// sweep reads each record again otherwise). What a user needs afterwards:
//
//   - every session Running with exactly one live runner, rm-b's, the one
//     its record names, and rm-a's old runners gone within a bound
//     (measured from the thaw);
//   - rm-a writes nothing to the API for the sessions it lost (no phase,
//     no condition: rm-b owns their status);
//   - the registry names rm-b;
//   - rm-a does not crash, stays in the group and runs new sessions.
//
// The resync and the runner check run every second, so they too meet the
// thawed replica before the check that it wrote nothing.
func TestNodeFrozenSessionsMoveOnce(t *testing.T) {
	w := newWorld(t)
	a, b := twoReplicas(t, w, "RUNNER_RESYNC_INTERVAL=1s", "RUNNER_CHECK_INTERVAL=1s")
	const n = 10
	ids, owners := w.createRunning("f", n)
	// Every event so far handled and acked before the freeze: the echoes
	// of each session's Creating and Running, too. A replica frozen with
	// echoes of its sessions unacked (on a loaded machine it can lag
	// behind its events although the API says Running) hands them to its
	// peer with its partitions, and the peer's handlers then probe and
	// take over those sessions at the same time as its sweep: probes of
	// three sources overlap, and the count below, which tells the sweep's
	// probes from its recoveries', sees 15 at once, then 7 (seen under
	// load). Drained, the sweep alone takes the sessions over, as this
	// test means to measure.
	w.waitQueueDrained()
	// The frozen replica is the one with more sessions (the partitions
	// decide; 16 of them split 8/8, so each has some).
	if len(owners[b.member]) > len(owners[a.member]) {
		a, b = b, a
	}
	moved := owners[a.member]
	if len(moved) == 0 {
		t.Fatalf("no session runs on %s: %v", a.member, owners)
	}
	old := runnersBySession(a.root)
	var groups []int   // the runners' process groups (a runner leads its own)
	var ports []uint64 // the runners' ports, which rm-b probes
	for _, id := range moved {
		if len(old[id]) != 1 {
			t.Fatalf("session %s: runners %v on %s, want one", id, old[id], a.member)
		}
		pg := pgidOf(old[id][0])
		if pg == 0 {
			t.Fatalf("session %s: runner %d gone", id, old[id][0])
		}
		groups = append(groups, pg)
		rec, err := w.record(id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		ports = append(ports, uint64(rec.Port)) //nolint:gosec // a port is positive
	}
	t.Logf("freezing %s with %d sessions (%s keeps %d)", a.member, len(moved), b.member, len(owners[b.member]))
	hist := w.watchHistory()

	// The node stops: the replica and every runner group of it.
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	signalGroups(t, groups, syscall.SIGSTOP)
	frozen := time.Now()
	probes := watchProbes(t, ports)
	thawed := false
	thaw := func() {
		if thawed {
			return
		}
		thawed = true
		signalGroups(t, groups, syscall.SIGCONT)
		if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Error(err)
		}
	}
	defer thaw() // a failure while frozen must not leave the node stopped

	// The peer takes every session over and runs it: record rm-b's and
	// running, phase Running, the recorded pid one of rm-b's live runners.
	testenv.Eventually(t, 30*time.Second, func() error {
		live := runnersBySession(b.root)
		phases := w.phases(moved)
		for _, id := range moved {
			rec, err := w.record(id)
			if err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			if rec.Owner != b.member || rec.State != registry.StateRunning || !slices.ContainsFunc(live[id], func(pid int) bool { return pgidOf(pid) == rec.PID }) || phases[id] != "Running" {
				return fmt.Errorf("%s: owner %s state %s pid %d (%s runs %v), phase %s", id, rec.Owner, rec.State, rec.PID, b.member, live[id], phases[id])
			}
		}
		return nil
	})
	// The key expires a TTL after the last beat (a beat every TTL/3), the
	// next sweep (300 ms) probes the frozen runners (1 s probe timeout,
	// 8 at a time) and recovers them, each probing once more (8 at a
	// time), and the restart takes a moment: about 3.5 s for up to 8
	// sessions. One after the other, the recoveries cost a probe timeout
	// per session (7.6-12.6 s for 5-7 sessions). The time is only logged
	// (a bound of 6 s stood 1.6 s from the sequential case, which load
	// crosses); that rm-b probes 8 at a time is seen in the connections:
	// a frozen runner answers no probe, so each holds its connection for
	// the whole probe timeout, and 8 at a time they are open together,
	// the sweep's and then the recoveries'.
	takeover := time.Since(frozen)
	if takeover <= memberTTL {
		t.Errorf("taken over %v after the freeze; want after MEMBER_TTL %v", takeover, memberTTL)
	}
	first, second := probes()
	t.Logf("probes of the %d frozen runners open at once: %d, then %d others", len(moved), first, second)
	if want := min(len(moved), 8); first < want || second < want {
		t.Errorf("probes of the %d frozen runners open at once: %d, then %d others; want %d of each (the sweep's, then the recoveries'): they were probed one after the other",
			len(moved), first, second, want)
	}
	callsAtThaw := w.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName)
	thawAt := time.Now()
	thaw()

	// From the thaw until rm-a's runners are gone, each moved session runs
	// twice; how long is the window this test measures.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	var window time.Duration
	for window == 0 {
		left := liveGroups(groups)
		if len(left) == 0 {
			window = time.Since(thawAt)
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("runners of %s still alive 10s after the thaw: groups %v", a.member, left)
		}
	}
	t.Logf("thawed at %s", thawAt.UTC().Format(time.RFC3339Nano))
	// Only logged: the record watch (at once) or the sweep (300 ms) ends
	// them; the deadline above (10 s) guards against a hang.
	t.Logf("frozen %v (taken over after %v); after the thaw %d sessions ran twice for %v (MEMBER_TTL %v, sweep 300ms)",
		thawAt.Sub(frozen).Round(time.Millisecond), takeover.Round(time.Millisecond), len(moved), window.Round(time.Millisecond), memberTTL)

	// Several sweeps, resyncs and runner checks of the thawed replica: no
	// session runs twice again, nothing is written over rm-b's state.
	s := &sampler{roots: []string{a.root, b.root}, twice: map[string][]int{}}
	s.sampleFor(3 * time.Second)
	if len(s.twice) > 0 {
		t.Errorf("sessions with two live runners after rm-a's were gone: %v", s.twice)
	}
	if calls := w.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName) - callsAtThaw; calls != 0 {
		t.Errorf("%d status writes after the thaw, want none", calls)
	}
	for _, c := range hist.since(thawAt, ids) {
		t.Errorf("session %s changed %v after the thaw: phase %s conditions %s", c.sess.GetMetadata().GetId(),
			c.at.Sub(thawAt).Round(time.Millisecond), c.sess.GetPhase(), c.sess.GetConditions())
	}
	live := runnersBySession(a.root, b.root)
	for id, p := range w.phases(ids) {
		rec, err := w.record(id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if p != "Running" || rec.Owner != b.member || len(live[id]) != 1 || pgidOf(live[id][0]) != rec.PID {
			t.Errorf("session %s: phase %s, record %s pid %d, runners %v", id, p, rec.Owner, rec.PID, live[id])
		}
	}
	if left := runnerPIDs(a.root); len(left) != 0 {
		t.Errorf("runners of %s alive: %v", a.member, left)
	}

	// The thawed replica lives on, in the group, and runs new sessions.
	select {
	case err := <-a.done:
		t.Fatalf("%s exited after the thaw: %v", a.member, err)
	default:
	}
	if out := a.out.String(); strings.Contains(out, "panic") {
		t.Errorf("%s panicked:\n%s", a.member, tail(out, 40))
	}
	members, err := w.js.KeyValue(t.Context(), bus.BucketRunnerMembers)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, err := members.Get(t.Context(), events.EscapeToken(a.member)); err != nil {
			return fmt.Errorf("heartbeat of %s: %w", a.member, err)
		}
		if _, err := w.js.Consumer(t.Context(), events.StreamName+"-runner-manager", a.member); err != nil {
			return fmt.Errorf("group consumer of %s: %w", a.member, err)
		}
		return nil
	})
	var fresh []string
	testenv.Eventually(t, 30*time.Second, func() error {
		id := w.create(fmt.Sprintf("after%02d", len(fresh)))
		fresh = append(fresh, id)
		w.waitAll([]string{id}, "Running", 10*time.Second)
		rec, err := w.record(id)
		if err != nil {
			return err
		}
		if rec.Owner != a.member {
			return fmt.Errorf("session %s runs on %s", id, rec.Owner)
		}
		return nil
	})
	t.Logf("%s runs new session %s (after %d on %s)", a.member, fresh[len(fresh)-1], len(fresh)-1, b.member)
}
