package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"

	"github.com/nats-io/nats.go/jetstream"
)

// members returns a heartbeat writer per name on one fresh bucket (TTL 1s).
func members(t *testing.T, names ...string) (jetstream.KeyValue, []*Members) {
	t.Helper()
	nc, js := testenv.JetStream(t, testenv.NATS(t))
	kv, err := js.CreateKeyValue(t.Context(), BucketConfig(1, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []*Members
	for _, n := range names {
		m, err := NewMembers(kv, nc, n, time.Second, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return kv, out
}

func TestMembers(t *testing.T) {
	t.Parallel()
	kv, ms := members(t, "a", "b.with dots")
	a, b := ms[0], ms[1]
	log := slog.New(slog.DiscardHandler)
	alive := func(m *Members, who string) bool {
		t.Helper()
		ok, err := m.Alive(t.Context(), who)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !alive(a, "a") {
		t.Fatal("a is not alive to itself")
	}
	if alive(a, "b.with dots") {
		t.Fatal("b alive before its first beat")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)        // read below
	go func() { done <- b.Run(ctx) }() // owned by this test; ends on cancel
	testenv.Eventually(t, 5*time.Second, func() error {
		if !alive(a, "b.with dots") {
			return errors.New("b not alive")
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if alive(a, "b.with dots") {
		t.Fatal("b alive after leaving")
	}
	// A beat without renewal expires after the TTL (kill -9).
	if err := b.Beat(t.Context()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if alive(a, "b.with dots") {
			return errors.New("b still alive after the ttl")
		}
		return nil
	})
	if _, err := NewMembers(kv, a.nc, "", time.Second, log); err == nil {
		t.Fatal("empty member accepted")
	}
	if _, err := NewMembers(kv, a.nc, "x", time.Millisecond, log); err == nil {
		t.Fatal("tiny ttl accepted")
	}
}

// Hold keeps beating after its ctx ended, for as long as fn (the runners'
// shutdown) runs, and leaves once fn returned: a peer must not take over
// sessions whose runners are still being stopped.
func TestHoldOutlivesCtx(t *testing.T) {
	t.Parallel()
	kv, ms := members(t, "holder", "peer")
	m, peer := ms[0], ms[1]
	revision := func() uint64 {
		t.Helper()
		e, err := kv.Get(t.Context(), "holder")
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision()
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{}) // closed once fn saw ctx end
	release := make(chan struct{}) // closed to let fn return
	done := make(chan error, 1)    // Hold's result
	go func() {                    // owned by this test; ends when release closes
		done <- m.Hold(ctx, func(ctx context.Context) error {
			<-ctx.Done()
			close(stopped)
			<-release
			return errors.New("fn's error")
		})
	}()
	testenv.Eventually(t, 5*time.Second, func() error {
		if ok, err := peer.Alive(t.Context(), "holder"); err != nil || !ok {
			return fmt.Errorf("holder not alive: %v", err)
		}
		return nil
	})
	cancel()
	<-stopped
	after := revision()
	testenv.Eventually(t, 5*time.Second, func() error {
		if rev := revision(); rev <= after {
			return fmt.Errorf("no beat since ctx ended (revision %d)", rev)
		}
		return nil
	})
	close(release)
	if err := <-done; err == nil || err.Error() != "fn's error" {
		t.Fatalf("Hold = %v, want fn's error", err)
	}
	if ok, err := peer.Alive(t.Context(), "holder"); err != nil || ok {
		t.Fatalf("holder alive after Hold returned: %v, %v", ok, err)
	}
}

// A replica shut down before its first beat landed is not an error: Hold
// returns nil without calling fn (CI saw "heartbeat rm-0: context canceled"
// from a test replica stopped at once).
func TestHoldCancelledBeforeFirstBeat(t *testing.T) {
	t.Parallel()
	_, ms := members(t, "holder")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	called := false
	if err := ms[0].Hold(ctx, func(context.Context) error { called = true; return nil }); err != nil || called {
		t.Fatalf("Hold = %v, fn called %v; want nil, not called", err, called)
	}
}

// A replica with a lower MEMBER_TTL starts while one with a higher one
// runs (a rolling update, a canary): the bucket keeps the higher TTL, and
// the new replica beats and judges by it. Before, it set the bucket's
// TTL to its own (bus.EnsureKV): the live replica, beating every old
// TTL/3, was seen dead between beats (audit: TTL 1s, a replica beating
// every 2s seen dead 21 times of 60, and its record taken over). A
// higher TTL raises the bucket's.
func TestMembersBucketTTLNeverLowered(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	bucketTTL := func() time.Duration {
		t.Helper()
		kv, err := js.KeyValue(ctx, BucketMembers)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.TTL()
	}
	for _, step := range []struct {
		ttl, want time.Duration
	}{
		{6 * time.Second, 6 * time.Second}, // created
		{time.Second, 6 * time.Second},     // kept
		{9 * time.Second, 9 * time.Second}, // raised
	} {
		_, got, err := EnsureBucket(ctx, js, 1, step.ttl)
		if err != nil {
			t.Fatal(err)
		}
		if got != step.want || bucketTTL() != step.want {
			t.Errorf("EnsureBucket with ttl %v: returned %v, bucket TTL %v; want %v", step.ttl, got, bucketTTL(), step.want)
		}
	}
}
