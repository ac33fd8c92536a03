package memapi_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/memapi"
)

func TestRun(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := taken.Close(); err != nil {
			t.Error(err)
		}
	})
	tests := []struct {
		name    string
		cfg     memapi.Config
		wantErr bool
	}{
		{"stops cleanly when ctx ends", memapi.Config{GRPCAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0", Token: "t"}, false},
		{"grpc address in use", memapi.Config{GRPCAddr: taken.Addr().String(), RESTAddr: "127.0.0.1:0", Token: "t"}, true},
		{"rest address in use", memapi.Config{GRPCAddr: "127.0.0.1:0", RESTAddr: taken.Addr().String(), Token: "t"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			err := memapi.Run(ctx, tc.cfg, slog.New(slog.DiscardHandler))
			if (err != nil) != tc.wantErr {
				t.Fatalf("Run: %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// TestServeCancelledAtOnce: a context cancelled before the listeners are
// served is a clean shutdown, whichever of serve and stop runs first.
func TestServeCancelledAtOnce(t *testing.T) {
	for i := range 50 {
		srv, gl, rl := newUnserved(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := srv.Serve(ctx, gl, rl); err != nil {
			t.Fatalf("round %d: Serve with a cancelled context: %v", i, err)
		}
	}
}
