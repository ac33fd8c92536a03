package bus_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReplicasNotSupported: a single, non-clustered server refuses a stream
// and a bucket of 3 replicas for good, and EnsureStream and EnsureKV return
// that answer at once (it is not Transient) for the caller to name its
// replicas setting.
func TestReplicasNotSupported(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	_, streamErr := bus.EnsureStream(ctx, js, bus.EventsStream(events.StreamName, events.SubjectPrefix, 3, 0))
	_, kvErr := bus.EnsureKV(ctx, js, bus.ObjectsBucket(3))
	for what, err := range map[string]error{"EnsureStream": streamErr, "EnsureKV": kvErr} {
		if !bus.ReplicasNotSupported(err) {
			t.Errorf("%s with 3 replicas on one server: err = %v, want the server's refusal of replicas > 1", what, err)
		}
	}
	if _, err := bus.EnsureStream(ctx, js, bus.EventsStream(events.StreamName, events.SubjectPrefix, 1, 0)); err != nil {
		t.Fatalf("EnsureStream with 1 replica: %v", err)
	}
	if bus.ReplicasNotSupported(nats.ErrTimeout) || bus.ReplicasNotSupported(nil) {
		t.Error("ReplicasNotSupported holds for an error that is not the server's refusal")
	}
}
