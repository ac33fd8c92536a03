package claim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// Settled starts a TTL after the first beat and starts again after a
// reconnect: right after a NATS outage a missing peer heartbeat proves
// nothing.
func TestSettledRestartsAfterReconnect(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc, js := testenv.JetStream(t, srv)
	kv, err := js.CreateKeyValue(t.Context(), BucketConfig(1, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMembers(kv, nc, "a", time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if m.Settled() {
		t.Fatal("settled before any beat")
	}
	beating(t, m)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if nc.Stats().Reconnects == 0 {
			return errors.New("not reconnected yet")
		}
		return nil
	})
	testenv.Eventually(t, 5*time.Second, func() error {
		// The reconnect beats at once (Run), which restarts the count.
		if m.Settled() {
			return errors.New("still settled after a reconnect")
		}
		return nil
	})
	testenv.Eventually(t, 5*time.Second, func() error {
		if !m.Settled() {
			return errors.New("not settled a ttl after the reconnect")
		}
		return nil
	})
}

// A pause of the whole replica longer than the TTL (SIGSTOP, a VM stall)
// fails no beat and breaks no connection, yet its own key expired and
// what it knew of its peers is a TTL old: Settled turns false at once
// and stays false for a TTL of beats after the thaw, as after a
// reconnect. Before, the replica resumed settled.
func TestSettledRestartsAfterPause(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc, js := testenv.JetStream(t, srv)
	const ttl = time.Second
	kv, err := js.CreateKeyValue(t.Context(), BucketConfig(1, ttl))
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMembers(kv, nc, "a", ttl, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	m.now = func() time.Time { return clock }
	beatAt := func(step time.Duration) {
		t.Helper()
		clock = clock.Add(step)
		if err := m.Beat(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	beatAt(0)
	beatAt(ttl / 2)
	beatAt(ttl/2 + time.Millisecond)
	if !m.Settled() {
		t.Fatal("not settled after a TTL of beats")
	}
	clock = clock.Add(3 * ttl) // frozen: no beat for three TTLs
	if m.Settled() {
		t.Fatal("settled right after a pause of three TTLs, before any beat")
	}
	beatAt(0) // the thaw's first beat starts a new run
	if m.Settled() {
		t.Fatal("settled at the first beat after the pause")
	}
	beatAt(ttl / 2)
	beatAt(ttl/2 + time.Millisecond)
	if !m.Settled() {
		t.Fatal("not settled a TTL of beats after the pause")
	}
}

// healthServer is a runner's /health on loopback answering code and body.
func healthServer(t *testing.T, code int, body string) (string, int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body)) // the probe reads what it gets
	}))
	t.Cleanup(srv.Close)
	host, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return host, p
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// Issue 14 finding 1: a peer without a heartbeat is gone only when this
// replica is settled and the runner registered in the record does not
// answer /health as that session's runner.
func TestOwnerGoneFencing(t *testing.T) {
	t.Parallel()
	cs, ms, runners := replicas(t, "a", "fresh", "dead")
	beating(t, ms["a"])
	mine, _ := json.Marshal(map[string]string{"status": "healthy", "session_id": "s"})
	other, _ := json.Marshal(map[string]string{"status": "healthy", "session_id": "someone-else"})
	tests := []struct {
		name     string
		observer string
		endpoint func() (string, int)
		gone     bool
	}{
		{"not settled, no runner", "fresh", func() (string, int) { return "", 0 }, false},
		{"runner answers", "a", func() (string, int) { return healthServer(t, http.StatusOK, string(mine)) }, false},
		{"runner answers without a session id", "a", func() (string, int) { return healthServer(t, http.StatusOK, "ok") }, false},
		{"another session's runner on the port", "a", func() (string, int) { return healthServer(t, http.StatusOK, string(other)) }, true},
		{"runner unhealthy", "a", func() (string, int) { return healthServer(t, http.StatusServiceUnavailable, "") }, true},
		{"nothing listens", "a", func() (string, int) { return "127.0.0.1", closedPort(t) }, true},
		{"no endpoint registered", "a", func() (string, int) { return "", 0 }, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host, port := tc.endpoint()
			id := "s"
			ep := registry.Endpoint{SessionID: id, Owner: "dead", Host: host, Port: port, StartedAt: time.Now(), State: registry.StateRunning}
			if host == "" {
				ep.State = registry.StateClaimed
			}
			// One record per case, all of the session "s" (the probe
			// compares the session id), written at successive revisions.
			cur, err := registry.Get(t.Context(), runners, id)
			var rev uint64
			switch {
			case errors.Is(err, registry.ErrNotFound):
				rev, err = registry.Claim(t.Context(), runners, ep)
			case err == nil:
				rev, err = registry.Register(t.Context(), runners, ep, cur.Revision)
			}
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			rec := registry.Record{Endpoint: ep, Revision: rev}
			gone, err := cs[tc.observer].OwnerGone(t.Context(), rec, false)
			if err != nil || gone != tc.gone {
				t.Fatalf("OwnerGone = %v, %v; want %v", gone, err, tc.gone)
			}
			_, stale, err := cs[tc.observer].Scan(t.Context(), func(string) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.ContainsFunc(stale, func(r registry.Record) bool { return r.SessionID == id }); got != tc.gone {
				t.Fatalf("Scan stale = %v, want %v", got, tc.gone)
			}
		})
	}
}

