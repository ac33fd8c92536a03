package memapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/ambient-code/control-plane/libs/apitrace"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// shutdownGrace bounds a graceful shutdown before connections are cut. It
// is longer than the 5 s net/http's Shutdown waits for a connection that
// has not sent its first request (StateNew): a client's spare connection
// made just before the stop otherwise ran the REST shutdown into its
// deadline (TestRESTUnauthorizedBodies failed so once in CI, at 5.00 s).
const shutdownGrace = 8 * time.Second

// Config is what Run needs. GRPCAddr and RESTAddr are host:port listen
// addresses (port 0 picks a free port).
type Config struct {
	GRPCAddr string
	RESTAddr string
	Token    string
	// Users, when set, turn on the multi-user mode (WithUsers).
	Users []User
	// FaultsAddr, when set, serves FaultsHandler there (fault injection for
	// the chaos suite). Empty, the default, serves no fault injection.
	FaultsAddr string
}

// Run creates a Server with cfg.Token (and cfg.Users), listens on cfg's
// addresses and serves until ctx is done; see Serve. It is what the memapi
// binary and the dev stack run.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := New(WithToken(cfg.Token), WithUsers(cfg.Users), WithLogger(log))
	if err != nil {
		return err
	}
	if cfg.FaultsAddr == "" {
		return s.ListenAndServe(ctx, cfg.GRPCAddr, cfg.RESTAddr)
	}
	var lc net.ListenConfig
	fl, err := lc.Listen(ctx, "tcp", cfg.FaultsAddr)
	if err != nil {
		return fmt.Errorf("listen faults %s: %w", cfg.FaultsAddr, err)
	}
	log.Warn("fault injection served", slog.String("faults_addr", fl.Addr().String()))
	srv := &http.Server{Handler: s.FaultsHandler(), ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.ListenAndServe(gctx, cfg.GRPCAddr, cfg.RESTAddr) })
	g.Go(func() error {
		if err := srv.Serve(fl); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve faults: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown faults: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// ListenAndServe listens on the two addresses and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, grpcAddr, restAddr string) error {
	var lc net.ListenConfig
	gl, err := lc.Listen(ctx, "tcp", grpcAddr)
	if err != nil {
		return fmt.Errorf("listen grpc %s: %w", grpcAddr, err)
	}
	rl, err := lc.Listen(ctx, "tcp", restAddr)
	if err != nil {
		// The gRPC listener is unused; its close error adds nothing.
		_ = gl.Close()
		return fmt.Errorf("listen rest %s: %w", restAddr, err)
	}
	return s.Serve(ctx, gl, rl)
}

// RealKeepaliveMinTime is the closest interval between client pings the
// real server tolerates: grpc-go's default enforcement policy (the server
// configures none), which also refuses pings on connections without an
// open call.
const RealKeepaliveMinTime = 5 * time.Minute

// NewGRPCServer returns a grpc.Server with the three ambient services, the
// tracing stats handler (package apitrace), the token check and fault
// injection interceptors, the real server's keepalive enforcement (grpc-go's
// default, RealKeepaliveMinTime), the standard health service (SERVING) and
// reflection. extra options (e.g. grpc.Creds for TLS) are appended. The
// caller serves and stops it; prefer Serve, which also ends watch streams
// cleanly on shutdown.
func (s *Server) NewGRPCServer(extra ...grpc.ServerOption) *grpc.Server {
	gs, _ := s.newGRPCServer(extra...)
	return gs
}

func (s *Server) newGRPCServer(extra ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	opts := append([]grpc.ServerOption{
		// A SERVER span per unary call, joined to the caller's traceparent.
		grpc.StatsHandler(apitrace.ServerHandler(apitrace.Options{TracerProvider: s.opts.tp})),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		// The real server's keepalive policy: grpc-go's default (pings at
		// most every 5 min, and none without an open call), which it never
		// changes. A client that pings more often is sent away with GOAWAY
		// "too_many_pings" here as there.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: RealKeepaliveMinTime}),
	}, extra...)
	gs := grpc.NewServer(opts...)
	ambientv1.RegisterSessionServiceServer(gs, s.Sessions())
	ambientv1.RegisterProjectServiceServer(gs, s.Projects())
	ambientv1.RegisterProjectSettingsServiceServer(gs, s.ProjectSettings())
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs, hs
}

// Serve serves gRPC on grpcLis and REST on restLis until ctx is done or a
// listener fails, then shuts down: watch streams end with a clean EOF (as the
// real server's do), in-flight calls get up to 5 s. It closes both
// listeners. A Server serves once; a second call returns ErrServing.
func (s *Server) Serve(ctx context.Context, grpcLis, restLis net.Listener) error {
	if err := s.markServed(grpcLis, restLis); err != nil {
		// Not serving them: closing is all that is left; errors add nothing.
		for _, l := range []net.Listener{grpcLis, restLis} {
			if l != nil {
				_ = l.Close()
			}
		}
		return err
	}
	gs, hs := s.newGRPCServer()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	log := s.opts.log
	log.Info("memapi serving", slog.String("grpc_addr", grpcLis.Addr().String()), slog.String("rest_addr", restLis.Addr().String()))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// ErrServerStopped: the stop below won the race with Serve (ctx was
		// cancelled at once); that is a clean shutdown, not a failure.
		if err := gs.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := srv.Serve(restLis); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve rest: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.stop()
		hs.Shutdown()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		var errs []error
		if err := srv.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown rest: %w", err))
		}
		stopped := make(chan struct{})
		// Owned here; exits when GracefulStop returns, which Stop forces.
		go func() {
			gs.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-sctx.Done():
			gs.Stop()
			<-stopped
		}
		return errors.Join(errs...)
	})
	err := g.Wait()
	log.Info("memapi stopped")
	return err
}
