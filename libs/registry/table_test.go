package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// running is a routable record of session id.
func running(id string, port int) registry.Endpoint {
	e := ep(id, "m")
	e.Host, e.Port, e.State = "10.0.0.1", port, registry.StateRunning
	return e
}

// runTable starts tab.Run on kv, waits for its first snapshot and stops it
// (checking its result) when the test ends.
func runTable(t *testing.T, tab *registry.Table, kv jetstream.KeyValue) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)              // buffered: Run's result is read in cleanup
	go func() { done <- tab.Run(ctx, kv) }() // owned by this test; ends on cancel
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("run did not return")
		}
	})
	select {
	case <-tab.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("table not synced")
	}
}

// markerBucket is a fresh server's runners bucket, whose release markers
// expire (LimitMarkerTTL), holding routable records of the sessions
// "released" and "kept"; and the same bucket through the table's own
// connection, over a link the test cuts.
type markerBucket struct {
	kv   jetstream.KeyValue // the test's direct view: writes while cut off
	tkv  jetstream.KeyValue // the table's view, through link
	nc   *nats.Conn         // the table's connection
	link *testenv.Link
}

// newMarkerBucket sets up a markerBucket.
func newMarkerBucket(t *testing.T) *markerBucket {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ambient-runners", LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"released", "kept"} {
		if _, err := registry.Claim(ctx, kv, running(id, 9100)); err != nil {
			t.Fatal(err)
		}
	}
	link := testenv.NewLink(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	nc := testenv.ConnURL(t, "nats://"+link.Addr())
	tjs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	tkv, err := tjs.KeyValue(ctx, "ambient-runners")
	if err != nil {
		t.Fatal(err)
	}
	return &markerBucket{kv: kv, tkv: tkv, nc: nc, link: link}
}

// releaseWhileCut releases "released" while the table's connection is
// away for longer than the release's marker lives: it cuts the link,
// waits until the connection is down, releases with a 1s marker, waits
// until the marker expired (the bucket holds kept's record alone) and
// restores the link. The table's watch never sees the marker.
func (b *markerBucket) releaseWhileCut(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	b.link.Cut()
	testenv.Eventually(t, 10*time.Second, func() error {
		if b.nc.IsConnected() {
			return errors.New("table's connection still up")
		}
		return nil
	})
	if _, err := registry.Release(ctx, b.kv, "released", "m", registry.WithMarkerTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		st, err := b.kv.Status(ctx)
		if err != nil {
			return err
		}
		if st.Values() != 1 {
			return fmt.Errorf("bucket holds %d messages, want 1 (the release's marker expired)", st.Values())
		}
		return nil
	})
	b.link.Restore()
}

// TestTableMisfiledRecord: a record stored under another session's key
// (b's record under key a) routes neither a nor b, whether it is in the
// first snapshot or arrives later over a valid record.
func TestTableMisfiledRecord(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx := t.Context()
	misfile := func(key string, e registry.Endpoint) {
		t.Helper()
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, registry.Key(key), b); err != nil {
			t.Fatal(err)
		}
	}
	misfile("a", running("b", 9100))
	if _, err := registry.Claim(ctx, kv, running("c", 9101)); err != nil {
		t.Fatal(err)
	}
	tab := registry.NewTable()
	runTable(t, tab, kv)
	for _, id := range []string{"a", "b"} {
		if got, ok := tab.Lookup(id); ok {
			t.Fatalf("lookup %s = %+v, want no route (b's record under key a)", id, got)
		}
	}
	if got, ok := tab.Lookup("c"); !ok || got != running("c", 9101) {
		t.Fatalf("lookup c = %+v %v", got, ok)
	}
	// A misfiled update replaces c's valid record; z, written after it,
	// tells when the table has applied it.
	misfile("c", running("d", 9102))
	if _, err := registry.Claim(ctx, kv, running("z", 9103)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if _, ok := tab.Lookup("z"); !ok {
			return errors.New("z not routable yet")
		}
		return nil
	})
	for _, id := range []string{"c", "d"} {
		if got, ok := tab.Lookup(id); ok {
			t.Fatalf("lookup %s = %+v, want no route (d's record under key c)", id, got)
		}
	}
	if n := tab.Len(); n != 1 {
		t.Fatalf("len = %d, want 1 (z)", n)
	}
}

