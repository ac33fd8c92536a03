// Package app declares runner-manager's parts on the service runtime
// (libs/service): the runner registry and liveness buckets, the API
// client, the process manager, the reconciler with the heartbeat that
// outlives it, and the consumer-group member that feeds it session events.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/config"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/reconcile"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// ServiceName names runner-manager in telemetry.
const ServiceName = "runner-manager"

// healthFirstDelay is the first health probe's delay after a spawn: a fast
// runner is seen Running quickly (the probes then back off to the interval).
const healthFirstDelay = 20 * time.Millisecond

// Option adjusts Run (build stamping).
type Option func(*options)

type options struct{ version string }

// WithVersion sets the build version reported in telemetry.
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// Run runs runner-manager until ctx ends, then shuts down in order: stop
// taking events, stop every runner (SIGTERM, SIGKILL after the grace) and
// report them, leave the member set, drain NATS, flush telemetry.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) error {
	o := options{version: "dev"}
	for _, opt := range opts {
		opt(&o)
	}
	// The runtime gets the logger without the member: its consumer group
	// (libs/group) names the member itself, and a second "member" key on
	// the same line is one a log pipeline may drop or pick at random.
	// Everything of runner-manager's own names it.
	sopts := service.Options{Name: ServiceName, Version: o.version, Config: cfg.Config, Logger: log}
	log = log.With(slog.String(logkey.Member, cfg.Group.Member))
	if err := checkRunnerHost(cfg); err != nil {
		return err
	}
	return service.Run(ctx, sopts, func(ctx context.Context, rt *service.Runtime) error {
		// Before any runner exists: runners share runner-manager's user,
		// and must not read its environment or memory (runner.NonDumpable).
		if err := runner.NonDumpable(); err != nil {
			return err
		}
		rc := bus.RunnersBucket(cfg.BucketReplicas)
		// Lets a release purge the record with a marker that expires, so the
		// bucket does not keep one marker per session ever run.
		rc.LimitMarkerTTL = cfg.MarkerTTL
		runners, err := bus.EnsureKV(ctx, rt.JetStream(), rc)
		if err != nil {
			return bus.ReplicasError(err, config.EnvBucketReplica, cfg.BucketReplicas)
		}
		membersKV, memberTTL, err := claim.EnsureBucket(ctx, rt.JetStream(), cfg.BucketReplicas, cfg.Group.MemberTTL)
		if err != nil {
			return bus.ReplicasError(err, config.EnvBucketReplica, cfg.BucketReplicas)
		}
		if memberTTL != cfg.Group.MemberTTL {
			// The bucket's TTL is never lowered (live peers beat by it):
			// beating and judging peers by this replica's own would make
			// them look dead between their beats.
			log.Warn("MEMBER_TTL below the members bucket's TTL: heartbeats and liveness use the bucket's",
				slog.Duration("member_ttl", cfg.Group.MemberTTL), slog.Duration("bucket_ttl", memberTTL))
		}
		members, err := claim.NewMembers(membersKV, rt.NATS(), cfg.Group.Member, memberTTL, log)
		if err != nil {
			return err
		}
		// Made here only: a NATS server restarted without its JetStream
		// store loses them, and this keeper makes them again (bucketKeeper).
		keeper := newBucketKeeper(rt.JetStream(), rt.NATS(), rt.Reconnects(), log, rc, claim.BucketConfig(cfg.BucketReplicas, memberTTL))
		rt.Check("buckets", keeper.Err)
		rt.Go("buckets", keeper.Run)
		acfg := cfg.API.Config()
		acfg.Logger = log // hears of a token file that turned unusable
		api, err := apiclient.New(acfg)
		if err != nil {
			return fmt.Errorf("api client: %w", err)
		}
		rt.Cleanup(api.Close)
		// Runner-manager reaps what its runners leave behind: it is PID 1 in
		// its container, and a runner's setsid'd children escape its
		// process group (runner.Reaper).
		reaper, err := runner.NewReaper(log)
		if err != nil {
			return err
		}
		rt.Go("reaper", reaper.Run)
		mgr, err := newManager(cfg, reaper, log)
		if err != nil {
			return err
		}
		// Before any runner starts here: every process carrying this
		// member's marker is a previous incarnation's, lost in a crash,
		// recorded or not (the takeover ends only recorded groups).
		if _, err := runner.EndOrphans(ctx, log, cfg.Group.Member, cfg.WorkspaceRoot, cfg.StopGrace); err != nil {
			log.Warn("end runner processes of a previous run", slog.String(logkey.Err, err.Error()))
		}
		rec, err := reconcile.New(reconcileConfig(cfg), reconcile.Deps{API: api, Runners: runners, Members: members, Reconnects: keeper, Manager: mgr,
			Meter: rt.Telemetry().Meter, Tracer: rt.Telemetry().Tracer, Log: log})
		if err != nil {
			return err
		}
		rt.Check("reconciler", func(context.Context) error {
			if !rec.Ready() {
				return errors.New("shutting down")
			}
			return nil
		})
		// The heartbeat outlives the reconciler's shutdown (claim.Members.Hold).
		rt.Go("runners", func(ctx context.Context) error { return members.Hold(ctx, rec.Run) })
		// Cut off from the API alone (NATS fine), this replica could write
		// no phase for the sessions of its partitions and would hold them
		// until the API came back: while its client cannot connect, the
		// group gives its partitions to a replica that can (group.Config.Ready).
		// Its runners stay here: their claims are not partitions.
		gcfg := cfg.Group
		gcfg.Ready = api.Reachable
		rt.Consume(gcfg, rec.Handle)
		log.Info("runner-manager starting", slog.String("workspace_root", cfg.WorkspaceRoot), slog.Int("max_sessions", cfg.MaxSessions), slog.Int("max_sessions_per_project", cfg.MaxPerProject),
			slog.String("port_range", fmt.Sprintf("%d-%d", cfg.PortLow, cfg.PortHigh)), slog.Duration("port_reuse_delay", cfg.PortReuseDelay), slog.String("selector", cfg.Selector.String()))
		return nil
	})
}

