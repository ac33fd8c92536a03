package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/natsserver"
)

// EnvNATSLogging turns on embedded server logs: "debug" (logs + debug),
// "trace" (everything), any other non-empty value (notices only).
const EnvNATSLogging = "NATS_LOGGING"

// NATS starts an embedded nats-server with JetStream on a random loopback
// port and a StoreDir in t.TempDir(), waits until it is ready, and shuts it
// down (waiting for shutdown) in t.Cleanup. Use srv.Restart() to prove
// persistence and srv.ClientURL() to connect.
func NATS(t testing.TB) *natsserver.Server {
	t.Helper()
	return NATSWith(t, natsserver.Options{})
}

// NATSWith is NATS with extra options (auth, limits). StoreDir, Port and
// logging are filled in when left zero.
func NATSWith(t testing.TB, opts natsserver.Options) *natsserver.Server {
	t.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	if opts.Port == 0 {
		opts.Port = natsserver.RandomPort
	}
	switch v := os.Getenv(EnvNATSLogging); v {
	case "":
	case "debug":
		opts.Logging, opts.Debug = true, true
	case "trace":
		opts.Logging, opts.Debug, opts.Trace = true, true, true
	default:
		opts.Logging = true
	}
	srv, err := natsserver.Start(opts)
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// Conn connects to srv with unlimited, fast reconnects (so a Restart in the
// middle of a test is survived) and closes the connection in t.Cleanup.
// Extra nats options are applied last.
func Conn(t testing.TB, srv *natsserver.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return ConnURL(t, srv.ClientURL(), opts...)
}

// ConnURL is Conn to a NATS URL (a server behind a [Link]).
func ConnURL(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	base := []nats.Option{
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(25 * time.Millisecond),
		nats.ReconnectJitter(10*time.Millisecond, 10*time.Millisecond),
		nats.RetryOnFailedConnect(true),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		t.Fatalf("connect to nats %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a connection to srv (see Conn) and a JetStream handle
// on it.
func JetStream(t testing.TB, srv *natsserver.Server, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := Conn(t, srv, opts...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream on %s: %v", srv.ClientURL(), err)
	}
	return nc, js
}

// NATSCluster is a JetStream cluster of loopback servers that a test starts
// member by member (Start), so it can run with fewer servers up than the
// cluster has members: the first moments of a three-server NATS install,
// or one that lost a server. Every member's route is known from the start,
// as in a statically configured cluster.
type NATSCluster struct {
	t       testing.TB
	name    string
	routes  []string
	ports   []int
	servers []*natsserver.Server // by member index; nil until started
}

// NewNATSCluster reserves route ports for a cluster of size servers.
func NewNATSCluster(t testing.TB, size int) *NATSCluster {
	t.Helper()
	low, _ := FreePortRange(t, size)
	c := &NATSCluster{t: t, name: "test-cluster", servers: make([]*natsserver.Server, size)}
	for i := range size {
		c.ports = append(c.ports, low+i)
		c.routes = append(c.routes, fmt.Sprintf("nats-route://127.0.0.1:%d", low+i))
	}
	return c
}

// Start starts member i (0-based) and returns it once it accepts client
// connections; it is shut down in t.Cleanup. JetStream may not be ready
// yet: a clustered JetStream needs a meta leader, which needs a quorum of
// members up.
func (c *NATSCluster) Start(i int) *natsserver.Server {
	c.t.Helper()
	c.servers[i] = NATSWith(c.t, natsserver.Options{
		ServerName: fmt.Sprintf("n%d", i),
		Cluster:    &natsserver.Cluster{Name: c.name, Port: c.ports[i], Routes: c.routes},
	})
	return c.servers[i]
}

// StartAll starts every member and returns their client URLs as one
// comma-separated list (what NATS_URL holds for a cluster).
func (c *NATSCluster) StartAll() string {
	c.t.Helper()
	urls := make([]string, len(c.servers))
	for i := range c.servers {
		urls[i] = c.Start(i).ClientURL()
	}
	return strings.Join(urls, ",")
}

// ShutdownStreamLeader shuts down the member leading stream (its data
// stays on the other replicas, which elect a new leader) and returns the
// member's name.
func (c *NATSCluster) ShutdownStreamLeader(js jetstream.JetStream, stream string) string {
	c.t.Helper()
	s, err := js.Stream(c.t.Context(), stream)
	if err != nil {
		c.t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(c.t.Context())
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		c.t.Fatalf("stream %s has no cluster leader: %+v, %v", stream, info, err)
	}
	for _, srv := range c.servers {
		if srv != nil && srv.NATS().Name() == info.Cluster.Leader {
			srv.Shutdown()
			return info.Cluster.Leader
		}
	}
	c.t.Fatalf("stream %s's leader %q is none of the cluster's servers", stream, info.Cluster.Leader)
	return ""
}
