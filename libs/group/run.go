package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// leaveTimeout bounds the graceful leave (delete heartbeat, hand over
// partitions) after Run's ctx is done.
const leaveTimeout = 5 * time.Second

// Run joins cfg.Group on cfg.Stream as cfg.Member and calls h for every
// event of the member's partitions until ctx is done. It blocks; on ctx
// done it stops taking messages, waits up to cfg.StopGrace for the
// in-flight handler (then cancels its ctx and releases the message),
// deletes its heartbeat so its partitions move to the other members at
// once, and returns nil.
//
// It returns ErrInvalidConfig for a bad cfg, an error when the group exists
// with other group-wide settings, and ErrGroupStopped when pcgroups stops on
// its own (group deleted, connection closed). Transient NATS errors while
// running are logged and retried. See the package doc for the delivery
// guarantees and failover timing.
func Run(ctx context.Context, js jetstream.JetStream, cfg Config, h Handler, log *slog.Logger) error {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("nil handler: %w", ErrInvalidConfig)
	}
	log = log.With(slog.String(logkey.Group, cfg.Group), slog.String(logkey.Member, cfg.Member), slog.String(logkey.Stream, cfg.Stream))
	if cfg.Meter != nil {
		unregister, err := registerMetrics(cfg)
		if err != nil {
			return err
		}
		defer func() {
			if err := unregister(); err != nil {
				log.Warn("unregister consumer group metrics", slog.Any(logkey.Err, err))
			}
		}()
	}
	if err := ensureDLQStream(ctx, js, cfg); err != nil {
		return err
	}

	m, err := join(ctx, js, cfg, log)
	if err != nil {
		return err
	}
	if err := m.heartbeat(ctx); err != nil {
		return err
	}
	mapping, err := m.reconcile(ctx, "")
	if err != nil {
		return err
	}
	cfg.Assignment.set(cfg.Partitions, partitionsOf(mapping, cfg.Member))
	defer cfg.Assignment.set(cfg.Partitions, nil)

	// Handlers outlive ctx by the stop grace; cancelled after it or on return.
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	w := &worker{cfg: cfg, js: js, h: h, log: log, gate: newGate()}
	// pcgroups watches its config with the ctx it is given: it must live
	// until the stop below calls Stop, not end with ctx.
	cgctx, cancelCG := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCG()
	consume := func() (pcgroups.ConsumerGroupConsumeContext, error) {
		cc, err := pcgroups.ElasticConsume(cgctx, js, cfg.Stream, cfg.Group, cfg.Member, w.callback(hctx), jetstream.ConsumerConfig{
			AckPolicy: jetstream.AckExplicitPolicy,
			AckWait:   cfg.AckWait,
			// One message in flight per member: a naked message blocks the
			// member's later ones until it is redelivered, which is what
			// keeps per-object order through retries.
			MaxAckPending: 1,
			// Run dead-letters after cfg.MaxDeliver itself; a server limit
			// would leave the message stuck in the work-queue stream.
			MaxDeliver: -1,
		})
		if err != nil {
			return nil, fmt.Errorf("consume group %s as %s: %w", cfg.Group, cfg.Member, err)
		}
		return cc, nil
	}
	cc, err := consume()
	if err != nil {
		return err
	}
	log.Info("consumer group joined", slog.Any(keyPartitions, partitionsOf(mapping, cfg.Member)))

	ticker := time.NewTicker(cfg.heartbeat())
	defer ticker.Stop()
	var missingSince time.Time // when our consumer was first seen missing
	for {
		select {
		case <-ctx.Done():
			return stop(hctx, cancelHandlers, cc, w, m, cfg, log, nil)
		case err := <-cc.Done():
			if ctx.Err() != nil {
				return stop(hctx, cancelHandlers, nil, w, m, cfg, log, nil)
			}
			if err == nil {
				err = errors.New("group config deleted")
			}
			return stop(hctx, cancelHandlers, nil, w, m, cfg, log, fmt.Errorf("%w: %w", ErrGroupStopped, err))
		case <-ticker.C:
			if err := m.heartbeat(ctx); err != nil {
				log.Warn("heartbeat failed", slog.Any(logkey.Err, err))
				continue
			}
			if mapping, err = m.reconcile(ctx, ""); err != nil {
				log.Warn("membership reconcile failed", slog.Any(logkey.Err, err))
				continue
			}
			cfg.Assignment.set(cfg.Partitions, partitionsOf(mapping, cfg.Member))
			if restart := watchdog(ctx, m, w, cfg, mapping, &missingSince, log); restart {
				cc.Stop()
				if err := waitDone(cc, leaveTimeout); err != nil {
					log.Debug("group consumer stop", slog.Any(logkey.Err, err))
				}
				if cc, err = consume(); err != nil {
					return stop(hctx, cancelHandlers, nil, w, m, cfg, log, err)
				}
			}
		}
	}
}

