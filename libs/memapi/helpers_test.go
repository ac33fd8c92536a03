package memapi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
)

const testToken = "s3cret"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start serves a fresh Server (token testToken unless opts override it) on
// free loopback ports until the test ends.
func start(t testing.TB, opts ...memapi.Option) *memapi.Server {
	t.Helper()
	srv, gl, rl := newUnserved(t, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1) // one result from Serve
	go func() { done <- srv.Serve(ctx, gl, rl) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return")
		}
	})
	select {
	case <-srv.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("server not ready")
	}
	return srv
}

// newUnserved returns a Server (token testToken unless opts override it)
// and free loopback listeners for its gRPC and REST sides, not yet served.
func newUnserved(t testing.TB, opts ...memapi.Option) (*memapi.Server, net.Listener, net.Listener) {
	t.Helper()
	srv, err := memapi.New(append([]memapi.Option{memapi.WithToken(testToken)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return srv, gl, rl
}

// client returns a client of srv with token tok.
func client(t testing.TB, srv *memapi.Server, tok string, dial ...grpc.DialOption) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(apiclient.Config{Addr: srv.GRPCAddr(), Token: tok, DialOptions: dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// eventually polls fn until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// waitWatch waits until srv has exactly one watch stream registered: a
// stream's events are queued only from then on.
func waitWatch(t testing.TB, srv *memapi.Server) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		if srv.Watchers() != 1 {
			return errors.New("watch not registered")
		}
		return nil
	})
}

// watchProjects opens a project watch on c and waits until srv has it.
func watchProjects(t testing.TB, srv *memapi.Server, c *apiclient.Client) grpc.ServerStreamingClient[ambientv1.ProjectWatchEvent] {
	t.Helper()
	w, err := c.WatchProjects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	return w
}

// recv receives one message with a timeout.
func recv[E any](t testing.TB, st grpc.ServerStreamingClient[E], timeout time.Duration) (*E, error) {
	t.Helper()
	type res struct {
		ev  *E
		err error
	}
	ch := make(chan res, 1) // one result; the goroutine never blocks
	go func() {
		ev, err := st.Recv()
		ch <- res{ev, err}
	}()
	select {
	case r := <-ch:
		return r.ev, r.err
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
		return nil, errors.New("unreachable")
	}
}

// seedSessions creates n sessions in-process named s-0000...
func seedSessions(t testing.TB, srv *memapi.Server, n int) []*ambientv1.Session {
	t.Helper()
	out := make([]*ambientv1.Session, 0, n)
	for i := range n {
		s, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("s-%05d", i)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}
