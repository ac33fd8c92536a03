package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// TestStreamReplicasBeyondAServerIsAConfigError: STREAM_REPLICAS=3 against
// a single, non-clustered NATS server can never work. Run stops at once
// with an error naming the variable and its value (so the service exits 1
// like for any bad variable) instead of retrying the stream's creation for
// ever, and creates nothing.
func TestStreamReplicasBeyondAServerIsAConfigError(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	env := h.env("r3")
	env[config.EnvStreamReplicas] = "3"
	cfg, err := config.Load(envconfig.Map(env))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	// The bound only turns "retries for ever" into a failure rather than a
	// hung test: a refusal comes back at the first attempt.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = app.Run(ctx, cfg, testLogger(t, "r3"))
	if ctx.Err() != nil {
		t.Fatalf("Run still retrying when the test gave up, err = %v; want a configuration error at once", err)
	}
	const want = `STREAM_REPLICAS: want 1, as the NATS server is not clustered (more replicas need a JetStream cluster of at least that many servers), got "3"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run: %v\nwant an error containing %q", err, want)
	}
	if _, err := h.js.Stream(t.Context(), live); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s after the refusal: err = %v, want not found", live, err)
	}
}
