package apiclient_test

import (
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ambient-code/control-plane/libs/apiclient"
)

// TestCheckNotServing: a server whose health service answers NOT_SERVING
// fails Check with ErrNotServing; SERVING passes.
func TestCheckNotServing(t *testing.T) {
	t.Parallel()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1) // one result
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c, err := apiclient.New(apiclient.Config{Addr: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := c.Check(t.Context()); !errors.Is(err, apiclient.ErrNotServing) {
		t.Fatalf("Check of a NOT_SERVING server: %v, want ErrNotServing", err)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if err := c.Check(t.Context()); err != nil {
		t.Fatalf("Check of a SERVING server: %v", err)
	}
}
