package group_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestNoHandlerCallWhileDisconnected: while the member's connection is
// down, its lanes start no handler call: a message waiting in its lane
// (here for its retry, due 1 ms after a try failed during the outage) is
// tried again only after the reconnect. Meanwhile the member could not
// ack it, and the message may already be another member's.
func TestNoHandlerCallWhileDisconnected(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := testConfig("a")
	cfg.Backoff = []time.Duration{time.Millisecond}
	nc, mjs := testenv.JetStream(t, srv)
	started := make(chan struct{}, 1) // the first try started
	release := make(chan struct{})
	var calls, offline atomic.Int32 // offline: calls that began with the connection down
	runMember(t, nc, mjs, cfg, func(ctx context.Context, _ group.Message) error {
		if !nc.IsConnected() {
			offline.Add(1)
		}
		if calls.Add(1) > 1 {
			return nil
		}
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return errors.New("backend down")
	}, testLogger())
	waitMembers(t, js, "a")
	publish(t, js, "s1", 1)
	waitSignal(t, started, "first try never started")

	srv.Shutdown()
	testenv.Eventually(t, 10*time.Second, func() error {
		if nc.IsConnected() {
			return errors.New("member still connected")
		}
		return nil
	})
	close(release) // the first try fails while NATS is down
	// The failure is counted just before the 1 ms backoff that precedes
	// the retry, so the retry is due from here on, with NATS still down.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Retried; n != 1 {
			return fmt.Errorf("retried %d, want the first try failed", n)
		}
		return nil
	})
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != 1 {
			return fmt.Errorf("acked %d, want the retry's success", n)
		}
		return nil
	})
	if n := offline.Load(); n != 0 {
		t.Fatalf("%d of %d handler calls began while the connection was down", n, calls.Load())
	}
}
