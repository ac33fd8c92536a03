package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// routesReleasedPastBound polls tab until it no longer routes id and
// fails the test as soon as it routes id more than twice bound after
// released (taken once the release was written). A table routes only
// while confirmed current within bound, and a confirmation of a moment
// after the release needs the release applied; the second bound is
// margin for the snapshot, which counts from its delivery.
func routesReleasedPastBound(t *testing.T, tab *registry.Table, id string, released time.Time, bound time.Duration) {
	t.Helper()
	var violation error
	err := testenv.Poll(30*time.Second, func() error { // hang guard
		at := time.Now() // before the lookup: the lookup can only be later
		if _, ok := tab.Lookup(id); !ok {
			return nil
		}
		if age := at.Sub(released); age > 2*bound {
			violation = fmt.Errorf("table routes %s, released %s before, while Fresh() = %v with a %s bound",
				id, age.Round(time.Millisecond), tab.Fresh(), bound)
			return violation
		}
		return errors.New("still routed (within the bound)")
	})
	if violation != nil {
		t.Fatal(violation)
	}
	if err != nil {
		t.Fatalf("never stopped routing %s: %v", id, err)
	}
}

// TestTableLaggingWatchNotConfirmed: a status answer says the server is
// reachable, not that the table holds what the server holds. A watch that
// lags the bucket (here held; in production a consumer the server lost, a
// client-side backlog) must not be confirmed current by the heartbeat: a
// record released meanwhile stops routing within the bound (the lag is
// noticed and the bucket read afresh).
func TestTableLaggingWatchNotConfirmed(t *testing.T) {
	t.Parallel()
	kv := testenv.HoldUpdates(newKV(t))
	t.Cleanup(kv.Release)
	ctx := t.Context()
	if _, err := registry.Claim(ctx, kv, running("a", 9100)); err != nil {
		t.Fatal(err)
	}
	const bound = time.Second
	tab := registry.NewTable(registry.WithStaleAfter(bound))
	runTable(t, tab, kv)
	if _, err := registry.Release(ctx, kv, "a", "m"); err != nil {
		t.Fatal(err)
	}
	routesReleasedPastBound(t, tab, "a", time.Now(), bound)
}

// TestTableDeadConsumerNotConfirmed is the same with nothing but real
// parts: the watch's consumer is deleted on the server (`nats consumer
// rm`, a consumer lost by the server) while the table's connection stays
// up. nats.go's ordered consumer notices only after two missed idle
// heartbeats (5 s each); until then every status answer came quickly
// while the watch received nothing.
func TestTableDeadConsumerNotConfirmed(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ambient-runners"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Claim(ctx, kv, running("a", 9100)); err != nil {
		t.Fatal(err)
	}
	_, tjs := testenv.JetStream(t, srv) // the table's own connection
	tkv, err := tjs.KeyValue(ctx, "ambient-runners")
	if err != nil {
		t.Fatal(err)
	}
	const bound = time.Second
	tab := registry.NewTable(registry.WithStaleAfter(bound))
	runTable(t, tab, tkv)
	st, err := js.Stream(ctx, "KV_ambient-runners")
	if err != nil {
		t.Fatal(err)
	}
	names := st.ConsumerNames(ctx)
	var deleted []string
	for n := range names.Name() {
		if err := st.DeleteConsumer(ctx, n); err != nil {
			t.Fatal(err)
		}
		deleted = append(deleted, n)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if len(deleted) == 0 {
		t.Fatal("no consumer to delete: the watch's consumer not found")
	}
	t.Logf("deleted consumers %s", strings.Join(deleted, ","))
	if _, err := registry.Release(ctx, kv, "a", "m"); err != nil {
		t.Fatal(err)
	}
	routesReleasedPastBound(t, tab, "a", time.Now(), bound)
}

// TestTableReadsPastRemovedLastMessage: the stream's last message is
// removed before the watch sees it (a release's marker expires while the
// table's connection is away; no reconnect reopen here). Its sequence
// stays the stream's last, which the watch will never apply, so no status
// answer can be reached by the watch: the table must read the bucket
// afresh rather than stay unconfirmed (stale for good) or keep the
// released record (no bound). With a 1s bound the cut outlasts it: the
// stale table must end its staleness by one fresh snapshot.
func TestTableReadsPastRemovedLastMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		bound time.Duration
	}{{"stale", time.Second}, {"no-bound", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newMarkerBucket(t)
			tab := registry.NewTable(registry.WithStaleAfter(tc.bound))
			runTable(t, tab, b.tkv)
			b.releaseWhileCut(t)
			testenv.Eventually(t, 30*time.Second, func() error { // hang guard: beats every 250ms-2s
				if err := tab.Fresh(); err != nil {
					return err
				}
				if got, ok := tab.Lookup("released"); ok {
					return fmt.Errorf("released session still routed to %s", got.Addr())
				}
				return nil
			})
			if _, ok := tab.Lookup("kept"); !ok {
				t.Fatal("kept session lost by the fresh read")
			}
		})
	}
}

// probeKey marks the context of the Resolve whose bucket check
// TestTableResolveWhileReopening waits for (Resolve keeps the values of
// its context for its reads).
type probeKey struct{}

// snapshotGateKV is a real bucket whose next watch, once armed, delivers
// nothing until released: the table has begun to reopen (it asked the
// bucket's status, then opened the watch) and has no snapshot yet.
// Status calls made for a probe context are reported on probed.
type snapshotGateKV struct {
	jetstream.KeyValue
	mu      sync.Mutex
	armed   bool          // guarded by mu: the next WatchAll is gated
	opened  chan struct{} // closed by the gated WatchAll
	release chan struct{} // closed by the test: the gated watch delivers
	probed  chan struct{} // closed by the first probe's Status
	once    sync.Once
}

