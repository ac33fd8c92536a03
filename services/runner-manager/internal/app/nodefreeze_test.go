package app_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
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

// acceptQueues returns, for each of ports, how many connections wait in
// the accept queue of the socket listening on it, as the TCP tables
// (/proc/net/tcp and tcp6, concatenated) in tables show it: a listening
// socket's rx_queue column. A SIGSTOPped runner accepts nothing, so its
// count is every connection made to it since it was stopped (those whose
// client gave up stay queued until it accepts them).
func acceptQueues(tables string, ports []uint64) map[uint64]int {
	out := map[uint64]int{}
	for _, line := range strings.Split(tables, "\n") {
		// sl local_address rem_address st tx_queue:rx_queue ...:
		// addresses are hex IP:port, st 0A is LISTEN, the queues hex.
		f := strings.Fields(line)
		if len(f) < 5 || f[3] != "0A" {
			continue
		}
		port := hexPort(f[1])
		if !slices.Contains(ports, port) {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseUint(rx, 16, 32)
		if err != nil {
			continue
		}
		out[port] += int(n)
	}
	return out
}

// tcpTables returns /proc/net/tcp and /proc/net/tcp6 as they are now.
func tcpTables(t *testing.T) string {
	t.Helper()
	var out []byte
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil && !errors.Is(err, os.ErrNotExist) { // no IPv6: no tcp6
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return string(out)
}

// hexPort is the port of a /proc/net/tcp address (hex IP:port); 0 if
// malformed.
func hexPort(addr string) uint64 {
	_, port, _ := strings.Cut(addr, ":")
	n, _ := strconv.ParseUint(port, 16, 16) // 0 on error: no port matches
	return n
}

// queueSnapFile is the file testdata/queuesnap writes in the workspace.
const queueSnapFile = "queues.txt"

// sameStatus reports whether a and b have the same phase, start and
// completion times and conditions: what a status write sets.
func sameStatus(a, b *ambientv1.Session) bool {
	return a.GetPhase() == b.GetPhase() && a.GetConditions() == b.GetConditions() &&
		a.GetStartTime().AsTime().Equal(b.GetStartTime().AsTime()) &&
		a.GetCompletionTime().AsTime().Equal(b.GetCompletionTime().AsTime())
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
//     no condition: rm-b owns their status; its own status-write counter
//     says so, and no session's status changes after the thaw);
//   - the registry names rm-b;
//   - rm-a does not crash, stays in the group and runs new sessions.
//
// The sessions move together, not one by one: rm-b's sweep recovers the
// frozen sessions 8 at a time, so when it starts the first new runner the
// recoveries of all of them (up to 8) have probed their frozen runner.
// Each runner is started through testdata/queuesnap, which records the
// frozen runners' accept queues at that moment: a frozen runner accepts
// no connection, so its queue counts the probes it got, the sweep's and
// then its recovery's. Recoveries one after the other would have probed
// one frozen runner twice when the first new runner starts.
//
// The resync and the runner check run every second, so they too meet the
// thawed replica before the check that it wrote nothing.
func TestNodeFrozenSessionsMoveOnce(t *testing.T) {
	w := newWorld(t)
	a, b := twoReplicas(t, w, "RUNNER_RESYNC_INTERVAL=1s", "RUNNER_CHECK_INTERVAL=1s",
		"LOCAL_RUNNER_COMMAND="+envconfig.QuoteCommand(queueSnap, demoRunner))
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
	// What rm-a wrote before the freeze: it writes nothing while frozen,
	// so anything more was written after the thaw.
	writesBefore := statusWrites(t, a)

	// The node stops: the replica and every runner group of it.
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	signalGroups(t, groups, syscall.SIGSTOP)
	frozen := time.Now()
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
	// sessions; one after the other, the recoveries cost a probe timeout
	// per session (7.6-12.6 s for 5-7 sessions). The time is only logged;
	// that the recoveries ran together is proven by the accept queues at
	// each new runner's start (see the test's doc).
	takeover := time.Since(frozen)
	if takeover <= memberTTL {
		t.Errorf("taken over %v after the freeze; want after MEMBER_TTL %v", takeover, memberTTL)
	}
	want := min(len(moved), 8)
	for _, id := range moved {
		snap, err := os.ReadFile(filepath.Join(b.root, id, queueSnapFile))
		if err != nil {
			t.Errorf("session %s: no accept-queue snapshot of its new runner: %v", id, err)
			continue
		}
		queues := acceptQueues(string(snap), ports)
		recovered := 0
		for _, port := range ports {
			if queues[port] >= 2 { // the sweep's probe and its recovery's
				recovered++
			}
		}
		if recovered < want {
			t.Errorf("when %s started the new runner of session %s, the recoveries had probed %d of the %d frozen runners (connections by port %v); want %d: the sessions were recovered one after the other",
				b.member, id, recovered, len(moved), queues, want)
		}
	}
	// Only logged: a recovery that failed under load is tried again by
	// the next sweep, which probes once more.
	t.Logf("probes of the %d frozen runners by port while frozen: %v", len(moved), acceptQueues(tcpTables(t), ports))
	atThaw := map[string]*ambientv1.Session{}
	for _, id := range ids {
		atThaw[id] = w.get(id)
	}
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
	// Counted by rm-a itself, tries that failed included: rm-b may write
	// a session's Running again after the thaw (a write that landed after
	// its 2 s deadline is sent again by the sweep), which an API call
	// count cannot tell from rm-a's.
	if writes := statusWrites(t, a); !maps.Equal(writes, writesBefore) {
		t.Errorf("%s wrote status after the thaw: writes by phase and result %v, before the freeze %v", a.member, writes, writesBefore)
	}
	// rm-b's write again of the same status changes nothing; anything
	// else is a write over rm-b's state.
	for _, c := range hist.since(thawAt, ids) {
		if before := atThaw[c.sess.GetMetadata().GetId()]; !sameStatus(c.sess, before) {
			t.Errorf("session %s changed %v after the thaw: phase %s start %v conditions %s (at the thaw: %s %v %s)", c.sess.GetMetadata().GetId(),
				c.at.Sub(thawAt).Round(time.Millisecond), c.sess.GetPhase(), c.sess.GetStartTime().AsTime(), c.sess.GetConditions(),
				before.GetPhase(), before.GetStartTime().AsTime(), before.GetConditions())
		}
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
