package app_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// lateWatchAPI serves the in-memory API over gRPC with the server side of
// the first session watch held back until release is closed: the server
// registers that watch late, as a busy real server can. It returns the
// gRPC address.
func lateWatchAPI(t *testing.T, api *memapi.Server, release <-chan struct{}) string {
	t.Helper()
	var first atomic.Bool
	hold := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod == ambientv1.SessionService_WatchSessions_FullMethodName && first.CompareAndSwap(false, true) {
			select {
			case <-release:
			case <-ss.Context().Done():
				return ss.Context().Err()
			}
		}
		return handler(srv, ss)
	}
	gs := api.NewGRPCServer(grpc.ChainStreamInterceptor(hold))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1) // Serve's result
	// Owned by the test: Stop in Cleanup ends Serve, which is awaited.
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// TestChangeBeforeWatchRegistered is the last item of issue 14 point 6: the
// watch stream sends nothing until its first event, so the informer cannot
// know when the server registered it; a change made after the list read
// its page and before that registration was on neither, and was missed
// until the next resync (10 min). The cycle now lists once more after the
// registration is proven (first event) or surely done (ConfirmAfter).
func TestChangeBeforeWatchRegistered(t *testing.T) {
	t.Parallel()
	api := testenv.API(t)
	release := make(chan struct{})
	addr := lateWatchAPI(t, api, release)
	h := &harness{t: t, api: api, nats: testenv.NATS(t)}
	_, h.js = testenv.JetStream(t, h.nats)
	h.seed(10, 1)

	var once sync.Once
	hookErr := make(chan error, 1) // the hook's outcome, once
	api.SetListHook(func(method string, page int32) {
		if method != ambientv1.SessionService_ListSessions_FullMethodName || page != 1 {
			return
		}
		once.Do(func() {
			// The page is read, the watch not registered yet: this change
			// is on neither.
			_, err := api.Sessions().CreateSession(context.Background(), &ambientv1.CreateSessionRequest{Name: "in-the-gap"})
			hookErr <- err
			close(release)
		})
	})
	h.start("a", map[string]string{apiclient.EnvGRPCAddr: addr})
	select {
	case err := <-hookErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the informer never listed sessions")
	}
	evs := h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs, map[string]int{"sessions/ADDED": 11, "projects/ADDED": 1, "project_settings/ADDED": 1})
}
