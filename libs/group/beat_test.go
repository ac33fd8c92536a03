package group

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestHeartbeatsDoNotWaitForTheLoop: while Run's loop is held up (a
// reconcile or a consumer info that a loaded JetStream answers slowly; here
// nobody reads beaten at all) the member keeps renewing its heartbeat, so
// its peers never count it dead. Before heartbeats had their own goroutine
// a slow reconcile delayed the next heartbeat past the TTL, and live
// members "left the group" under load (issue 15's open-loop benchmark).
func TestHeartbeatsDoNotWaitForTheLoop(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	if _, err := bus.EnsureEventsStream(ctx, js, 1, 0); err != nil {
		t.Fatal(err)
	}
	cfg, err := Config{Group: "beat", Member: "a", MemberTTL: 600 * time.Millisecond}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := join(ctx, js, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	w, err := m.members.Watch(ctx, cfg.Member, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }() // best effort in a test

	bctx, cancel := context.WithCancel(ctx)
	_, _, done := beat(bctx, m, newOwnership(), log)
	defer func() {
		cancel()
		<-done
	}()
	// Five TTLs' worth of renewals with the loop never draining beaten.
	const want = 15
	deadline := time.After(10 * cfg.MemberTTL * want / 3)
	for n := 0; n < want; {
		select {
		case e := <-w.Updates():
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				n++
			}
		case <-deadline:
			t.Fatalf("%d heartbeats while the loop was held up, want %d", n, want)
		}
	}
}
