package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// BucketMembers is the TTL KV bucket of runner-manager heartbeats.
const BucketMembers = "ambient-runner-members"

// BucketConfig returns the members bucket config: every key expires ttl after
// its last write.
func BucketConfig(replicas int, ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: BucketMembers, Description: "runner-manager replica heartbeats",
		TTL: ttl, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	}
}

// Members writes this replica's heartbeat and answers liveness questions.
// Safe for concurrent use.
type Members struct {
	kv     jetstream.KeyValue
	member string
	every  time.Duration
	log    *slog.Logger
}

// NewMembers returns a heartbeat writer for member, renewing every ttl/3.
func NewMembers(kv jetstream.KeyValue, member string, ttl time.Duration, log *slog.Logger) (*Members, error) {
	if member == "" {
		return nil, errors.New("member id is empty")
	}
	if ttl < 300*time.Millisecond {
		return nil, fmt.Errorf("member ttl %v: want >= 300ms", ttl)
	}
	return &Members{kv: kv, member: member, every: ttl / 3, log: log}, nil
}

// Member returns this replica's id.
func (m *Members) Member() string { return m.member }

// Beat writes the heartbeat once.
func (m *Members) Beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(m.every, time.Second))
	defer cancel()
	if _, err := m.kv.Put(ctx, events.EscapeToken(m.member), []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("heartbeat %s: %w", m.member, err)
	}
	return nil
}

// Hold keeps this replica alive while fn runs: it writes the first beat
// (failing without calling fn when it cannot), beats every TTL/3 until fn
// returns, even after ctx ended (fn's shutdown, stopping and reporting its
// runners, runs while the replica still looks alive, or a peer would take
// the sessions over meanwhile), then deletes the heartbeat so peers take
// over at once instead of after the TTL. It returns fn's error joined with
// a failed leave.
func (m *Members) Hold(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := m.Beat(ctx); err != nil {
		return err
	}
	bctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	beats := make(chan error, 1)         // Run's result, read below
	go func() { beats <- m.Run(bctx) }() // owned by Hold; ends on stop below
	err := fn(ctx)
	stop()
	return errors.Join(err, <-beats)
}

// Run beats until ctx ends, then deletes the heartbeat so peers take over
// at once instead of after the TTL. Failed beats are logged and retried on
// the next tick; Run returns nil when ctx ends, or the failed leave.
func (m *Members) Run(ctx context.Context) error {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		if err := m.Beat(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("heartbeat failed", slog.String(logkey.Member, m.member), slog.String(logkey.Err, err.Error()))
		}
		select {
		case <-ctx.Done():
			return m.leave(ctx)
		case <-t.C:
		}
	}
}

func (m *Members) leave(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := m.kv.Delete(ctx, events.EscapeToken(m.member)); err != nil {
		return fmt.Errorf("leave %s: %w", m.member, err)
	}
	return nil
}

// Alive reports whether member has a live heartbeat. This replica is alive
// by definition.
func (m *Members) Alive(ctx context.Context, member string) (bool, error) {
	if member == m.member {
		return true, nil
	}
	_, err := m.kv.Get(ctx, events.EscapeToken(member))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	default:
		return false, fmt.Errorf("liveness of %s: %w", member, err)
	}
}