// watchdog reports whether the pcgroups instance must be restarted: we own
// partitions but our consumer has been missing for longer than a failover
// should take. pcgroups only re-creates a consumer it knows is
// gone; one deleted under it (idle timeout after a long pause, or removed
// while we were briefly thought dead) would otherwise never come back.
func watchdog(ctx context.Context, m *membership, w *worker, cfg Config, mapping []pcgroups.MemberMapping, missingSince *time.Time, log *slog.Logger) bool {
	if len(partitionsOf(mapping, cfg.Member)) == 0 || w.gate.busy() {
		*missingSince = time.Time{}
		return false
	}
	ok, err := m.consumerExists(ctx)
	if err != nil || ok {
		*missingSince = time.Time{}
		return false
	}
	if missingSince.IsZero() {
		*missingSince = time.Now()
		return false
	}
	// pcgroups retries a failed create every AckWait+500ms by itself; a
	// restart re-creates at once, so do not wait longer than a member TTL
	// plus a heartbeat (the failover budget) nor two of its retries.
	if time.Since(*missingSince) < min(2*cfg.AckWait+time.Second, cfg.MemberTTL+cfg.heartbeat()) {
		return false
	}
	*missingSince = time.Time{}
	log.Warn("member consumer missing, restarting group consumer")
	return true
}

// stop stops intake, waits for the in-flight handler within the grace,
// leaves the group and returns cause.
func stop(hctx context.Context, cancelHandlers context.CancelFunc, cc pcgroups.ConsumerGroupConsumeContext, w *worker, m *membership, cfg Config, log *slog.Logger, cause error) error {
	idle := w.gate.close()
	if cc != nil {
		cc.Stop()
	}
	select {
	case <-idle:
	case <-time.After(cfg.StopGrace):
		log.Warn("stop grace over, cancelling in-flight handler", slog.Duration(logkey.Duration, cfg.StopGrace))
		cancelHandlers()
		select {
		case <-idle:
		case <-time.After(leaveTimeout):
			// A handler that ignores its ctx must not block shutdown; its
			// message is redelivered after AckWait.
			log.Error("in-flight handler ignored cancellation")
		}
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(hctx), leaveTimeout)
	defer cancel()
	if err := m.leave(lctx); err != nil {
		log.Warn("leave failed, partitions move after member ttl", slog.Any(logkey.Err, err))
	} else {
		log.Info("consumer group left")
	}
	if cc != nil {
		if err := waitDone(cc, leaveTimeout); err != nil {
			log.Debug("group consumer stop", slog.Any(logkey.Err, err))
		}
	}
	return cause
}

// waitDone waits (bounded) for pcgroups' goroutine to finish after Stop
// and returns why it ended (nil after a plain Stop).
func waitDone(cc pcgroups.ConsumerGroupConsumeContext, d time.Duration) error {
	select {
	case err := <-cc.Done():
		return err
	case <-time.After(d):
		return fmt.Errorf("group consumer still running after %s", d)
	}
}
