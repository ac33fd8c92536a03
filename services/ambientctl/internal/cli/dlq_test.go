package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestDLQ: an event a real consumer group gave up on is listed by
// `dlq list` (table and json) and, after `dlq replay`, handled by that
// group again and gone from the DLQ.
func TestDLQ(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	if _, err := bus.EnsureEventsStream(ctx, js, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	var healed atomic.Bool
	var handled atomic.Int32 // calls for s1 after the fix
	cfg := group.Config{Group: "kube-reconciler", Member: "m1", Partitions: 4, MaxDeliver: 2, Backoff: []time.Duration{10 * time.Millisecond},
		AckWait: 2 * time.Second, MemberTTL: time.Second, StopGrace: time.Second}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { // owned by this test; stopped by the cleanup below
		done <- group.Run(runCtx, js, cfg, func(context.Context, group.Message) error {
			if !healed.Load() {
				return errors.New("kube-apiserver unreachable")
			}
			handled.Add(1)
			return nil
		}, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("group member: %v", err)
		}
	})

	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	sess := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "s1", UpdatedAt: timestamppb.New(at)}, Name: "n", ProjectId: proto.String("p1")}
	msg, err := events.NewMsg(ctx, events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_DELETED, sess, nil, at))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t, nil)
	h.env[EnvNATSURL] = srv.ClientURL()
	var out string
	testenv.Eventually(t, 20*time.Second, func() error {
		out = h.mustRun("dlq", "list")
		if !strings.Contains(out, "s1") {
			return fmt.Errorf("dlq list: %q", out)
		}
		return nil
	})
	for _, want := range []string{"kube-reconciler", group.ReasonExhausted, "DELETED", "kube-apiserver unreachable"} {
		if !strings.Contains(out, want) {
			t.Errorf("dlq list output lacks %q:\n%s", want, out)
		}
	}
	var rows []deadLetterJSON
	if err := json.Unmarshal([]byte(h.mustRun("dlq", "list", "-o", "json", "--group", "kube-reconciler")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].ObjectID != "s1" || rows[0].Attempts != 2 || rows[0].Seq == 0 {
		t.Fatalf("dlq list -o json: %+v", rows)
	}
	if got := h.mustRun("dlq", "list", "--group", "informer"); strings.Contains(got, "s1") {
		t.Fatalf("another group's list shows the letter: %q", got)
	}

	if _, errs, code := h.run("dlq", "replay"); code != 2 || !strings.Contains(errs, "--all") {
		t.Fatalf("replay without SEQ: exit %d stderr %q", code, errs)
	}
	if _, errs, code := h.run("dlq", "replay", "x"); code != 2 || !strings.Contains(errs, "SEQ") {
		t.Fatalf("replay x: exit %d stderr %q", code, errs)
	}
	if _, errs, code := h.run("dlq", "replay", "--group", "informer", fmt.Sprint(rows[0].Seq)); code == 0 || !strings.Contains(errs, "not \"informer\"") {
		t.Fatalf("replay of another group's letter: exit %d stderr %q", code, errs)
	}

	healed.Store(true)
	if out := h.mustRun("dlq", "replay", fmt.Sprint(rows[0].Seq)); !strings.Contains(out, "1 dead letters replayed") {
		t.Fatalf("replay output %q", out)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if handled.Load() != 1 {
			return fmt.Errorf("handler called %d times after the replay, want 1", handled.Load())
		}
		return nil
	})
	if got := h.mustRun("dlq", "list"); strings.Contains(got, "s1") {
		t.Fatalf("letter still listed after the replay: %q", got)
	}
}
