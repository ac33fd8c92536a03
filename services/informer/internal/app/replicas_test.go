package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// TestStreamReplicasBeyondTheServersIsAConfigError: STREAM_REPLICAS=3
// against a single, non-clustered NATS server, or against a JetStream
// cluster of two servers, can never work. Run stops with an error naming
// the variable and its value (so the service exits 1 like for any bad
// variable) instead of retrying the stream's creation for ever, and
// creates nothing.
func TestStreamReplicasBeyondTheServersIsAConfigError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		servers func(t testing.TB) *natsserver.Server // the one to connect to
		want    string
	}{
		{"one server", testenv.NATS, `STREAM_REPLICAS: want 1, as the NATS server is not clustered (more replicas need a JetStream cluster of at least that many servers), got "3"`},
		{"two-server cluster", func(t testing.TB) *natsserver.Server {
			t.Helper()
			c := testenv.NewNATSCluster(t, 2)
			first := c.Start(0)
			c.Start(1)
			return first
		}, `STREAM_REPLICAS: want at most the number of JetStream servers in the NATS cluster, which has too few to place 3 replicas, got "3"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			srv := tc.servers(t)
			_, js := testenv.JetStream(t, srv)
			env := h.env("r3")
			env[bus.EnvNATSURL] = srv.ClientURL()
			env[config.EnvStreamReplicas] = "3"
			cfg, err := config.Load(envconfig.Map(env))
			if err != nil {
				t.Fatalf("config: %v", err)
			}
			// The bound only turns "retries for ever" into a failure rather
			// than a hung test: the refusal comes back once the servers'
			// JetStream answers (a cluster's after its meta leader is
			// elected, a few seconds).
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err = app.Run(ctx, cfg, testLogger(t, "r3"))
			if ctx.Err() != nil {
				t.Fatalf("Run still retrying when the test gave up, err = %v; want a configuration error", err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v\nwant an error containing %q", err, tc.want)
			}
			if _, err := js.Stream(t.Context(), live); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("stream %s after the refusal: err = %v, want not found", live, err)
			}
		})
	}
}
