package group

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// replicaRule says how ensureReplicas treats a stream with another count.
type replicaRule int

const (
	// exactly: the stream belongs to this group alone; set its count.
	exactly replicaRule = iota
	// atLeast: other groups share the stream; only raise its count, so a
	// group configured lower does not weaken the others.
	atLeast
)

// ensureReplicas updates stream (a KV bucket's backing stream too) to want
// replicas when it has another count that rule allows changing. JetStream
// moves the data to the new peer set itself; in a single server anything
// above 1 is refused, and the error says so.
func ensureReplicas(ctx context.Context, js jetstream.JetStream, stream string, want int, rule replicaRule, log *slog.Logger) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", stream, err)
	}
	sc := s.CachedInfo().Config
	if sc.Replicas == want || rule == atLeast && sc.Replicas > want {
		return nil
	}
	from := sc.Replicas
	sc.Replicas = want
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("stream %s replicas %d -> %d: %w", stream, from, want, err)
	}
	log.Info("stream replicas changed", slog.String(logkey.Stream, stream), slog.Int(keyReplicas, want), slog.Int(keyReplicasBefore, from))
	return nil
}

// kvStream is the stream backing a KV bucket.
func kvStream(bucket string) string { return "KV_" + bucket }

// Log keys of a replica change (only this package logs them).
const (
	keyReplicas       = "replicas"
	keyReplicasBefore = "replicas_before"
)