// A peer's claim without a runner address has nothing to probe: its owner
// may be starting the runner while cut off from NATS (its heartbeat gone).
// It is gone only once this replica has seen it unchanged for the start
// wait; a new revision starts the wait again, an older one read late does
// not end it. An address registered over a stop request (state stopping)
// waits too: the runner may still be starting. A running runner's record
// is probed at once, as before.
func TestStartWait(t *testing.T) {
	t.Parallel()
	const wait = 500 * time.Millisecond
	cs, gone, stale := startWaitPeer(t, wait)
	ctx := t.Context()
	held, err := cs["dead"].Claim(ctx, "s", "p")
	if err != nil {
		t.Fatal(err)
	}
	seen := time.Now()
	if gone(held) || stale() {
		t.Fatal("claim without an address taken over at first sight")
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if !gone(held) {
			return errors.New("owner not gone")
		}
		return nil
	})
	if d := time.Since(seen); d < wait {
		t.Fatalf("owner gone %v after the first sight, before the start wait %v", d, wait)
	}
	if !stale() {
		t.Fatal("Scan: claim not stale after the start wait")
	}
	// The owner wrote again (a stop request on the claim): a new wait.
	again, _, err := cs["dead"].Update(ctx, held, func(e *registry.Endpoint) { e.State = registry.StateStopping })
	if err != nil {
		t.Fatal(err)
	}
	if gone(again) || stale() {
		t.Fatal("rewritten claim taken over at first sight")
	}
	if gone(held) {
		t.Fatal("older revision read late taken over")
	}
	// The owner registers its runner's address over the stop request
	// (Update keeps it): the runner may still be starting, a new wait.
	addressed, _, err := cs["dead"].Update(ctx, again, func(e *registry.Endpoint) { e.Host, e.Port = "127.0.0.1", closedPort(t) })
	if err != nil {
		t.Fatal(err)
	}
	if addressed.State != registry.StateStopping {
		t.Fatalf("registration dropped the stop request: %+v", addressed)
	}
	if gone(addressed) || stale() {
		t.Fatal("stopping record with an address taken over at first sight")
	}
	// A running runner's address: the probe decides, at once (nothing
	// listens there).
	ep := addressed.Endpoint
	ep.State = registry.StateRunning
	rev, err := registry.Register(ctx, cs["dead"].kv, ep, addressed.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if !gone(registry.Record{Endpoint: ep, Revision: rev}) || !stale() {
		t.Fatal("running record of a dead runner not taken over at once")
	}
}

