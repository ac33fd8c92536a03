package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/events"
)

// Stream defaults from ARCHITECTURE.md.
const (
	// DefaultEventsMaxAge keeps events for 72h: long enough for a consumer
	// that was down over a weekend to catch up.
	DefaultEventsMaxAge = 72 * time.Hour
	// DefaultDuplicateWindow deduplicates Nats-Msg-Id within 2 minutes,
	// longer than any informer restart-and-republish.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultDLQMaxAge keeps dead letters for two weeks.
	DefaultDLQMaxAge = 14 * 24 * time.Hour
)

// StreamConfig is the part of a stream's config the control plane decides.
// Storage is always file, retention always limits.
type StreamConfig struct {
	Name     string
	Subjects []string
	// MaxAge defaults to DefaultEventsMaxAge.
	MaxAge time.Duration
	// Replicas defaults to 1 (dev); use 3 in a cluster.
	Replicas int
	// DuplicateWindow defaults to DefaultDuplicateWindow (capped at MaxAge).
	DuplicateWindow time.Duration
}

// EventsStream is the config of an events stream: name (events.StreamName,
// or events.ShadowStreamName for a shadow informer) capturing prefix + ".>".
func EventsStream(name, prefix string, replicas int, maxAge time.Duration) StreamConfig {
	return StreamConfig{Name: name, Subjects: []string{prefix + ".>"}, MaxAge: maxAge, Replicas: replicas}
}

// DLQStream is the config of the dead-letter stream capturing dlqPrefix + ".>".
func DLQStream(dlqPrefix string, replicas int, maxAge time.Duration) StreamConfig {
	if maxAge == 0 {
		maxAge = DefaultDLQMaxAge
	}
	return StreamConfig{Name: DLQStreamName, Subjects: []string{dlqPrefix + ".>"}, MaxAge: maxAge, Replicas: replicas}
}

func (c StreamConfig) jetstream() (jetstream.StreamConfig, error) {
	if c.Name == "" || len(c.Subjects) == 0 {
		return jetstream.StreamConfig{}, fmt.Errorf("stream name and subjects are required: %w", ErrInvalidConfig)
	}
	if c.MaxAge < 0 || c.Replicas < 0 || c.DuplicateWindow < 0 {
		return jetstream.StreamConfig{}, fmt.Errorf("stream %s: negative limit: %w", c.Name, ErrInvalidConfig)
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultEventsMaxAge
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	// The server rejects a duplicate window longer than MaxAge.
	c.DuplicateWindow = min(c.DuplicateWindow, c.MaxAge)
	return jetstream.StreamConfig{
		Name:       c.Name,
		Subjects:   c.Subjects,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxAge:     c.MaxAge,
		Replicas:   c.Replicas,
		Duplicates: c.DuplicateWindow,
	}, nil
}

// EnsureStream creates the stream or updates it to cfg, so it is safe to
// call from every replica at start-up. Transient JetStream errors (see
// Transient) are retried with backoff until ctx ends. It returns
// ErrInvalidConfig for a
// bad cfg or the JetStream error (e.g. jetstream.ErrStreamNameAlreadyInUse
// is never returned: an existing stream is updated).
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	jc, err := cfg.jetstream()
	if err != nil {
		return nil, err
	}
	s, err := retryTransient(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.CreateOrUpdateStream(ctx, jc) })
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// EnsureEventsStream ensures the live events stream (events.StreamName on
// events.SubjectPrefix) with the given replicas and max age (0 = 72h).
func EnsureEventsStream(ctx context.Context, js jetstream.JetStream, replicas int, maxAge time.Duration) (jetstream.Stream, error) {
	return EnsureStream(ctx, js, EventsStream(events.StreamName, events.SubjectPrefix, replicas, maxAge))
}
