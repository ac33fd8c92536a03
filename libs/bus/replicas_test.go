package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReplicasUnplaceable: a single, non-clustered server, and a cluster of
// two servers, refuse a stream and a bucket of 3 replicas for good, and
// EnsureStream and EnsureKV return that answer (it is not Transient) for
// the caller to name its replicas setting; 2 replicas fit the cluster.
func TestReplicasUnplaceable(t *testing.T) {
	t.Parallel()
	single := func(t *testing.T) jetstream.JetStream {
		t.Helper()
		_, js := testenv.JetStream(t, testenv.NATS(t))
		return js
	}
	pair := func(t *testing.T) jetstream.JetStream {
		t.Helper()
		c := testenv.NewNATSCluster(t, 2)
		first := c.Start(0)
		c.Start(1)
		_, js := testenv.JetStream(t, first)
		return js
	}
	for _, tc := range []struct {
		name    string
		servers func(t *testing.T) jetstream.JetStream
		fits    int
		want    string
	}{
		{"one server", single, 1, "want 1, as the NATS server is not clustered"},
		{"two-server cluster", pair, 2, "want at most the number of JetStream servers in the NATS cluster, which has too few to place 3 replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js := tc.servers(t)
			// A cluster's JetStream answers once its meta leader is
			// elected; EnsureStream retries the timeouts until then.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			_, streamErr := bus.EnsureStream(ctx, js, bus.EventsStream(events.StreamName, events.SubjectPrefix, 3, 0))
			_, kvErr := bus.EnsureKV(ctx, js, bus.ObjectsBucket(3))
			for what, err := range map[string]error{"EnsureStream": streamErr, "EnsureKV": kvErr} {
				if !bus.ReplicasUnplaceable(err) {
					t.Errorf("%s with 3 replicas: err = %v, want the servers' refusal of 3 replicas", what, err)
				}
				named := bus.ReplicasError(err, "STREAM_REPLICAS", 3)
				var varErr *envconfig.VarError
				if !errors.As(named, &varErr) || varErr.Name != "STREAM_REPLICAS" || !strings.Contains(named.Error(), tc.want) {
					t.Errorf("ReplicasError(%s's error) = %v, want a STREAM_REPLICAS error containing %q", what, named, tc.want)
				}
			}
			if _, err := bus.EnsureStream(ctx, js, bus.EventsStream(events.StreamName, events.SubjectPrefix, tc.fits, 0)); err != nil {
				t.Fatalf("EnsureStream with %d replicas: %v", tc.fits, err)
			}
		})
	}
	if bus.ReplicasUnplaceable(nats.ErrTimeout) || bus.ReplicasUnplaceable(nil) {
		t.Error("ReplicasUnplaceable holds for an error that is not the server's refusal")
	}
	var varErr *envconfig.VarError
	if err := bus.ReplicasError(nats.ErrTimeout, "STREAM_REPLICAS", 3); errors.As(err, &varErr) || !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("ReplicasError(timeout) = %v, want the timeout unchanged", err)
	}
}
