package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// leaveTimeout bounds the graceful leave (delete heartbeat, hand over
// partitions) after Run's ctx is done.
const leaveTimeout = 5 * time.Second

// Run joins cfg.Group on cfg.Stream as cfg.Member and calls h for every
// event of the member's partitions until ctx is done. It blocks; on ctx
// done it stops taking messages, lets the running handler calls finish
// within cfg.StopGrace (then cancels their ctx), releases every message it
// still holds, deletes its heartbeat so its partitions move to the other
// members at once, and returns nil.
//
// It returns ErrInvalidConfig for a bad cfg, an error when the group exists
// with other group-wide settings, and ErrGroupStopped when pcgroups stops on
// its own (group deleted, connection closed) or the group's storage is gone
// (heartbeats found no members bucket for a MemberTTL while connected: a
// NATS restart that lost its store), so a rejoin re-creates it. Whatever
// it returns once it has joined, it has left the group first, as on ctx
// done. Transient NATS errors while running are logged and retried. See
// the package doc for the delivery guarantees and failover timing.
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
		unregister, err := RegisterMetrics(cfg)
		if err != nil {
			return err
		}
		defer func() {
			if err := unregister(); err != nil {
				log.Warn("unregister consumer group metrics", slog.Any(logkey.Err, err))
			}
		}()
	}
	m, mapping, err := start(ctx, js, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while joining
		}
		return err
	}
	// From here on everything judges time by the member config join
	// settled on: its MemberTTL is the members bucket's, which may be
	// above ours. The heartbeats and the fencing use it; so must the
	// watchdog, or a member configured lower re-creates its consumer
	// sooner than a failover on its peers takes.
	cfg = m.cfg
	// Every return from here on leaves the group: a member that fails
	// after joining and kept its heartbeat would hold its partitions,
	// dead, until MemberTTL. A graceful stop leaves earlier, in stop.
	l := &leaver{m: m, log: log}
	defer l.leave(ctx)
	cfg.Assignment.set(cfg.Partitions, partitionsOf(mapping, cfg.Member))
	defer cfg.Assignment.set(cfg.Partitions, nil)

	// Handlers outlive ctx by the stop grace; cancelled after it or on return.
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	// pcgroups watches its config with the ctx it is given: it must live
	// until the stop below calls Stop, not end with ctx. So does our own
	// watch of the partitions we own.
	cgctx, cancelCG := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCG()
	own := newOwnership()
	watching, err := watchOwnership(cgctx, m, own, log)
	if err != nil {
		return err
	}
	defer func() {
		cancelCG()
		<-watching
	}()
	// From now on heartbeats report what we applied and hold (hand-offs).
	m.own = own
	counting := countBacklog(cgctx, m, own, log)
	defer func() {
		cancelCG()
		<-counting
	}()
	wqName := WorkStreamName(cfg.Stream, cfg.Group)
	wq, err := js.Stream(cgctx, wqName)
	if err != nil {
		return fmt.Errorf("work-queue stream %s: %w", wqName, err)
	}
	w := newWorker(cfg, js, wq, h, own, log)
	renewing := w.keepalive(cgctx)
	defer func() {
		cancelCG()
		<-renewing
	}()
	consume := func() (pcgroups.ConsumerGroupConsumeContext, error) {
		cc, err := pcgroups.ElasticConsume(cgctx, js, cfg.Stream, cfg.Group, cfg.Member, w.callback(ctx, hctx), jetstream.ConsumerConfig{
			AckPolicy: jetstream.AckExplicitPolicy,
			AckWait:   cfg.AckWait,
			// Up to 2 x MaxInFlight messages held at once, in per-object
			// lanes: order per object comes from the lanes, which retry
			// in place instead of naking (a naked message no longer
			// blocks the member's later ones). MaxInFlight of them run;
			// the rest is head-room for lanes in backoff (maxAckPending).
			MaxAckPending: cfg.maxAckPending(),
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
	cfg.Stats.joined.Store(true)
	defer cfg.Stats.joined.Store(false)
	// Readiness starts afresh with the next join's membership.
	defer cfg.Stats.notReady.Store(false)

	// Heartbeats run on their own goroutine and each successful one wakes
	// the reconcile below: liveness never waits for a reconcile or a
	// consumer info that a loaded JetStream answers slowly (that used to
	// delay the next heartbeat past the TTL, and live members "left").
	bctx, stopBeating := context.WithCancel(ctx)
	beaten, gone, beating := beat(bctx, m, own, log)
	// stopped ends the heartbeats before stop's leave deletes our key, so
	// no late heartbeat writes it back.
	stopped := func() {
		stopBeating()
		<-beating
	}
	defer stopped()
	var missingSince time.Time // when our consumer was first seen missing
	for {
		select {
		case <-ctx.Done():
			stopped()
			return stop(hctx, cancelHandlers, cc, w, l, cfg, log, nil)
		case err := <-cc.Done():
			stopped()
			if ctx.Err() != nil {
				return stop(hctx, cancelHandlers, nil, w, l, cfg, log, nil)
			}
			if err == nil {
				err = errors.New("group config deleted")
			}
			return stop(hctx, cancelHandlers, nil, w, l, cfg, log, fmt.Errorf("%w: %w", ErrGroupStopped, err))
		case err := <-gone:
			// The group's streams and buckets are gone (a NATS restart
			// that lost its store): nothing here re-creates them, a
			// rejoin does. Joined is cleared as Run returns.
			stopped()
			log.Warn("consumer group storage gone, rejoining", slog.Any(logkey.Err, err))
			return stop(hctx, cancelHandlers, cc, w, l, cfg, log, fmt.Errorf("%w: %w", ErrGroupStopped, err))
		case <-beaten:
		}
		if mapping, err = m.reconcile(ctx, ""); err != nil {
			log.Warn("membership reconcile failed", slog.Any(logkey.Err, err))
			continue
		}
		cfg.Assignment.set(cfg.Partitions, partitionsOf(mapping, cfg.Member))
		if restart := watchdog(ctx, m, cfg, mapping, &missingSince, log); restart {
			cc.Stop()
			if err := waitDone(cc, leaveTimeout); err != nil {
				log.Debug("group consumer stop", slog.Any(logkey.Err, err))
			}
			if cc, err = consume(); err != nil {
				stopped()
				return stop(hctx, cancelHandlers, nil, w, l, cfg, log, err)
			}
		}
	}
}

// beat renews the member's heartbeat every heartbeat interval, at once
// after a reconnect (after an outage longer than MemberTTL every key has
// expired, and the peers wait for ours: see membership.fenced) and when
// own changed (a config applied or a lost partition's work ended: a
// partition handed off must not wait a tick). Each success is signalled on
// beaten (coalesced: one pending signal at most). When the heartbeats
// have found the members bucket gone (storeGone) for a whole MemberTTL
// while connected, and a lookup of the bucket then answers "not found"
// (bus.StoreGone), the last error is sent once on gone. done closes when
// it has stopped, after ctx ends.
func beat(ctx context.Context, m *membership, own *ownership, log *slog.Logger) (beaten <-chan struct{}, gone <-chan error, done <-chan struct{}) {
	b, g, d := make(chan struct{}, 1), make(chan error, 1), make(chan struct{})
	conn := m.js.Conn()
	// goneSince is when the current run of storeGone failures began (or
	// when a lookup last found the bucket): a leader election answers the
	// same for a few seconds, so only a whole MemberTTL of them counts,
	// and then only if a lookup confirms it (confirmGone).
	var goneSince time.Time
	reconnected := conn.StatusChanged(nats.CONNECTED)
	// Owned by Run: cancelled and awaited before Run leaves the group.
	go func() {
		defer close(d)
		defer conn.RemoveStatusListener(reconnected)
		ticker := time.NewTicker(m.cfg.heartbeat())
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-reconnected:
				ticker.Reset(m.cfg.heartbeat())
			case <-own.changed:
			case <-ticker.C:
			}
			err := m.heartbeat(ctx)
			// Only while connected: during an outage the put fails with a
			// timeout instead, and the fencing handles that (issue 14).
			if err == nil || ctx.Err() != nil || !storeGone(err) || !conn.IsConnected() {
				goneSince = time.Time{}
			} else if goneSince.IsZero() {
				goneSince = time.Now()
			} else if time.Since(goneSince) >= m.cfg.MemberTTL {
				if lerr := m.confirmGone(ctx); lerr != nil {
					select {
					case g <- fmt.Errorf("%w (lookup: %w)", err, lerr):
					default: // already reported; Run is stopping us
					}
				} else {
					goneSince = time.Now() // unconfirmed: look again after another MemberTTL
				}
			}
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("heartbeat failed", slog.Any(logkey.Err, err))
				}
				continue
			}
			select {
			case b <- struct{}{}:
			default: // a reconcile is already due
			}
		}
	}()
	return b, g, d
}

