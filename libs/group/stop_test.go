package group_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestGracefulStop: stopping waits for the in-flight handler; a handler
// that outlives the grace gets its ctx cancelled and its message goes,
// unacked and not dead-lettered, to the next member.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		grace    time.Duration
		finishes bool // the handler returns when released (else only on ctx)
		wantAck  uint64
	}{
		{name: "in-flight handler finishes", grace: 5 * time.Second, finishes: true, wantAck: 1},
		{name: "grace runs out", grace: 200 * time.Millisecond, finishes: false, wantAck: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, js := setup(t)
			started := make(chan struct{}, 1) // one in-flight message
			release := make(chan struct{})
			cfg := testConfig("a")
			cfg.StopGrace = tc.grace
			a := startMember(t, srv, cfg, func(ctx context.Context, _ group.Message) error {
				started <- struct{}{}
				if tc.finishes {
					<-release
					return nil
				}
				<-ctx.Done()
				return ctx.Err()
			})
			waitMembers(t, js, "a")
			publish(t, js, "s1", 1)
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("handler never started")
			}

			a.cancel()
			if tc.finishes {
				select {
				case err := <-a.done:
					t.Fatalf("Run returned %v while a handler was in flight", err)
				case <-time.After(100 * time.Millisecond):
				}
				close(release)
			}
			if err := a.stop(t); err != nil {
				t.Fatalf("Run after stop = %v, want nil", err)
			}
			st := cfg.Stats.Snapshot()
			if st.Acked != tc.wantAck || st.DeadLettered != 0 || st.Retried != 0 {
				t.Fatalf("stats = %+v, want %d acked and no retry or dead letter", st, tc.wantAck)
			}
			if tc.wantAck == 1 {
				return
			}
			// The released message goes to the next member.
			var j journal
			startMember(t, srv, testConfig("b"), func(_ context.Context, m group.Message) error {
				j.add(call{member: "b", object: m.Event.GetObjectId(), version: version(m), ok: true})
				return nil
			})
			testenv.Eventually(t, 10*time.Second, func() error {
				if j.successes() != 1 {
					return errors.New("released message not redelivered to b")
				}
				return nil
			})
		})
	}
}

// TestHandlerContextCarriesTrace: the span context published with the
// event reaches the handler's ctx.
func TestHandlerContextCarriesTrace(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	got := make(chan trace.SpanContext, 1) // one event
	startMember(t, srv, testConfig("a"), func(ctx context.Context, _ group.Message) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	})
	waitMembers(t, js, "a")
	ctx := tracedCtx(t)
	sc := trace.SpanContextFromContext(ctx)
	traceID, spanID := sc.TraceID(), sc.SpanID()
	publishCtx(t, ctx, js, "s1", 1)
	select {
	case h := <-got:
		if h.TraceID() != traceID || h.SpanID() != spanID || !h.IsRemote() {
			t.Fatalf("handler span context = %s/%s remote=%v, want %s/%s remote", h.TraceID(), h.SpanID(), h.IsRemote(), traceID, spanID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal(fmt.Errorf("handler not called"))
	}
}
