package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// CheckConsumerGroup is the readiness check [Runtime.Consume] adds.
const CheckConsumerGroup = "consumer_group"

// Rejoin backoff: a member whose group stopped on its own (the stream not
// there yet, the connection closed) tries again from rejoinMin, doubling
// to rejoinMax, +/-25 %, for as long as its runs fail; a run that was
// healthy starts it over (see consume).
const (
	rejoinMin = 250 * time.Millisecond
	rejoinMax = 10 * time.Second
)

// rejoinPolicy is the backoff between two runs of a member (see Consume);
// a parameter of consume so tests can shorten it and watch it.
type rejoinPolicy struct {
	min, max time.Duration
	// waiting, when set, is told every wait chosen and the error that
	// ended the run before it, the missing events stream included.
	waiting func(err error, d time.Duration)
}

// Consume declares the service's consumer-group member: a part that waits
// for cfg.Stream to exist (the informer creates it; a consumer may start
// first), then runs group.Run with the runtime's JetStream and logger, and
// rejoins with backoff whenever the group stops on its own. An invalid cfg
// makes Run fail before anything runs (wrapping group.ErrInvalidConfig); a
// configuration group.Run finds unworkable once it talks to NATS (a
// GROUP_REPLICAS the servers cannot place, an envconfig.VarError) stops the
// service with that error instead of rejoining.
// cfg.Meter defaults to the service's Meter, so the consumer_group.*
// metrics are on /metrics from the start (consumer_group_joined 0 until
// the member is in its group, and again while it rejoins),
// cfg.TracerProvider to the service's (every handler call is a CONSUMER
// span), and cfg.Stats to one Stats kept across rejoins. The
// "consumer_group" readiness check passes while the member is in its group
// (group.StatsSnapshot.Joined): not while it waits for the events stream,
// retries its join or rejoins, so a rollout waits until a new replica
// takes work (a member without partitions, in a group with more members
// than partitions, counts: it is a standby that takes over on a failover).
// Called once the parts run, it declares nothing and stops the service
// (see Runtime).
func (rt *Runtime) Consume(cfg group.Config, h group.Handler) {
	// Late, its check would fail /readyz for ever and its metrics read
	// joined 0, for a member that never runs.
	if !rt.declaring("consumer group " + cfg.Group) {
		return
	}
	cfg, err := cfg.WithDefaults()
	if err != nil {
		rt.invalid(fmt.Errorf("consumer group: %w", err))
		return
	}
	if cfg.Meter == nil {
		cfg.Meter = rt.tel.Meter
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = rt.tel.TracerProvider
	}
	if cfg.Stats == nil {
		cfg.Stats = &group.Stats{}
	}
	rt.Check(CheckConsumerGroup, func(ctx context.Context) error {
		if cfg.Stats.Snapshot().Joined {
			return nil
		}
		if _, err := rt.js.Stream(ctx, cfg.Stream); err != nil {
			return fmt.Errorf("events stream %s: %w", cfg.Stream, err)
		}
		return fmt.Errorf("member %s has not joined consumer group %s: %w", cfg.Member, cfg.Group, errNotJoined)
	})
	// Registered here, once, not by each group.Run: between a group that
	// stopped and the rejoin the metrics stay, with joined 0.
	unregister, err := group.RegisterMetrics(cfg)
	if err != nil {
		rt.invalid(fmt.Errorf("consumer group: %w", err))
		return
	}
	run := cfg
	run.Meter = nil
	rt.Go("consumer group "+cfg.Group, func(ctx context.Context) error {
		defer func() {
			if err := unregister(); err != nil {
				rt.log.Warn("unregister consumer group metrics", slog.Any(logkey.Err, err))
			}
		}()
		return consume(ctx, rt.js, run, h, rt.log, rejoinPolicy{min: rejoinMin, max: rejoinMax})
	})
}

// consume runs one member until ctx ends, rejoining as policy says; see
// Consume.
func consume(ctx context.Context, js jetstream.JetStream, cfg group.Config, h group.Handler, log *slog.Logger, policy rejoinPolicy) error {
	b := &backoff.ExponentialBackOff{InitialInterval: policy.min, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: policy.max}
	waiting := false // "waiting for the events stream" is logged once
	join := func() (struct{}, error) {
		if _, err := js.Stream(ctx, cfg.Stream); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) && !waiting {
				log.Info("waiting for the events stream", slog.String(logkey.Stream, cfg.Stream))
				waiting = true
			}
			return struct{}{}, streamMissingError{err}
		}
		began := time.Now()
		err := group.Run(ctx, js, cfg, h, log)
		// Retry resets the backoff once, before the first run. A run that
		// was healthy resets it again, so a group that stops after hours
		// in it is rejoined from policy.min, not after the maximum wait
		// that a long wait for the stream or failed joins left behind
		// (not ready, consuming nothing, meanwhile). Healthy: the member
		// was in its group (group.Run returns ErrGroupStopped only once
		// joined: it is pcgroups' consumer that stopped), or the run
		// outlasted the longest wait, so rejoining at once cannot make
		// failing runs come more often than the backoff would let them.
		if errors.Is(err, group.ErrGroupStopped) || time.Since(began) >= policy.max {
			b.Reset()
		}
		// A configuration that can never work (a bad Config, or a
		// GROUP_REPLICAS the NATS servers cannot place, which group.Run
		// names as an envconfig.VarError) stops the service with exit 1:
		// rejoining would only leave it not ready for ever.
		var varErr *envconfig.VarError
		if errors.Is(err, group.ErrInvalidConfig) || errors.As(err, &varErr) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err // nil only once ctx ended
	}
	notify := func(err error, d time.Duration) {
		if policy.waiting != nil {
			policy.waiting(err, d)
		}
		var missing streamMissingError
		if errors.As(err, &missing) && errors.Is(err, jetstream.ErrStreamNotFound) {
			return // logged once above
		}
		log.Warn("consumer group stopped, rejoining", slog.Any(logkey.Err, err), slog.Duration(logkey.Duration, d))
	}
	_, err := backoff.Retry(ctx, join, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(notify))
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("consumer group: %w", err)
}

// errNotJoined is the readiness failure of a member that is not in its
// group while the events stream exists.
var errNotJoined = errors.New("not joined")

// streamMissingError marks a failed events-stream lookup before joining.
type streamMissingError struct{ err error }

func (e streamMissingError) Error() string { return "look up events stream: " + e.err.Error() }
func (e streamMissingError) Unwrap() error { return e.err }
