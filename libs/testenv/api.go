package testenv

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
)

// APIToken is the token API servers require unless opts override it.
const APIToken = "test-token"

// API starts an in-memory ambient API (gRPC and REST on 127.0.0.1, free
// ports) that requires APIToken, and stops it in t.Cleanup (watch streams end
// with a clean EOF). opts are applied after the token, so
// memapi.WithToken("") turns auth off. Addresses: srv.GRPCAddr(),
// srv.RESTURL(); fault injection: see memapi.Server.
func API(t testing.TB, opts ...memapi.Option) *memapi.Server {
	t.Helper()
	srv, err := memapi.New(append([]memapi.Option{memapi.WithToken(APIToken)}, opts...)...)
	if err != nil {
		t.Fatalf("memapi.New: %v", err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen grpc: %v", err)
	}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen rest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1) // written once by the serving goroutine
	// Owned by the cleanup below, which cancels ctx and waits for it.
	go func() { done <- srv.Serve(ctx, gl, rl) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("memapi serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("memapi did not stop within 10s")
		}
	})
	// Wait until Serve recorded the addresses so callers can read them.
	select {
	case <-srv.Ready():
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("memapi serve: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatalf("memapi did not start within 5s")
	}
	return srv
}

// APIClient returns an apiclient for srv with its token and the default keepalive,
// closed in t.Cleanup. mod, when given, adjusts the Config first (e.g. to
// drop the token).
func APIClient(t testing.TB, srv *memapi.Server, mod ...func(*apiclient.Config)) *apiclient.Client {
	t.Helper()
	cfg := apiclient.Config{Addr: srv.GRPCAddr(), Token: srv.Token()}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := apiclient.New(cfg)
	if err != nil {
		t.Fatalf("apiclient.New: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close api client: %v", err)
		}
	})
	return c
}