// goneLookupTimeout bounds confirmGone's lookup: one small JetStream API
// request, answered at once by a server that answers at all. One that
// times out confirms nothing.
const goneLookupTimeout = 2 * time.Second

// confirmGone looks the members bucket up and returns the lookup's error
// when it says the bucket does not exist (bus.StoreGone), nil otherwise.
// A stream leader election in a NATS cluster answers heartbeats with no
// responders for as long as it lasts, which took longer than the chaos
// suite's MEMBER_TTL (5 s) after a node loss: taken for a lost store, it
// made members leave and rejoin the group, their partitions handed off
// and back, although nothing was lost. A lookup during an election (or
// while JetStream restarts) answers no responders or times out; only a
// store that is really gone answers "not found".
func (m *membership) confirmGone(ctx context.Context) error {
	return bus.BucketGone(ctx, m.js, m.members.Bucket(), goneLookupTimeout)
}

// storeGone reports whether a heartbeat's put failed as it does when the
// members bucket's stream does not exist: JetStream answers a publish to a
// subject no stream captures with no responders (bus.StoreMaybeGone, which
// a restart or an election answers for a moment too: beat counts only a
// whole MemberTTL of them while connected, confirmed by a lookup), or a
// lookup says not found (bus.StoreGone).
func storeGone(err error) bool {
	return bus.StoreGone(err) || bus.StoreMaybeGone(err)
}