// A stop request (state stopping, a peer's write) over a starting record
// hides whether the runner passed its health check; its owner, cut off
// from NATS, may still be starting it. Before, the stop request ended the
// start wait at once: the probe found nothing listening yet, the peer
// took the claim over and wrote Stopped, and the owner's runner came up
// and lived until its owner reconnected. Now the stopping record waits as
// a starting one does, then the probe decides; one whose runner answers
// is not taken over.
func TestStartWaitStopRequest(t *testing.T) {
	t.Parallel()
	const wait = 500 * time.Millisecond
	cs, gone, stale := startWaitPeer(t, wait)
	ctx := t.Context()
	addr, up := waitingRunner(t)
	held, err := cs["dead"].Claim(ctx, "s", "p")
	if err != nil {
		t.Fatal(err)
	}
	starting := registerStarting(t, cs["dead"], held, addr)
	if gone(starting) {
		t.Fatal("starting record taken over at first sight")
	}
	// "a" got the session's Stopping event: the owner is not gone (its
	// start wait runs), so "a" asks it to stop through the record.
	if err := cs["a"].RequestStop(ctx, starting); err != nil {
		t.Fatal(err)
	}
	stopping, err := cs["a"].Get(ctx, "s")
	if err != nil || stopping.State != registry.StateStopping {
		t.Fatalf("record after the stop request: %+v, %v", stopping, err)
	}
	seen := time.Now()
	if gone(stopping) || stale() {
		t.Fatal("stop request over a starting record: taken over at first sight, before the start wait")
	}
	// Once the runner comes up for its cut-off owner, its owner stops it
	// when it hears of the request.
	checkWaitThenProbe(t, "stopping record", stopping, seen, wait, gone, stale, up)
}

// A peer's record in state starting names its runner, which may not
// listen yet: its owner, cut off from NATS, kills it only at its health
// deadline, and it may answer a moment after a probe that failed. A runner
// that does not answer counts only once this replica has seen the record
// unchanged for the start wait; one that answers is not taken over. The
// registration (claimed, then starting) is a new revision and the wait
// starts again: the owner's health deadline counts from the spawn, which
// may come up to the start deadline after the claim. Before, a starting
// record was probed and taken over at once.
func TestStartWaitStarting(t *testing.T) {
	t.Parallel()
	const wait = 500 * time.Millisecond
	cs, gone, stale := startWaitPeer(t, wait)
	ctx := t.Context()
	addr, up := waitingRunner(t)

	held, err := cs["dead"].Claim(ctx, "s", "p")
	if err != nil {
		t.Fatal(err)
	}
	gone(held) // the claim's first sight
	testenv.Eventually(t, 5*time.Second, func() error {
		if !gone(held) {
			return errors.New("claim's owner not gone")
		}
		return nil
	})
	starting := registerStarting(t, cs["dead"], held, addr)
	seen := time.Now()
	if gone(starting) || stale() {
		t.Fatal("starting record whose runner does not answer yet taken over at first sight")
	}
	checkWaitThenProbe(t, "starting record", starting, seen, wait, gone, stale, up)
}

// waitingRunner serves /health as the runner of session "s" once up is
// set, and 503 before: a runner that does not serve yet, as far as a
// probe can tell.
func waitingRunner(t *testing.T) (addr *net.TCPAddr, up *atomic.Bool) {
	t.Helper()
	up = &atomic.Bool{}
	healthy, _ := json.Marshal(map[string]string{"status": "healthy", "session_id": "s"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(healthy) // the probe reads what it gets
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr), up
}

// registerStarting is the owner's registration of its runner at addr
// (state starting) in held, and returns the record as written.
func registerStarting(t *testing.T, c *Claims, held registry.Record, addr *net.TCPAddr) registry.Record {
	t.Helper()
	starting, _, err := c.Update(t.Context(), held, func(e *registry.Endpoint) {
		e.Host, e.Port, e.State = addr.IP.String(), addr.Port, registry.StateStarting
	})
	if err != nil {
		t.Fatal(err)
	}
	return starting
}

// checkWaitThenProbe checks what follows the first sight (at seen) of
// rec, a peer's record whose runner may still be starting and does not
// answer yet (what names it): its owner counts as gone only once the
// start wait is over, and Scan finds it stale then; once its runner
// answers (up) as the session's, it is not taken over, waited or not.
func checkWaitThenProbe(t *testing.T, what string, rec registry.Record, seen time.Time, wait time.Duration,
	gone func(registry.Record) bool, stale func() bool, up *atomic.Bool,
) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		if !gone(rec) {
			return fmt.Errorf("%s's owner not gone", what)
		}
		return nil
	})
	if d := time.Since(seen); d < wait {
		t.Fatalf("owner gone %v after the first sight, before the start wait %v", d, wait)
	}
	if !stale() {
		t.Fatalf("Scan: %s not stale after the start wait", what)
	}
	up.Store(true)
	if gone(rec) || stale() {
		t.Fatalf("%s whose runner answers taken over", what)
	}
}