// errWatchCut is what a gatedKV's WatchAll returns while cut.
var errWatchCut = errors.New("watch cut by the test")

// gatedKV is a real bucket whose watches the test can break and keep from
// reopening, as a lost connection would; writes go through meanwhile.
type gatedKV struct {
	jetstream.KeyValue
	mu      sync.Mutex
	cutOff  bool                   // guarded by mu: WatchAll fails
	watches []jetstream.KeyWatcher // guarded by mu
}

func (g *gatedKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cutOff {
		return nil, errWatchCut
	}
	w, err := g.KeyValue.WatchAll(ctx, opts...)
	if err == nil {
		g.watches = append(g.watches, w)
	}
	return w, err
}

// cut stops every open watch and fails new ones until restore.
func (g *gatedKV) cut(t testing.TB) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cutOff = true
	for _, w := range g.watches {
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	g.watches = nil
}

func (g *gatedKV) restore() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cutOff = false
}

// TestTableRewatch: while the table's watch is broken it is not Ready and
// Err says why; once the watch is back the table is rebuilt from the
// bucket, so a record deleted meanwhile is reported removed and no longer
// routed, a record that changed project is reported removed and routed
// with its new facts, and an unchanged one is neither.
func TestTableRewatch(t *testing.T) {
	t.Parallel()
	kv := &gatedKV{KeyValue: newKV(t)}
	ctx := t.Context()
	revs := map[string]uint64{}
	for i, id := range []string{"keep", "gone", "moved"} {
		rev, err := registry.Claim(ctx, kv, running(id, 9100+i))
		if err != nil {
			t.Fatal(err)
		}
		revs[id] = rev
	}
	var mu sync.Mutex
	var removed []string // guarded by mu
	tab := registry.NewTable(registry.WithOnRemove(func(id string) {
		mu.Lock()
		removed = append(removed, id)
		mu.Unlock()
	}))
	runTable(t, tab, kv)
	for _, id := range []string{"keep", "gone", "moved"} {
		if _, ok := tab.Lookup(id); !ok {
			t.Fatalf("%s not routable after sync", id)
		}
	}

	kv.cut(t)
	testenv.Eventually(t, 5*time.Second, func() error {
		if tab.Ready() || tab.Err() == nil {
			return fmt.Errorf("ready = %v, err = %v with the watch broken", tab.Ready(), tab.Err())
		}
		return nil
	})
	// Changes the table cannot see while its watch is down.
	if _, err := registry.Release(ctx, kv, "gone", "m"); err != nil {
		t.Fatal(err)
	}
	moved := running("moved", 9102)
	moved.ProjectID = "q"
	if _, err := registry.Register(ctx, kv, moved, revs["moved"]); err != nil {
		t.Fatal(err)
	}
	if _, ok := tab.Lookup("gone"); !ok {
		t.Fatal("table saw the delete with its watch down: the test does not exercise the re-sync")
	}

	kv.restore()
	testenv.Eventually(t, 10*time.Second, func() error {
		if !tab.Ready() {
			return fmt.Errorf("not ready after the watch came back (err %v)", tab.Err())
		}
		return nil
	})
	if err := tab.Err(); err != nil {
		t.Fatalf("err = %v after the re-sync, want nil", err)
	}
	mu.Lock()
	got := slices.Sorted(slices.Values(removed))
	mu.Unlock()
	if !slices.Equal(got, []string{"gone", "moved"}) {
		t.Fatalf("removed %v after the re-sync, want [gone moved]", got)
	}
	if e, ok := tab.Lookup("gone"); ok {
		t.Fatalf("deleted record still routed: %+v", e)
	}
	if e, ok := tab.Lookup("moved"); !ok || e != moved {
		t.Fatalf("lookup moved = %+v %v, want %+v", e, ok, moved)
	}
	if e, ok := tab.Lookup("keep"); !ok || e != running("keep", 9100) {
		t.Fatalf("lookup keep = %+v %v", e, ok)
	}
}

