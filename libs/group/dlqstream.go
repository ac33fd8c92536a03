package group

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
)

// ensureDLQStream makes sure dead letters published under cfg.DLQPrefix are
// stored. It only creates a missing stream (never updates one an operator
// tuned), with the events stream's replica count.
func ensureDLQStream(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	sc := bus.DLQStream(cfg.DLQPrefix, 1, 0)
	if _, err := js.Stream(ctx, sc.Name); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up dlq stream %s: %w", sc.Name, err)
	}
	if s, err := js.Stream(ctx, cfg.Stream); err == nil {
		sc.Replicas = max(1, s.CachedInfo().Config.Replicas)
	}
	if _, err := bus.EnsureStream(ctx, js, sc); err != nil {
		return fmt.Errorf("create dlq stream: %w", err)
	}
	return nil
}
