// Package app declares the informer's parts on the service runtime: the
// stream and buckets it publishes to, the API client, the leader lease, and
// one controller per resource that runs while the lease is held.
package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/service"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/condition"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
	"github.com/ambient-code/control-plane/services/informer/internal/controller"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
	"github.com/ambient-code/control-plane/services/informer/internal/lease"
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
	"github.com/ambient-code/control-plane/services/informer/internal/watch"
)

// ServiceName names the informer in telemetry.
const ServiceName = "informer"

// Set-up retry while JetStream is not reachable yet (a NATS cluster still
// electing): from setupRetryMin doubling to setupRetryMax, +/-25 %.
const (
	setupRetryMin = 100 * time.Millisecond
	setupRetryMax = 5 * time.Second
	setupTimeout  = 10 * time.Second
)

// Run runs the informer until ctx ends (nil) or something fatal happens.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) error {
	o, err := newOptions(opts)
	if err != nil {
		return err
	}
	log = log.With(slog.String(logkey.Instance, cfg.InstanceID))
	sopts := service.Options{Name: ServiceName, Version: o.version, Config: cfg.Config, Logger: log, Listening: o.listening}
	return service.Run(ctx, sopts, func(ctx context.Context, rt *service.Runtime) error {
		setup, err := ensureNATS(ctx, rt.JetStream(), cfg, log)
		if err != nil {
			return err
		}
		objects, leases := setup.objects, setup.leases
		if setup.leaseTTL > cfg.LeaseTTL {
			// Never lowered (bus.EnsureLeasesBucket); every replica must
			// renew, trust and wait by the TTL the server keeps leases for.
			log.Warn("LEASE_TTL is below the leases bucket's TTL: leading by the bucket's (to lower it, stop every informer sharing the bucket, delete it, start them with the new value)",
				slog.Duration("lease_ttl", cfg.LeaseTTL), slog.Duration("bucket_ttl", setup.leaseTTL), slog.String("bucket", bus.BucketLeases))
			cfg.LeaseTTL = setup.leaseTTL
		}
		acfg := cfg.API.Config()
		acfg.Logger = log
		api, err := apiclient.New(acfg)
		if err != nil {
			return fmt.Errorf("api client: %w", err)
		}
		rt.Cleanup(api.Close)
		// One item of one page: cheap, and proves address, TLS and token.
		apiAnswers := func(ctx context.Context) error {
			_, err := api.Projects().ListProjects(ctx, &ambientv1.ListProjectsRequest{Page: 1, Size: 1})
			return err
		}
		// The stream and buckets made ready above, made again when an
		// operation finds one gone.
		rep := &repairer{js: rt.JetStream(), cfg: cfg, log: log}
		// A replica that stepped down because its watches stayed unsynced
		// campaigns again only once the API answers it.
		elector, err := lease.New(leases, lease.Config{Key: cfg.LeaseKey, Holder: cfg.InstanceID, TTL: cfg.LeaseTTL, Conn: rt.NATS(), Now: o.leaseClock,
			Eligible: apiAnswers, Repair: rep.repair}, log)
		if err != nil {
			return fmt.Errorf("lease: %w", err)
		}
		m, err := controller.NewMetrics(rt.Telemetry().Meter)
		if err != nil {
			return err
		}
		pcfg := publishConfig(cfg, m, o)
		pcfg.Fence = elector.Confirmed
		// Events expect the object's last one as their subject's last, and
		// object KV writes the key's last revision; a refusal is settled
		// only after a lease write proved this replica still leads
		// (publish.Publisher.conflict, kvConflict).
		pcfg.Reconfirm = elector.Reconfirm
		pub, err := publish.New(rt.JetStream(), objects, rt.Telemetry().Tracer, pcfg)
		if err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
		ccfg := controller.Config{Workers: cfg.Workers, AuditInterval: cfg.AuditInterval, StreamCheck: o.streamCheck, Watch: watch.Config{
			BackoffInitial: cfg.BackoffInitial, BackoffMax: cfg.BackoffMax, Resync: cfg.ResyncPeriod, HealthyAfter: o.healthyAfter}}
		sessions := controller.New(watch.Sessions(api), pub, objects, ccfg, m, log, controller.WithReporter(sessionReporter(api, rt.NATS())))
		rs := []controller.Leader{
			sessions,
			controller.New(watch.Projects(api), pub, objects, ccfg, m, log),
			controller.New(watch.ProjectSettings(api), pub, objects, ccfg, m, log),
		}
		if err := m.ObserveState(rs, elector.IsLeader, elector.Terms); err != nil {
			return err
		}
		if err := m.ObserveSessions(sessions, time.Now); err != nil {
			return err
		}
		rt.Check("api", apiAnswers)
		rt.Check("lease", func(context.Context) error { return leaderSynced(elector.IsLeader(), rs) })
		rt.Check("jetstream", func(context.Context) error { return rep.check() })
		rt.Go("leader", func(ctx context.Context) error {
			return elector.Run(ctx, func(lctx context.Context) error { return lead(lctx, rs, cfg.UnsyncedStepDown, rep, log) })
		})
		log.Info("informer starting", slog.String("stream", cfg.Stream), slog.String("subject_prefix", cfg.SubjectPrefix),
			slog.String("objects_bucket", cfg.ObjectsBucket), slog.String("lease_key", cfg.LeaseKey), slog.Bool("shadow", cfg.Shadow()))
		return nil
	})
}