func newSnapshotGateKV(kv jetstream.KeyValue) *snapshotGateKV {
	return &snapshotGateKV{KeyValue: kv, opened: make(chan struct{}), release: make(chan struct{}), probed: make(chan struct{})}
}

func (g *snapshotGateKV) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
}

func (g *snapshotGateKV) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	if ctx.Value(probeKey{}) != nil {
		g.once.Do(func() { close(g.probed) })
	}
	return g.KeyValue.Status(ctx)
}

func (g *snapshotGateKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	w, err := g.KeyValue.WatchAll(ctx, opts...)
	if err != nil || !g.armed {
		return w, err
	}
	g.armed = false
	gw := &gatedWatcher{w: w, out: make(chan jetstream.KeyValueEntry), stop: make(chan struct{})}
	go gw.relay(g.release) // ends when w's channel closes or Stop is called
	close(g.opened)
	return gw, nil
}

// gatedWatcher relays a watcher's entries once released.
type gatedWatcher struct {
	w        jetstream.KeyWatcher
	out      chan jetstream.KeyValueEntry
	stop     chan struct{}
	stopOnce sync.Once
}

func (gw *gatedWatcher) Updates() <-chan jetstream.KeyValueEntry { return gw.out }

func (gw *gatedWatcher) Stop() error {
	gw.stopOnce.Do(func() { close(gw.stop) })
	return gw.w.Stop()
}

func (gw *gatedWatcher) relay(release <-chan struct{}) {
	defer close(gw.out)
	select {
	case <-release:
	case <-gw.stop:
		return
	}
	for {
		var e jetstream.KeyValueEntry
		select {
		case got, ok := <-gw.w.Updates():
			if !ok {
				return
			}
			e = got
		case <-gw.stop:
			return
		}
		select {
		case gw.out <- e:
		case <-gw.stop:
			return
		}
	}
}

// TestTableResolveWhileReopening: a session registered in a recreated
// runners bucket is resolved while the table reopens its watch on the new
// bucket: the reopen has recorded the new bucket's identity, its
// snapshot is not in yet. A Resolve then finds the watch past the
// record's revision (the old bucket's revisions were higher) and the
// bucket "not recreated" (the reopen already took it as the watch's): it
// must wait for the snapshot, not answer ErrNoRoute (a 404 "unknown
// session" for a session that exists). Deterministic: the new watch
// delivers only once the Resolve has checked the bucket.
func TestTableResolveWhileReopening(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, inMemory(bus.RunnersBucket(1)))
	if err != nil {
		t.Fatal(err)
	}
	// Old revisions above the new bucket's first one.
	for i := range 5 {
		if _, err := registry.Claim(ctx, kv, running(fmt.Sprintf("old%d", i), 9100+i)); err != nil {
			t.Fatal(err)
		}
	}
	_, tjs := testenv.JetStream(t, srv) // the table's own connection
	tkv, err := tjs.KeyValue(ctx, bus.BucketRunners)
	if err != nil {
		t.Fatal(err)
	}
	g := newSnapshotGateKV(tkv)
	tab := registry.NewTable()
	runTable(t, tab, g)
	t.Cleanup(func() {
		select {
		case <-g.release:
		default:
			close(g.release) // a failed test: let the gated watch go
		}
	})
	// Armed first: the heartbeat may notice the new bucket at any time.
	g.arm()
	if err := js.DeleteKeyValue(ctx, bus.BucketRunners); err != nil {
		t.Fatal(err)
	}
	if kv, err = js.CreateKeyValue(ctx, inMemory(bus.RunnersBucket(1))); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Claim(ctx, kv, running("new", 9200)); err != nil {
		t.Fatal(err)
	}

	type result struct {
		ep  registry.Endpoint
		err error
	}
	resolve := func(ctx context.Context) <-chan result {
		out := make(chan result, 1)
		go func() { // owned by this test: Resolve returns within its bound
			e, err := tab.Resolve(ctx, "new")
			out <- result{e, err}
		}()
		return out
	}
	// The first Resolve (or the heartbeat) finds the bucket recreated and
	// has the watch reopened; the gate holds the new watch's snapshot.
	first := resolve(ctx)
	select {
	case <-g.opened:
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("the table did not reopen its watch on the recreated bucket")
	}
	second := resolve(context.WithValue(ctx, probeKey{}, true))
	select {
	case <-g.probed:
	case <-time.After(30 * time.Second): // hang guard
		t.Fatal("the resolve while reopening did not check the bucket")
	}
	close(g.release)
	for _, c := range []struct {
		name string
		ch   <-chan result
	}{{"first", first}, {"while reopening", second}} {
		name, r := c.name, <-c.ch
		switch {
		case errors.Is(r.err, registry.ErrNoRoute):
			t.Fatalf("%s resolve of a record of the recreated bucket: %v (404), want its endpoint", name, r.err)
		case r.err != nil:
			// Resolve's own 2s wait ran out (a loaded machine): not a
			// wrong answer; the record must still route.
			t.Logf("%s resolve: %v", name, r.err)
		case r.ep.Port != 9200:
			t.Fatalf("%s resolve = %+v, want port 9200", name, r.ep)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if e, err := tab.Resolve(ctx, "new"); err != nil || e.Port != 9200 {
			return fmt.Errorf("resolve new = %+v, %w", e, err)
		}
		return nil
	})
}
