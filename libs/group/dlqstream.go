package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
)

// ensureDLQStream makes sure dead letters published under cfg.DLQPrefix are
// stored with at least replicas copies: it creates a missing stream, and of
// an existing one (which an operator may have tuned) it only raises the
// replica count. Other groups share the stream, so it is never lowered.
func ensureDLQStream(ctx context.Context, js jetstream.JetStream, cfg Config, replicas int, log *slog.Logger) error {
	sc := bus.DLQStream(cfg.DLQPrefix, replicas, 0)
	if _, err := js.Stream(ctx, sc.Name); err == nil {
		return ensureReplicas(ctx, js, sc.Name, replicas, atLeast, log)
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up dlq stream %s: %w", sc.Name, err)
	}
	if _, err := bus.EnsureStream(ctx, js, sc); err != nil {
		return fmt.Errorf("create dlq stream: %w", err)
	}
	return nil
}
