package registry_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// linkedKV is the runners bucket of a fresh server, created directly, and
// the same bucket seen through a link the test can cut: the table watches
// the linked one, the test writes to the direct one (runner-manager stays
// connected while the proxy is cut off).
func linkedKV(t *testing.T) (direct, linked jetstream.KeyValue, link *testenv.Link) {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	direct, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "ambient-runners"})
	if err != nil {
		t.Fatal(err)
	}
	link = testenv.NewLink(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	ljs, err := jetstream.New(testenv.ConnURL(t, "nats://"+link.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	linked, err = ljs.KeyValue(t.Context(), "ambient-runners")
	if err != nil {
		t.Fatal(err)
	}
	return direct, linked, link
}

// TestTableGoesStaleCutOff: a table cut off from the server is confirmed
// current by nothing; past its bound (WithStaleAfter) Lookup and Resolve
// route nothing (ErrStale) and Fresh says so, while Known still answers
// what the table last knew (open streams are not cut). Once the server
// answers again, a fresh snapshot (not the heartbeat alone) ends it: a
// record released meanwhile is gone, one registered meanwhile is there.
func TestTableGoesStaleCutOff(t *testing.T) {
	t.Parallel()
	direct, linked, link := linkedKV(t)
	ctx := t.Context()
	if _, err := registry.Claim(ctx, direct, running("a", 9100)); err != nil {
		t.Fatal(err)
	}
	tab := registry.NewTable(registry.WithStaleAfter(time.Second))
	runTable(t, tab, linked)
	if err := tab.Fresh(); err != nil {
		t.Fatalf("fresh after the snapshot: %v", err)
	}
	if _, ok := tab.Lookup("a"); !ok {
		t.Fatal("lookup a before the cut: miss")
	}

	link.Cut()
	if _, err := registry.Release(ctx, direct, "a", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Claim(ctx, direct, running("b", 9100)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error { // hang guard: the bound is 1s
		if err := tab.Fresh(); !errors.Is(err, registry.ErrStale) {
			return errors.New("table still fresh, cut off past its 1s bound")
		}
		return nil
	})
	if e, ok := tab.Lookup("a"); ok {
		t.Fatalf("lookup a in a stale table = %+v, want a miss", e)
	}
	if e, err := tab.Resolve(ctx, "a"); !errors.Is(err, registry.ErrStale) || !errors.Is(err, registry.ErrRouteUnknown) {
		t.Fatalf("resolve a in a stale table = %+v, %v; want ErrStale (an ErrRouteUnknown)", e, err)
	}
	if _, ok := tab.Known("a"); !ok {
		t.Fatal("known a in a stale table: miss, want what the table last knew")
	}

	link.Restore()
	testenv.Eventually(t, 30*time.Second, func() error { return tab.Fresh() })
	if e, ok := tab.Lookup("a"); ok {
		t.Fatalf("lookup a once fresh again = %+v; want a miss, released while cut off", e)
	}
	if _, ok := tab.Lookup("b"); !ok {
		t.Fatal("lookup b once fresh again: miss, want its record, registered while cut off")
	}
}

// TestTableResolveUnknownWhenReadFails: within the bound, a miss the table
// cannot read through (cut off from the server) is ErrRouteUnknown, not
// ErrNoRoute: the session may well exist.
func TestTableResolveUnknownWhenReadFails(t *testing.T) {
	t.Parallel()
	_, linked, link := linkedKV(t)
	tab := registry.NewTable(registry.WithStaleAfter(time.Hour))
	runTable(t, tab, linked)
	if _, err := tab.Resolve(t.Context(), "x"); !errors.Is(err, registry.ErrNoRoute) {
		t.Fatalf("resolve x connected: %v, want ErrNoRoute", err)
	}
	link.Cut()
	e, err := tab.Resolve(t.Context(), "x")
	if !errors.Is(err, registry.ErrRouteUnknown) || errors.Is(err, registry.ErrNoRoute) || errors.Is(err, registry.ErrStale) {
		t.Fatalf("resolve x cut off = %+v, %v; want ErrRouteUnknown (the read failed)", e, err)
	}
	// Back, and the read with it: a miss is a miss again. (Also lets the
	// watch's stop delete its consumer: nats.go waits for the server's
	// answer, seconds while cut off.)
	link.Restore()
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, err := tab.Resolve(t.Context(), "x"); !errors.Is(err, registry.ErrNoRoute) {
			return fmt.Errorf("resolve x once back: %w, want ErrNoRoute", err)
		}
		return nil
	})
}

// TestTableFollowsRecreatedBucket: the bucket is deleted and created again
// while the table's connection stays up. The new bucket's revisions start
// anew, below those the watch applied, so the old watch would wait for
// them. Resolve of a record of the new bucket routes it at once; the
// heartbeat alone also replaces the table (old records gone) within its
// interval.
func TestTableFollowsRecreatedBucket(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		resolve bool
	}{{"resolve", true}, {"heartbeat", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testenv.NATS(t)
			_, js := testenv.JetStream(t, srv)
			ctx := t.Context()
			kv, err := js.CreateKeyValue(ctx, inMemory(bus.RunnersBucket(1)))
			if err != nil {
				t.Fatal(err)
			}
			for i, id := range []string{"old", "x1", "x2", "x3", "x4"} {
				if _, err := registry.Claim(ctx, kv, running(id, 9100+i)); err != nil {
					t.Fatal(err)
				}
			}
			// The table's own connection, as the proxy's.
			_, tjs := testenv.JetStream(t, srv)
			tkv, err := tjs.KeyValue(ctx, bus.BucketRunners)
			if err != nil {
				t.Fatal(err)
			}
			tab := registry.NewTable()
			runTable(t, tab, tkv)
			if _, ok := tab.Lookup("old"); !ok {
				t.Fatal("lookup old before: miss")
			}
			if err := js.DeleteKeyValue(ctx, bus.BucketRunners); err != nil {
				t.Fatal(err)
			}
			if kv, err = js.CreateKeyValue(ctx, inMemory(bus.RunnersBucket(1))); err != nil {
				t.Fatal(err)
			}
			if _, err := registry.Claim(ctx, kv, running("new", 9200)); err != nil {
				t.Fatal(err)
			}
			if tc.resolve {
				if e, err := tab.Resolve(ctx, "new"); err != nil || e.Port != 9200 {
					t.Fatalf("resolve new = %+v, %v; want its record (port 9200)", e, err)
				}
			}
			testenv.Eventually(t, 30*time.Second, func() error { // hang guard: the heartbeat beats every 2s
				if _, ok := tab.Lookup("old"); ok {
					return errors.New("old, lost with the old bucket, still routed")
				}
				if _, ok := tab.Lookup("new"); !ok {
					return errors.New("new, of the new bucket, not routed")
				}
				return nil
			})
		})
	}
}

// inMemory is cfg kept in memory. The test server removes a deleted file
// stream's directory in the background, and a stream of that name created
// at once fails ("error creating store for stream") or finds the old
// messages now and then; a memory stream has no directory.
func inMemory(cfg jetstream.KeyValueConfig) jetstream.KeyValueConfig {
	cfg.Storage = jetstream.MemoryStorage
	return cfg
}
