package group_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestDeadLetterPublishRetried: while the DLQ stream refuses letters (full,
// discard new), a message's dead letter is retried in its lane: the
// message stays in the work queue, not terminated and not handed to the
// handler again. Once the stream takes letters, the letter is stored and
// only then is the message terminated. Nothing is lost.
func TestDeadLetterPublishRetried(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var calls atomic.Int32
	cfg := testConfig("a")
	refused := newLogWatch("dead letter publish failed, will retry")
	nc, mjs := testenv.JetStream(t, srv)
	runMember(t, nc, mjs, cfg, func(context.Context, group.Message) error {
		calls.Add(1)
		return group.Terminal(errors.New("invalid name"))
	}, slog.New(refused))
	waitMembers(t, js, "a")

	// Run created the DLQ stream; make it full and refuse more.
	ctx := t.Context()
	dlq, err := js.Stream(ctx, bus.DLQStreamName)
	if err != nil {
		t.Fatalf("dlq stream: %v", err)
	}
	sc := dlq.CachedInfo().Config
	sc.MaxMsgs, sc.Discard = 1, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatalf("limit dlq stream: %v", err)
	}
	if _, err := js.Publish(ctx, group.DLQSubject(group.Config{Group: "other"}, "filler"), nil); err != nil {
		t.Fatalf("fill dlq stream: %v", err)
	}

	publish(t, js, "s1", 1)
	select {
	case <-refused.seen:
	case <-time.After(15 * time.Second):
		t.Fatal("the dead letter publish never failed")
	}
	if st := cfg.Stats.Snapshot(); st.DeadLettered != 0 || st.InFlight != 1 {
		t.Fatalf("stats while the DLQ refuses = %+v, want the message held, not dead-lettered", st)
	}
	waitWorkQueue(t, js, 1)

	if err := dlq.Purge(ctx); err != nil { // room again
		t.Fatalf("purge dlq: %v", err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.DeadLettered != 1 || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want 1 dead letter and nothing held", st)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	letters, err := group.DeadLetters(ctx, js, "", testGroup, 0)
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	if len(letters) != 1 {
		t.Fatalf("dlq holds %d letters of %s, want 1", len(letters), testGroup)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1: the publish is retried, not the message", n)
	}
}