// Reassert writes a vanished record of a runner that runs here again, and
// says ErrLost when another owner holds the session.
func TestReassert(t *testing.T) {
	t.Parallel()
	cs, _, _ := replicas(t, "a", "b")
	ctx := t.Context()
	ep := registry.Endpoint{SessionID: "s1", Owner: "a", Host: "127.0.0.1", Port: 9100, PID: 7, StartedAt: time.Now().UTC(), State: registry.StateRunning}
	rec, err := cs["a"].Reassert(ctx, ep)
	if err != nil || rec.Owner != "a" || rec.Port != 9100 || rec.Revision == 0 {
		t.Fatalf("Reassert of a vanished record = %+v, %v", rec, err)
	}
	again, err := cs["a"].Reassert(ctx, ep)
	if err != nil || again.Revision != rec.Revision {
		t.Fatalf("Reassert of its own record = %+v, %v; want %+v", again, err, rec)
	}
	if _, err := cs["b"].Reassert(ctx, registry.Endpoint{SessionID: "s1", StartedAt: time.Now(), State: registry.StateRunning}); !errors.Is(err, ErrLost) {
		t.Fatalf("Reassert over another owner = %v, want ErrLost", err)
	}
}

// Issue 14 point 4: the sweep reads the watch's index, which follows
// releases; releases leave markers that expire, and ExpireMarkers gives
// the markers of older releases (plain deletes) the same TTL, so the
// bucket holds only live records again.
func TestIndexAndMarkers(t *testing.T) {
	t.Parallel()
	nc, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	cfg := bus.RunnersBucket(1)
	cfg.LimitMarkerTTL = time.Second
	runners, err := bus.EnsureKV(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Releases made before marker TTLs: never-expiring delete markers.
	for i := range 20 {
		id := fmt.Sprintf("old-%d", i)
		if _, err := registry.Claim(ctx, runners, registry.Endpoint{SessionID: id, Owner: "a", StartedAt: time.Now(), State: registry.StateClaimed}); err != nil {
			t.Fatal(err)
		}
		if _, err := registry.Release(ctx, runners, id, "a"); err != nil {
			t.Fatal(err)
		}
	}
	membersKV, err := bus.EnsureKV(ctx, js, BucketConfig(1, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	m, err := NewMembers(membersKV, nc, "a", time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(runners, "a", m, log, WithMarkerTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)                                       // Watch's result
	go func() { done <- c.Watch(wctx, func(registry.Endpoint) {}) }() // owned by this test; ends on cancel
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for i := range 30 {
		if _, err := c.Claim(ctx, fmt.Sprintf("new-%d", i), "p"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 29 {
		c.Release(ctx, log, fmt.Sprintf("new-%d", i))
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		mine, _, err := c.Scan(ctx, func(string) bool { return true })
		if err != nil {
			return err
		}
		if len(mine) != 1 || mine[0].SessionID != "new-29" {
			return fmt.Errorf("scan found %d records, want new-29 only", len(mine))
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		c.ExpireMarkers(ctx, 5) // a few per sweep
		st, err := runners.Status(ctx)
		if err != nil {
			return err
		}
		if st.Values() != 1 {
			return fmt.Errorf("bucket holds %d messages, want the 1 live record", st.Values())
		}
		return nil
	})
	if _, err := New(runners, "a", m, log, WithMarkerTTL(time.Millisecond)); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("sub-second marker ttl: %v, want ErrInvalidOption", err)
	}
}

// startWaitPeer returns the claims of replicas "a" (beating, with start
// wait) and "dead" (no heartbeat), and two questions "a" asks of a record
// of session "s": is its owner gone (OwnerGone), and does Scan count it
// stale.
func startWaitPeer(t *testing.T, wait time.Duration) (cs map[string]*Claims, gone func(registry.Record) bool, stale func() bool) {
	t.Helper()
	cs, ms, _ := replicasWith(t, []Option{WithStartWait(wait)}, "a", "dead")
	beating(t, ms["a"])
	gone = func(rec registry.Record) bool {
		t.Helper()
		g, err := cs["a"].OwnerGone(t.Context(), rec, false)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	stale = func() bool {
		t.Helper()
		_, st, err := cs["a"].Scan(t.Context(), func(string) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(st, func(r registry.Record) bool { return r.SessionID == "s" })
	}
	return cs, gone, stale
}
