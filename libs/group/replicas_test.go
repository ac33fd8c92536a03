package group_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// startCluster runs n nats-servers with JetStream as one cluster on
// loopback (testenv.NATSCluster), the way the chart's bundled NATS runs,
// and returns it and a client URL list of all of them once JetStream has a
// meta leader.
func startCluster(t *testing.T, n int) (*testenv.NATSCluster, string) {
	t.Helper()
	c := testenv.NewNATSCluster(t, n)
	url := c.StartAll()
	_, js := clusterJetStream(t, url)
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := js.AccountInfo(t.Context()) // needs a meta leader
		return err
	})
	return c, url
}

// clusterJetStream connects to the cluster with reconnects, closed in
// t.Cleanup.
func clusterJetStream(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(t.Name()), nats.MaxReconnects(-1), nats.ReconnectWait(25*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// replicasOf returns the replica count of stream.
func replicasOf(ctx context.Context, js jetstream.JetStream, stream string) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	return s.CachedInfo().Config.Replicas, nil
}

// wantReplicas waits until every stream has its replica count.
func wantReplicas(t *testing.T, js jetstream.JetStream, want map[string]int) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		for stream, n := range want {
			got, err := replicasOf(t.Context(), js, stream)
			if err != nil {
				return err
			}
			if got != n {
				return fmt.Errorf("stream %s has %d replicas, want %d", stream, got, n)
			}
		}
		return nil
	})
}

// TestReplicasWhateverStartOrder (issue 14, finding 5): on a real 3-node
// cluster, a member that joins before the informer creates the events
// stream at R3 still gets every stream and bucket of its group at R3,
// the dead-letter stream included (it used to be created at R1 before the
// events stream existed and never updated). An explicit Replicas updates
// existing streams and buckets of the group to that count; the shared
// dead-letter stream and config bucket are only ever raised.
func TestReplicasWhateverStartOrder(t *testing.T) {
	t.Parallel()
	_, url := startCluster(t, 3)
	_, js := clusterJetStream(t, url)

	// Member first: it must wait for the events stream.
	waiting := newLogWatch("events stream missing, waiting")
	handled := make(chan struct{}) // closed by the first handler call
	var once sync.Once
	cfg := testConfig("a")
	nc, mjs := clusterJetStream(t, url)
	runMember(t, nc, mjs, cfg, func(context.Context, group.Message) error {
		once.Do(func() { close(handled) })
		return nil
	}, slog.New(waiting))
	select {
	case <-waiting.seen:
	case <-time.After(30 * time.Second):
		t.Fatal("member never waited for the events stream")
	}
	// Then the informer creates the stream at R3.
	if _, err := bus.EnsureEventsStream(t.Context(), js, 3, 0); err != nil {
		t.Fatalf("events stream: %v", err)
	}
	configStream, dlq := "KV_elastic-consumer-groups", bus.DLQStreamName
	wantReplicas(t, js, map[string]int{
		dlq: 3,
		group.WorkStreamName(events.StreamName, testGroup):            3,
		"KV_" + group.MembersBucketName(events.StreamName, testGroup): 3,
		configStream: 3,
	})
	publish(t, js, "s1", 1)
	waitSignal(t, handled, "event not handled on the R3 group")

	// Another group pinned at R1: its own streams go to R1, the shared
	// ones stay at R3.
	const other = "other"
	one := testConfig("b")
	one.Group, one.Replicas = other, 1
	bnc, bjs := clusterJetStream(t, url)
	b := runMember(t, bnc, bjs, one, func(context.Context, group.Message) error { return nil }, testLogger())
	wantReplicas(t, js, map[string]int{
		group.WorkStreamName(events.StreamName, other):            1,
		"KV_" + group.MembersBucketName(events.StreamName, other): 1,
		dlq:          3,
		configStream: 3,
	})
	if err := b.stop(t); err != nil {
		t.Fatalf("stop b: %v", err)
	}
	// Rejoining with Replicas 3 updates the existing R1 streams.
	three := one
	three.Member, three.Replicas = "c", 3
	cnc, cjs := clusterJetStream(t, url)
	runMember(t, cnc, cjs, three, func(context.Context, group.Message) error { return nil }, testLogger())
	wantReplicas(t, js, map[string]int{
		group.WorkStreamName(events.StreamName, other):            3,
		"KV_" + group.MembersBucketName(events.StreamName, other): 3,
	})
}

// logWatch is a slog.Handler that closes seen when a record with message
// msg is logged, and discards everything (or prints it with
// GROUP_TEST_LOG set).
type logWatch struct {
	msg  string
	seen chan struct{}
	once *sync.Once
	next slog.Handler
}

func newLogWatch(msg string) *logWatch {
	return &logWatch{msg: msg, seen: make(chan struct{}), once: &sync.Once{}, next: testLogger().Handler()}
}

func (l *logWatch) Enabled(context.Context, slog.Level) bool { return true }

func (l *logWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == l.msg {
		l.once.Do(func() { close(l.seen) })
	}
	if l.next.Enabled(ctx, r.Level) {
		return l.next.Handle(ctx, r)
	}
	return nil
}

func (l *logWatch) WithAttrs(as []slog.Attr) slog.Handler {
	c := *l
	c.next = l.next.WithAttrs(as)
	return &c
}

func (l *logWatch) WithGroup(name string) slog.Handler {
	c := *l
	c.next = l.next.WithGroup(name)
	return &c
}
