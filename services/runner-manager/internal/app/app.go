// Package app wires runner-manager: NATS, the API client, the process
// manager, the reconciler, the consumer group, heartbeats, and the health
// server.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/telemetry"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/config"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/reconcile"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// ServiceName is the telemetry service name.
const ServiceName = "runner-manager"

// Run runs runner-manager until ctx ends, then shuts down in order: stop
// taking events, stop every runner (SIGTERM, SIGKILL after the grace) and
// report them, leave the member set, drain NATS, flush telemetry.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, version string) (err error) {
	log = log.With(slog.String(logkey.Service, ServiceName), slog.String(logkey.Member, cfg.MemberID))
	tel, shutdownTel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: ServiceName, Version: version, OTLPEndpoint: cfg.OTLPEndpoint, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = errors.Join(err, shutdownTel(sctx))
	}()

	nc, err := bus.Connect(ctx, cfg.NATS, log)
	if err != nil {
		return err
	}
	defer func() {
		// Drain flushes what we published; Close is its fallback.
		if derr := nc.Drain(); derr != nil {
			nc.Close()
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	runnersKV, err := bus.EnsureKV(ctx, js, bus.RunnersBucket(cfg.BucketReplicas))
	if err != nil {
		return err
	}
	membersKV, err := bus.EnsureKV(ctx, js, claim.BucketConfig(cfg.BucketReplicas, cfg.MemberTTL))
	if err != nil {
		return err
	}
	api, err := apiclient.New(cfg.API.Config())
	if err != nil {
		return err
	}
	defer func() {
		if cerr := api.Close(); cerr != nil {
			log.Warn("close api client", slog.String(logkey.Err, cerr.Error()))
		}
	}()

	pool, err := runner.NewPool(cfg.PortLow, cfg.PortHigh, "")
	if err != nil {
		return err
	}
	mgr, err := runner.New(runner.Config{
		Command: cfg.RunnerCommand, WorkspaceRoot: cfg.WorkspaceRoot, HostEnv: cfg.HostEnv, EnvAllow: runner.NewEnvAllowList(cfg.EnvAllow), BossURL: cfg.BossURL,
		BossSpace: cfg.BossSpace, MaxSessions: cfg.MaxSessions, StopGrace: cfg.StopGrace,
	}, pool, log)
	if err != nil {
		return err
	}
	members, err := claim.NewMembers(membersKV, cfg.MemberID, cfg.MemberTTL, log)
	if err != nil {
		return err
	}
	rec, err := reconcile.New(reconcile.Config{
		Member: cfg.MemberID, AdvertiseHost: cfg.AdvertiseHost,
		Selector:  reconcile.Selector{Projects: cfg.Projects, Label: cfg.SessionLabel},
		Health:    runner.HealthPolicy{Host: "127.0.0.1", Interval: cfg.HealthInterval, Attempts: cfg.HealthAttempts, FirstDelay: 20 * time.Millisecond},
		StopGrace: cfg.StopGrace, SweepInterval: cfg.SweepInterval, LostPolicy: cfg.LostPolicy, ResyncInterval: cfg.ResyncInterval,
	}, reconcile.Deps{API: api, Runners: runnersKV, Members: members, Manager: mgr, Meter: tel.Meter, Tracer: tel.Tracer, Log: log})
	if err != nil {
		return err
	}

	var joined readyFlag
	hs, err := health.New(health.Options{Addr: cfg.MetricsAddr, Registry: tel.Registry, Logger: log, Checks: map[string]health.Check{
		"nats": func(context.Context) error {
			if nc.Status() != nats.CONNECTED {
				return fmt.Errorf("nats %s", nc.Status())
			}
			return nil
		},
		"consumer_group": joined.check,
		"reconciler": func(context.Context) error {
			if !rec.Ready() {
				return errors.New("shutting down")
			}
			return nil
		},
	}})
	if err != nil {
		return err
	}

	// Heartbeats outlive the reconciler: a replica must look alive until its
	// runners are stopped and reported, or a peer would take them over.
	mctx, stopMembers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMembers()
	if err := members.Beat(ctx); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Run(gctx) })
	g.Go(func() error { return members.Run(mctx) })
	g.Go(func() error {
		defer stopMembers()
		return rec.Run(gctx)
	})
	g.Go(func() error {
		if err := waitForStream(gctx, js, cfg.Stream, log); err != nil || gctx.Err() != nil {
			return err
		}
		joined.set()
		gcfg := group.Config{
			Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Group: cfg.GroupName, Member: cfg.MemberID,
			Resources: []eventsv1.Resource{eventsv1.Resource_RESOURCE_SESSIONS}, Partitions: cfg.Partitions,
			MemberPartitions: cfg.MemberPartitions, MaxDeliver: cfg.MaxDeliver, AckWait: cfg.AckWait, MemberTTL: cfg.MemberTTL,
		}
		return group.Run(gctx, js, gcfg, func(ctx context.Context, m group.Message) error {
			return rec.Handle(ctx, m.Event, m.Attempt)
		}, log)
	})
	log.Info("runner-manager started", slog.String("workspace_root", cfg.WorkspaceRoot), slog.Int("max_sessions", cfg.MaxSessions),
		slog.String("port_range", fmt.Sprintf("%d-%d", cfg.PortLow, cfg.PortHigh)), slog.Any("projects", cfg.Projects))
	err = g.Wait()
	log.Info("runner-manager stopped")
	return err
}

// waitForStream blocks until the events stream exists (the informer creates
// it) or ctx ends; runner-manager may start first in a fresh deployment.
func waitForStream(ctx context.Context, js jetstream.JetStream, name string, log *slog.Logger) error {
	for logged := false; ; {
		_, err := js.Stream(ctx, name)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) && ctx.Err() == nil {
			log.Warn("look up events stream", slog.String(logkey.Stream, name), slog.String(logkey.Err, err.Error()))
		} else if !logged && ctx.Err() == nil {
			log.Info("waiting for the events stream", slog.String(logkey.Stream, name))
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
