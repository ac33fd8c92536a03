package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// Graceful says how [Serve] shuts a server down once its ctx ends.
type Graceful struct {
	// Grace is how long in-flight requests keep their contexts to finish on
	// their own (a proxied stream ending its run); 0 cancels them as
	// shutdown starts, which suits short routes.
	Grace time.Duration
	// Drain bounds the wait for handlers to return once their contexts are
	// cancelled; after it the remaining connections are closed and Serve
	// reports the shutdown as failed. 0 means [DefaultShutdownTimeout].
	Drain time.Duration
	// Delay keeps the server accepting new connections and requests this
	// long after ctx ends, before the shutdown (and Grace) starts: a pod
	// marked terminating still gets new connections for a moment, until
	// kube-proxy and the load balancers in front have seen it leave the
	// endpoints, and a listener closed at once refuses them. 0: none.
	Delay time.Duration
}

// Serve serves srv on ln, which it closes, until ctx ends (and g.Delay
// after), then shuts down in two steps: the listener closes and in-flight
// requests get
// g.Grace to finish; then their contexts (srv.BaseContext, which Serve sets)
// are cancelled so long-lived handlers return, and after g.Drain the
// server is closed. name labels logs and errors ("health", "proxy").
//
// It returns nil after a clean shutdown, and an error when the server
// failed or handlers outlived g.Drain.
func Serve(ctx context.Context, name string, srv *http.Server, ln net.Listener, g Graceful, log *slog.Logger) error {
	if g.Drain <= 0 {
		g.Drain = DefaultShutdownTimeout
	}
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	srv.BaseContext = func(net.Listener) context.Context { return base }

	addr := ln.Addr().String()
	log = log.With(slog.String(logkey.Name, name), slog.String(logkey.Addr, addr))
	serveErr := make(chan error, 1) // one send; Serve never blocks on it
	// Owned by Serve: ends when Shutdown or Close closes ln, awaited below.
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("http server listening")

	select {
	case err := <-serveErr:
		return fmt.Errorf("%s server %s: %w", name, addr, err)
	case <-ctx.Done():
	}
	if g.Delay > 0 {
		log.Info("http server stopping after a delay", slog.Duration(logkey.Duration, g.Delay))
		t := time.NewTimer(g.Delay)
		select {
		case err := <-serveErr:
			t.Stop()
			return fmt.Errorf("%s server %s: %w", name, addr, err)
		case <-t.C:
		}
	}

	err := shutdown(ctx, srv, g.Grace)
	if err != nil {
		// Grace is over with requests still open: end them through their ctx.
		log.Info("shutdown grace over, cancelling open requests")
		cancelBase()
		if err = shutdown(ctx, srv, g.Drain); err != nil {
			err = errors.Join(fmt.Errorf("%s server %s shutdown: %w", name, addr, err), srv.Close())
		}
	}
	if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("%s server %s: %w", name, addr, e))
	}
	if err == nil {
		log.Info("http server stopped")
	}
	return err
}

// shutdown runs srv.Shutdown bounded by d (already over when d is 0: the
// listener closes and idle connections go, and Shutdown reports whether
// any request is still open).
func shutdown(ctx context.Context, srv *http.Server, d time.Duration) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	return srv.Shutdown(sctx)
}