// start joins the group, writes the first heartbeat and reconciles the
// membership once, returning the mapping in force. It retries what a
// JetStream cluster answers for a moment after a stream or bucket was
// created or a leader was lost (no responders, timeouts) until ctx ends;
// anything else (another group-wide config, a replica count the cluster
// cannot hold) is returned at once. A join given up (ctx ended, or such an
// error) after its heartbeat was written deletes the heartbeat again.
func start(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*membership, []pcgroups.MemberMapping, error) {
	type joined struct {
		m       *membership
		mapping []pcgroups.MemberMapping
	}
	// The heartbeat written by a try whose reconcile then failed: peers
	// may already map partitions to it, so a join given up must delete it.
	var beating *membership
	try := func() (joined, error) {
		m, err := join(ctx, js, cfg, log)
		if err != nil && cfg.Replicas > 0 {
			// A replica count this server can never keep names its
			// variable, and is not retried (not Transient).
			err = bus.ReplicasError(err, EnvReplicas, cfg.Replicas)
		}
		if err == nil {
			if err = m.heartbeat(ctx); err == nil {
				beating = m
			}
		}
		var mapping []pcgroups.MemberMapping
		if err == nil {
			mapping, err = m.reconcile(ctx, "")
		}
		if err != nil && !bus.Transient(ctx, err) {
			return joined{}, backoff.Permanent(err)
		}
		return joined{m, mapping}, err
	}
	notify := func(err error, d time.Duration) {
		log.Warn("joining the consumer group failed, retrying", slog.Any(logkey.Err, err), slog.Duration(logkey.Duration, d))
	}
	b := &backoff.ExponentialBackOff{InitialInterval: joinRetryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: joinRetryMax}
	j, err := backoff.Retry(ctx, try, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(notify))
	if err != nil {
		if beating != nil {
			(&leaver{m: beating, log: log}).leave(ctx)
		}
		return nil, nil, err
	}
	return j.m, j.mapping, nil
}

