package apiclient_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// writeCounter counts the bytes the client writes on the connections it
// dials.
type writeCounter struct{ n atomic.Int64 }

func (w *writeCounter) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: conn, n: &w.n}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// TestIdleConnectionSendsNoPings: the real server keeps grpc-go's default
// keepalive policy, under which every ping on a connection without an open
// call, within 2 h of the last, is a strike, and the third ends the
// connection with GOAWAY "too_many_pings". A client that only makes unary
// calls (kube-reconciler, runner-manager) must stay quiet between them.
func TestIdleConnectionSendsNoPings(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	var wire writeCounter
	c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) {
		// grpc-go's floor: a client that pings idle connections sends its
		// first ping 10 s after the connection's last frame.
		cfg.Keepalive = 10 * time.Second
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(wire.dial))
	})
	if _, err := c.ListSessions(t.Context()); err != nil {
		t.Fatal(err)
	}
	// What follows is the absence of traffic, which no condition can
	// signal: watch the connection for longer than one ping interval. The
	// first second is left out for the frames that close the call (window
	// updates, a ping ack).
	settle := time.NewTimer(time.Second)
	<-settle.C
	before := wire.n.Load()
	idle := time.NewTimer(12 * time.Second)
	<-idle.C
	if got := wire.n.Load() - before; got != 0 {
		t.Fatalf("the idle connection wrote %d bytes in 12 s (keepalive pings without a call: the real server counts each as a strike)", got)
	}
	// The connection is still the one dialled and works.
	if _, err := c.ListSessions(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestDefaultKeepaliveWithinRealPolicy: on an open watch stream that sees
// no events the client pings every DefaultKeepalive, and nothing the
// server sends clears its strikes, so the default must not be shorter than
// the interval the real server enforces.
func TestDefaultKeepaliveWithinRealPolicy(t *testing.T) {
	if apiclient.DefaultKeepalive <= memapi.RealKeepaliveMinTime {
		t.Fatalf("DefaultKeepalive %v is not above the real server's minimum ping interval %v", apiclient.DefaultKeepalive, memapi.RealKeepaliveMinTime)
	}
}