// lead runs one term: every resource, until the lease is lost or a
// resource's watch stayed unsynced for unsynced (LEADER_UNSYNCED_TIMEOUT),
// when the elector steps down (lease.ErrStepDown). Such a leader publishes
// nothing new and renews its lease as long as NATS answers: without the
// step-down a leader cut off from the API alone kept the lease for ever
// while a standby that reaches the API waited.
//
// When the events stream or the objects bucket turns out gone
// (controller.ErrGone), lead recreates them as at start-up and starts the
// term again, still holding the lease: the new term loads the (now empty)
// cache and relists, so consumers get the state again in the new stream.
func lead(ctx context.Context, rs []controller.Leader, unsynced time.Duration, rep *repairer, log *slog.Logger) error {
	for {
		err := controller.LeadAll(ctx, rs, unsynced)
		switch {
		case errors.Is(err, controller.ErrUnsynced):
			return fmt.Errorf("%w: %w", lease.ErrStepDown, err)
		case errors.Is(err, controller.ErrGone) && ctx.Err() == nil:
			log.Warn("events stream or objects bucket gone: recreating them and starting the term again", slog.Any(logkey.Err, err))
			if rep.repair(ctx) != nil {
				return nil // the term or the informer ended
			}
		default:
			return err
		}
	}
}

// publishConfig says where events go. The post-ack KV write outlives a
// lost lease by at most TTL/3: the next leader cannot start before the
// lease expires, TTL after the last renewal.
func publishConfig(cfg config.Config, m *controller.Metrics, o options) publish.Config {
	pcfg := publish.Config{Prefix: cfg.SubjectPrefix, Stream: cfg.Stream, Observe: m.ObservePublish, ObserveKVConflict: m.ObserveKVConflict, StoreTimeout: cfg.LeaseTTL / 3, MarkerTTL: cfg.MarkerTTL, TailMargin: o.tailMargin}
	if hook := o.afterPublish; hook != nil {
		pcfg.AfterPublish = func(ctx context.Context, ev *eventsv1.ResourceEvent) error {
			if err := hook(ctx, ev); err != nil {
				return controller.FatalError{Err: err}
			}
			return nil
		}
	}
	return pcfg
}

// sessionReporter writes the reason on a session whose state is over the
// event payload limit (package condition).
func sessionReporter(api *apiclient.Client, nc *nats.Conn) controller.Reporter[*ambientv1.Session] {
	w := condition.New(api)
	msg := func() string { return condition.Message(nc.MaxPayload()) }
	reason := []byte(condition.ReasonTooLarge)
	return controller.Reporter[*ambientv1.Session]{
		Needed: func(c diff.Change[*ambientv1.Session], tooLarge bool) bool {
			if !tooLarge && !bytes.Contains(c.New.Raw, reason) {
				return false // the common case: nothing to write, nothing to decode
			}
			s, err := c.Object()
			return err == nil && condition.Needed(s, tooLarge, msg())
		},
		Write: func(ctx context.Context, id string, tooLarge bool) error {
			ctx, cancel := context.WithTimeout(ctx, setupTimeout)
			defer cancel()
			return w.Sync(ctx, id, tooLarge, msg())
		},
		Terminal: func(err error) bool { return errors.Is(err, condition.ErrTerminal) },
	}
}

// leaderSynced is the "lease" readiness check: a standby is ready as it is;
// the leader once every resource's watch is open and synced.
func leaderSynced(leading bool, rs []controller.Leader) error {
	if !leading {
		return nil
	}
	for _, r := range rs {
		if !r.Synced() {
			return fmt.Errorf("leader: %s watch not synced", events.ResourceToken(r.Kind()))
		}
	}
	return nil
}

// repairer recreates the stream and buckets (tryEnsureNATS, the start-up
// set-up with the same settings) once an operation found one gone, and
// tells readiness while it could not. Nothing else recreates them: a NATS
// server restarted without its JetStream store, or a bucket somebody
// deleted, left the informer silent for ever with /readyz 200.
type repairer struct {
	js  jetstream.JetStream
	cfg config.Config
	log *slog.Logger

	mu sync.Mutex // one repair at a time (the lease's and the term's)
	// failing is the reason readiness fails: set while a repair runs
	// or keeps failing, cleared once it succeeded.
	failing atomic.Pointer[error]
}