// Join retry backoff (see start): from joinRetryMin, doubling to
// joinRetryMax, +/-25 %.
const (
	joinRetryMin = 100 * time.Millisecond
	joinRetryMax = 5 * time.Second
)

// watchdog refreshes the member's lag from its consumer and reports
// whether the pcgroups instance must be restarted: we own
// partitions but our consumer has been missing for longer than a failover
// should take. pcgroups only re-creates a consumer it knows is
// gone; one deleted under it (idle timeout after a long pause, or removed
// while we were briefly thought dead) would otherwise never come back.
func watchdog(ctx context.Context, m *membership, cfg Config, mapping []pcgroups.MemberMapping, missingSince *time.Time, log *slog.Logger) bool {
	if len(partitionsOf(mapping, cfg.Member)) == 0 {
		*missingSince = time.Time{}
		cfg.Stats.lag.Store(0)
		return false
	}
	pending, ok, err := m.consumerPending(ctx)
	if ok {
		cfg.Stats.lag.Store(pending)
	}
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
	// plus a heartbeat (the failover budget) nor two of its retries. The
	// TTL is the members bucket's (cfg is the joined member's, see Run).
	if time.Since(*missingSince) < min(2*cfg.AckWait+time.Second, cfg.MemberTTL+cfg.heartbeat()) {
		return false
	}
	*missingSince = time.Time{}
	log.Warn("member consumer missing, restarting group consumer")
	return true
}

// stop stops intake, waits for the in-flight handler within the grace,
// leaves the group and returns cause.
func stop(hctx context.Context, cancelHandlers context.CancelFunc, cc pcgroups.ConsumerGroupConsumeContext, w *worker, l *leaver, cfg Config, log *slog.Logger, cause error) error {
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
	l.leave(hctx)
	if cc != nil {
		if err := waitDone(cc, leaveTimeout); err != nil {
			log.Debug("group consumer stop", slog.Any(logkey.Err, err))
		}
	}
	return cause
}

// leaver leaves the group once: stop leaves as soon as the handlers are
// done, and Run's deferred call leaves on every other return after the
// join (a failed config watch, stream lookup or first consume).
type leaver struct {
	m    *membership
	log  *slog.Logger
	once sync.Once
}

// leave deletes the member's heartbeat and hands its partitions over,
// within leaveTimeout even when ctx is already done (Run's ctx ending is
// what a graceful stop leaves on). Calls after the first do nothing.
func (l *leaver) leave(ctx context.Context) {
	l.once.Do(func() {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveTimeout)
		defer cancel()
		if err := l.m.leave(lctx); err != nil {
			l.log.Warn("leave failed, partitions move after member ttl", slog.Any(logkey.Err, err))
			return
		}
		l.log.Info("consumer group left")
	})
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

// backlogEvery is how often a member counts its partitions' backlog, in
// member TTLs: the count is a stream request whose answer grows with the
// backlog (see membership.backlog), so it runs on its own goroutine, never
// holding up a heartbeat, and far less often.
const backlogEvery = 3

// countBacklog counts the backlog of the partitions own holds every
// backlogEvery member TTLs into cfg.Stats until ctx ends; the returned
// channel closes when it has stopped.
func countBacklog(ctx context.Context, m *membership, own *ownership, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	// Owned by Run: cancelled with cgctx and awaited before Run returns.
	go func() {
		defer close(done)
		t := time.NewTicker(backlogEvery * m.cfg.MemberTTL)
		defer t.Stop()
		// First right away, so the partitions' series exist from the start.
		for {
			cctx, cancel := context.WithTimeout(ctx, m.cfg.MemberTTL)
			b, err := m.backlog(cctx, own.partitions())
			cancel()
			if err != nil {
				log.Debug("count partition backlog", slog.Any(logkey.Err, err))
			} else {
				m.cfg.Stats.setBacklog(b)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return done
}
