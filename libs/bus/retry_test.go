package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestEnsureWaitsOutAnOutage: a stream or bucket ensured while JetStream
// does not answer (the server restarting, a busy cluster placing an R3
// asset) is created once it does, instead of failing the start-up on the
// first timeout.
func TestEnsureWaitsOutAnOutage(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc := testenv.Conn(t, srv)
	// Each JetStream request gives up after 200 ms, far shorter than the
	// outage below: only retries get through it.
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	type result struct {
		what string
		err  error
	}
	done := make(chan result, 3)
	go func() {
		_, err := bus.EnsureStream(t.Context(), js, bus.EventsStream("OUTAGE", "outage", 1, time.Hour))
		done <- result{"EnsureStream", err}
	}()
	go func() {
		_, err := bus.EnsureKV(t.Context(), js, jetstream.KeyValueConfig{Bucket: "outage-ensured"})
		done <- result{"EnsureKV", err}
	}()
	go func() {
		_, err := bus.OpenKV(t.Context(), js, jetstream.KeyValueConfig{Bucket: "outage-opened"})
		done <- result{"OpenKV", err}
	}()
	// Down for five request timeouts.
	restart := time.AfterFunc(time.Second, func() {
		if err := srv.Restart(); err != nil {
			t.Errorf("restart: %v", err)
		}
	})
	t.Cleanup(func() { restart.Stop() })
	for range 3 {
		select {
		case r := <-done:
			if r.err != nil {
				t.Errorf("%s through an outage: %v", r.what, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("ensure still running 30 s after the outage began")
		}
	}
}

func TestTransient(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name         string
		callerGaveUp bool
		err          error
		want         bool
	}{
		{"no responders", false, fmt.Errorf("create: %w", nats.ErrNoResponders), true},
		{"timeout", false, nats.ErrTimeout, true},
		{"deadline of the request", false, context.DeadlineExceeded, true},
		{"cluster unavailable", false, &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"insufficient resources", false, &jetstream.APIError{Code: 500, ErrorCode: 10023}, false},
		{"wrapped cluster unavailable", false, fmt.Errorf("x: %w", &jetstream.APIError{ErrorCode: 10008}), true},
		{"other api error", false, &jetstream.APIError{ErrorCode: 10074}, false},
		{"group config mismatch", false, errors.New("the existing elastic consumer group config can not be updated"), false},
		{"permission", false, errors.New("nats: permissions violation"), false},
		{"caller gave up", true, nats.ErrTimeout, false},
		{"no error", false, nil, false},
	}
	for _, tc := range tests {
		ctx := t.Context()
		if tc.callerGaveUp {
			ctx = cancelled
		}
		if got := bus.Transient(ctx, tc.err); got != tc.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
