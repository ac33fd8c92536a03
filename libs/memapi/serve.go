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

// NewGRPCServer returns a grpc.Server with the four ambient services, the
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
	ambientv1.RegisterUserServiceServer(gs, s.Users())
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs, hs
}

// outageGrace bounds the stop of an outage (StartOutage) before the
// remaining connections are cut: the watch streams are ended already and
// memapi's calls are short, so what is left is a client's idle connection,
// which a restarting server does not wait for either.
const outageGrace = time.Second

// relistenTries bound Serve's attempts to listen again on its addresses
// after an outage, relistenPause apart: the port was its own a moment ago,
// so the first normally succeeds.
const (
	relistenTries = 50
	relistenPause = 20 * time.Millisecond
)

// Serve serves gRPC on grpcLis and REST on restLis until ctx is done or a
// listener fails, then shuts down: watch streams end with a clean EOF (as
// the real server's do), in-flight calls get up to shutdownGrace. It
// closes both listeners. A Server serves once; a second call returns
// ErrServing.
//
// An outage (StartOutage) stops Serve the same way, with outageGrace, but
// keeps the state; when it ends, Serve listens again on the same addresses
// (net.Listen on the listeners' Addr) with a new gRPC and REST server, as
// a restarted real server would. If it cannot, Serve returns the error.
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
	log := s.opts.log
	log.Info("memapi serving", slog.String("grpc_addr", grpcLis.Addr().String()), slog.String("rest_addr", restLis.Addr().String()))
	var err error
	for {
		var outage bool
		outage, err = s.serveUntil(ctx, grpcLis, restLis)
		if err != nil || !outage {
			break
		}
		s.outage.setServing(closed)
		grpcLis, restLis, err = s.listenAfterOutage(ctx, grpcLis.Addr(), restLis.Addr())
		if err != nil || grpcLis == nil {
			break // grpcLis nil: ctx ended during the outage
		}
		log.Info("memapi serving again after the outage")
	}
	s.stop() // also when ctx ended during an outage, with nothing serving
	s.outage.setServing(notServing)
	log.Info("memapi stopped")
	return err
}

// serveUntil serves on the two listeners with a new gRPC and REST server
// until ctx is done, a listener fails or an outage starts, then stops
// them, which closes the listeners and every connection. It reports
// whether an outage stopped it.
func (s *Server) serveUntil(ctx context.Context, grpcLis, restLis net.Listener) (outage bool, err error) {
	gs, hs := s.newGRPCServer()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.outage.setServing(listening)

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
		outage = waitOutage(gctx, &s.outage)
		grace := shutdownGrace
		if outage {
			grace = outageGrace // the watches were ended by StartOutage
		} else {
			s.stop()
		}
		hs.Shutdown()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		defer cancel()
		var errs []error
		if err := srv.Shutdown(sctx); err != nil {
			if !outage {
				errs = append(errs, fmt.Errorf("shutdown rest: %w", err))
			}
			// Cut what the grace did not end; nothing is left to report.
			_ = srv.Close()
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
	err = g.Wait()
	return outage && err == nil, err
}

// waitOutage waits until ctx is done (false) or an outage is on (true).
func waitOutage(ctx context.Context, o *outage) bool {
	for {
		on, _, changed := o.snapshot()
		if on {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// listenAfterOutage waits for the outage to end and listens again on the
// two addresses. It returns nil listeners when ctx ends first.
func (s *Server) listenAfterOutage(ctx context.Context, grpcAddr, restAddr net.Addr) (net.Listener, net.Listener, error) {
	if !s.outage.reopen(ctx) || ctx.Err() != nil {
		return nil, nil, nil
	}
	gl, err := listenAgain(ctx, grpcAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen grpc again after the outage: %w", err)
	}
	rl, err := listenAgain(ctx, restAddr)
	if err != nil {
		// The gRPC listener is unused; its close error adds nothing.
		_ = gl.Close()
		return nil, nil, fmt.Errorf("listen rest again after the outage: %w", err)
	}
	return gl, rl, nil
}

// listenAgain listens on addr, a listener's address that was just closed,
// trying relistenTries times.
func listenAgain(ctx context.Context, addr net.Addr) (net.Listener, error) {
	var lc net.ListenConfig
	for try := 1; ; try++ {
		l, err := lc.Listen(ctx, addr.Network(), addr.String())
		if err == nil || try == relistenTries {
			return l, err
		}
		t := time.NewTimer(relistenPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}