// repair runs the set-up, retrying with backoff, until it succeeds (nil)
// or ctx ends (its error). A STREAM_REPLICAS the servers cannot place is
// retried too: it was placed at start, and may be again once the cluster
// is back.
func (p *repairer) repair(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	gone := errors.New("events stream or a bucket gone, recreating")
	p.failing.Store(&gone)
	b := &backoff.ExponentialBackOff{InitialInterval: setupRetryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: setupRetryMax}
	setup, err := backoff.Retry(ctx, func() (natsSetup, error) {
		return tryEnsureNATS(ctx, p.js, p.cfg, true)
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, _ time.Duration) {
		err = fmt.Errorf("recreate the events stream and buckets: %w", err)
		p.failing.Store(&err)
		p.log.Warn("jetstream set-up failed, retrying", slog.Any(logkey.Err, err))
	}))
	if err != nil {
		return fmt.Errorf("jetstream set-up: %w", err)
	}
	p.failing.Store(nil)
	if setup.leaseTTL > p.cfg.LeaseTTL {
		// Somebody else recreated the leases bucket first, with a higher
		// TTL; this replica's elector keeps its own until it restarts.
		p.log.Warn("the recreated leases bucket's TTL is above LEASE_TTL", slog.Duration("lease_ttl", p.cfg.LeaseTTL), slog.Duration("bucket_ttl", setup.leaseTTL))
	}
	p.log.Warn("events stream and buckets recreated", slog.String("stream", p.cfg.Stream), slog.String("objects_bucket", p.cfg.ObjectsBucket))
	return nil
}

// check is the "jetstream" readiness check: failing from the moment a
// stream or bucket was found gone until it is recreated.
func (p *repairer) check() error {
	if err := p.failing.Load(); err != nil {
		return *err
	}
	return nil
}

// natsSetup is what ensureNATS made ready: the buckets, and the TTL the
// leases bucket keeps leases for (LEASE_TTL, or the bucket's when higher).
type natsSetup struct {
	objects, leases jetstream.KeyValue
	leaseTTL        time.Duration
}

// ensureNATS creates or updates the stream and buckets, retrying while
// JetStream is not reachable yet. A STREAM_REPLICAS the server can never
// keep stops it at once (see replicasError).
func ensureNATS(ctx context.Context, js jetstream.JetStream, cfg config.Config, log *slog.Logger) (natsSetup, error) {
	b := &backoff.ExponentialBackOff{InitialInterval: setupRetryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: setupRetryMax}
	setup, err := backoff.Retry(ctx, func() (natsSetup, error) {
		setup, err := tryEnsureNATS(ctx, js, cfg, false)
		return setup, replicasError(err, cfg.StreamReplicas)
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, _ time.Duration) {
		log.Warn("jetstream setup failed, retrying", slog.Any(logkey.Err, err))
	}))
	if err != nil {
		return natsSetup{}, fmt.Errorf("jetstream setup: %w", err)
	}
	return setup, nil
}

// replicasError makes the servers' refusal of the replica count (more than
// one on a non-clustered server, more than a cluster's servers) a
// permanent configuration error naming STREAM_REPLICAS: retrying
// could never succeed, and "jetstream setup failed, retrying" for ever
// hid the setting to change. The service then exits 1, as for any other
// bad variable. Other errors are returned as they are.
func replicasError(err error, replicas int) error {
	if !bus.ReplicasUnplaceable(err) {
		return err
	}
	return backoff.Permanent(bus.ReplicasError(err, config.EnvStreamReplicas, replicas))
}

func tryEnsureNATS(ctx context.Context, js jetstream.JetStream, cfg config.Config, missingOnly bool) (natsSetup, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	// missingOnly (a repair): what still exists is left as it is. Updating
	// a stream or bucket in use races the consumers the running terms
	// create on it inside nats-server 2.15's file store (UpdateConfig
	// beside ConsumerStore, reported by -race), and its settings are
	// already the ones the start-up set.
	if !missingOnly || !exists(js.Stream(ctx, cfg.Stream)) {
		if _, err := bus.EnsureStream(ctx, js, bus.EventsStream(cfg.Stream, cfg.SubjectPrefix, cfg.StreamReplicas, cfg.StreamMaxAge)); err != nil {
			return natsSetup{}, err
		}
	}
	var out natsSetup
	var err error
	if !missingOnly || !exists(js.KeyValue(ctx, cfg.ObjectsBucket)) {
		oc := bus.ObjectsBucket(cfg.StreamReplicas)
		oc.Bucket = cfg.ObjectsBucket
		// Lets deletes purge the key with a marker that expires (MarkerTTL), so
		// the bucket does not keep one marker per object ever deleted.
		oc.LimitMarkerTTL = cfg.MarkerTTL
		if out.objects, err = bus.EnsureKV(ctx, js, oc); err != nil {
			return natsSetup{}, err
		}
	}
	if !missingOnly || !exists(js.KeyValue(ctx, bus.BucketLeases)) {
		// Created with LEASE_TTL, or raised to it; never lowered.
		if out.leases, out.leaseTTL, err = bus.EnsureLeasesBucket(ctx, js, cfg.StreamReplicas, cfg.LeaseTTL); err != nil {
			return natsSetup{}, err
		}
	}
	return out, nil
}

// exists reports whether a lookup found what it looked for. Any error
// counts as missing: the set-up then tries to make it and reports why it
// could not.
func exists[T any](_ T, err error) bool { return err == nil }