// checkRunnerHost refuses to start with a runner command whose program is
// not found or a workspace root that cannot be made or written, naming
// the variable. Both parse (config.Load) yet would fail every session at
// its spawn (ProcessSpawnFailed) while the service looked healthy.
func checkRunnerHost(cfg config.Config) error {
	var errs []error
	if len(cfg.RunnerCommand) == 0 {
		errs = append(errs, fmt.Errorf("%s: empty command", config.EnvRunnerCommand))
	} else if _, err := exec.LookPath(cfg.RunnerCommand[0]); err != nil {
		errs = append(errs, fmt.Errorf("%s: program of the runner command: %w", config.EnvRunnerCommand, err))
	}
	if err := runner.CheckRoot(cfg.WorkspaceRoot); err != nil {
		errs = append(errs, fmt.Errorf("%s %q: %w", config.EnvWorkspaceRoot, cfg.WorkspaceRoot, err))
	}
	return errors.Join(errs...)
}

// newManager is the process manager of cfg's runners.
func newManager(cfg config.Config, reaper *runner.Reaper, log *slog.Logger) (*runner.Manager, error) {
	pool, err := runner.NewPool(cfg.PortLow, cfg.PortHigh, "", runner.WithReuseDelay(cfg.PortReuseDelay))
	if err != nil {
		return nil, err
	}
	return runner.New(runner.Config{
		Command: cfg.RunnerCommand, WorkspaceRoot: cfg.WorkspaceRoot, HostEnv: cfg.HostEnv, EnvAllow: runner.NewEnvAllowList(cfg.EnvAllow),
		BossURL: cfg.BossURL, BossSpace: cfg.BossSpace, BackendURL: cfg.BackendURL, BotToken: cfg.BotToken, MaxSessions: cfg.MaxSessions, MaxPerProject: cfg.MaxPerProject, StopGrace: cfg.StopGrace, Reaper: reaper,
		Member: cfg.Group.Member, ListenHost: runner.ListenHostFor(cfg.AdvertiseHost),
	}, pool, log)
}

// reconcileConfig is the reconciler's part of cfg.
func reconcileConfig(cfg config.Config) reconcile.Config {
	return reconcile.Config{
		Member: cfg.Group.Member, AdvertiseHost: cfg.AdvertiseHost, Selector: cfg.Selector,
		Health:    runner.HealthPolicy{Host: "127.0.0.1", Interval: cfg.HealthInterval, Attempts: cfg.HealthAttempts, FirstDelay: healthFirstDelay},
		StopGrace: cfg.StopGrace, SweepInterval: cfg.SweepInterval, LostPolicy: cfg.LostPolicy, ResyncInterval: cfg.ResyncInterval,
		CheckInterval: cfg.CheckInterval,
		MarkerTTL:     cfg.MarkerTTL,
	}
}