// TestTableReadsAfreshAfterReconnect: the table's connection is cut for
// longer than a release's marker lives. Its watch resumes after the last
// message it saw, so it never sees the purge; the record would route the
// released session for good (to a port another session's runner may have
// by then). With WithReopen the reconnect makes the table read the bucket
// afresh and the record goes. (Without it the heartbeat reads afresh too,
// a beat after it finds the watch short of the marker's sequence:
// TestTableReadsPastRemovedLastMessage.)
func TestTableReadsAfreshAfterReconnect(t *testing.T) {
	t.Parallel()
	b := newMarkerBucket(t)
	reconnects := bus.WatchReconnects(b.nc)
	// No interval: only the reconnect may bring the fresh read.
	tab := registry.NewTable(registry.WithReopen(reconnects.Next, 0))
	runTable(t, tab, b.tkv)
	if _, ok := tab.Lookup("released"); !ok {
		t.Fatal("released session not routed before the cut")
	}

	b.releaseWhileCut(t)
	testenv.Eventually(t, 15*time.Second, func() error {
		if !b.nc.IsConnected() {
			return errors.New("table's connection not back")
		}
		if got, ok := tab.Lookup("released"); ok {
			return fmt.Errorf("released session still routed to %s after the reconnect", got.Addr())
		}
		return nil
	})
	if _, ok := tab.Lookup("kept"); !ok {
		t.Fatal("kept session lost by the fresh read")
	}
}

// TestTableResolveReadsThrough: a record written while the table's watch
// lags (its updates held) is not in the table, so Lookup misses it;
// Resolve reads it from the bucket, waits for the watch to apply it and
// answers from the table. A session the bucket has no routable record of
// (none, or claimed but not started) is a miss at once, without waiting
// for the held watch.
func TestTableResolveReadsThrough(t *testing.T) {
	t.Parallel()
	kv := testenv.HoldUpdates(newKV(t))
	ctx := t.Context()
	tab := registry.NewTable()
	runTable(t, tab, kv)
	if _, err := registry.Claim(ctx, kv, running("a", 9100)); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Claim(ctx, kv, ep("claimed", "m")); err != nil {
		t.Fatal(err)
	}
	if got, ok := tab.Lookup("a"); ok {
		t.Fatalf("lookup a = %+v while the watch is held, want a miss (the lag under test)", got)
	}
	for _, id := range []string{"none", "claimed"} {
		if got, err := tab.Resolve(ctx, id); !errors.Is(err, registry.ErrNoRoute) {
			t.Errorf("resolve %s = %+v, %v; want ErrNoRoute", id, got, err)
		}
	}
	type resolved struct {
		ep  registry.Endpoint
		err error
	}
	done := make(chan resolved, 1)
	go func() { // ends by resolveWait at the latest
		e, err := tab.Resolve(ctx, "a")
		done <- resolved{e, err}
	}()
	kv.Release()
	r := <-done
	if r.err != nil || r.ep.Port != 9100 {
		t.Fatalf("resolve a = %+v, %v; want its record (port 9100)", r.ep, r.err)
	}
	if _, ok := tab.Lookup("a"); !ok {
		t.Fatal("resolve answered, but the table lacks a: the answer must come from the table its watch keeps")
	}
}

// TestTableResolveGivesUp: when the watch does not apply the record read
// (held for good here), Resolve answers ErrRouteUnknown when its context
// ends instead of routing from the read (the table is written by its watch
// alone), not ErrNoRoute: the bucket holds the record.
func TestTableResolveGivesUp(t *testing.T) {
	t.Parallel()
	kv := testenv.HoldUpdates(newKV(t))
	tab := registry.NewTable()
	runTable(t, tab, kv)
	if _, err := registry.Claim(t.Context(), kv, running("a", 9100)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if got, err := tab.Resolve(ctx, "a"); !errors.Is(err, registry.ErrRouteUnknown) || errors.Is(err, registry.ErrNoRoute) {
		t.Fatalf("resolve a = %+v, %v with the watch held; want ErrRouteUnknown", got, err)
	}
	if ctx.Err() == nil {
		t.Fatal("resolve gave up before its context ended: it did not wait for the watch")
	}
	kv.Release()
}
