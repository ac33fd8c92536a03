package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// newKV returns a fresh bucket on an embedded JetStream server.
func newKV(t testing.TB) jetstream.KeyValue {
	t.Helper()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "ambient-runners"})
	if err != nil {
		t.Fatalf("kv: %v", err)
	}
	return kv
}

func ep(id, owner string) registry.Endpoint {
	return registry.Endpoint{SessionID: id, ProjectID: "p", Owner: owner, StartedAt: time.Unix(1700000000, 0).UTC(), State: registry.StateClaimed}
}

func TestClaimExactlyOnce(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx := t.Context()
	const claimers = 16
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range claimers {
		wg.Add(1)
		go func() { // owned by this test, waited below
			defer wg.Done()
			_, err := registry.Claim(ctx, kv, ep("s1", fmt.Sprintf("m%d", i)))
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, registry.ErrClaimed):
			default:
				t.Errorf("claim: %v", err)
			}
		}()
	}
	wg.Wait()
	if got := wins.Load(); got != 1 {
		t.Fatalf("winners = %d, want 1", got)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx := t.Context()
	id := "sess/../with dots.and*stars"
	rev, err := registry.Claim(ctx, kv, ep(id, "a"))
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	e := ep(id, "a")
	e.Host, e.Port, e.PID, e.State = "127.0.0.1", 9100, 42, registry.StateRunning
	rev2, err := registry.Register(ctx, kv, e, rev)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if _, err := registry.Register(ctx, kv, e, rev); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("stale register: got %v, want ErrConflict", err)
	}
	got, err := registry.Get(ctx, kv, id)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.Endpoint != e || got.Revision != rev2 {
		t.Fatalf("get = %+v, want %+v at %d", got, e, rev2)
	}
	if _, err := registry.Release(ctx, kv, id, "b"); !errors.Is(err, registry.ErrNotOwner) {
		t.Fatalf("release by other: got %v, want ErrNotOwner", err)
	}
	if _, err := registry.Release(ctx, kv, id, "a"); err != nil {
		t.Fatalf("release: %v", err)
	}
	if _, err := registry.Release(ctx, kv, id, "a"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if _, err := registry.Get(ctx, kv, id); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("get after release: got %v, want ErrNotFound", err)
	}
	if _, err := registry.Register(ctx, kv, e, rev2); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("register after release: got %v, want ErrConflict", err)
	}
	// The key can be claimed again after release.
	if _, err := registry.Claim(ctx, kv, ep(id, "b")); err != nil {
		t.Fatalf("re-claim: %v", err)
	}
}

func TestTakeoverCAS(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx := t.Context()
	if _, err := registry.Claim(ctx, kv, ep("s", "dead")); err != nil {
		t.Fatal(err)
	}
	stale, err := registry.Get(ctx, kv, "s")
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() { // owned by this test, waited below
			defer wg.Done()
			if _, err := registry.Register(ctx, kv, ep("s", fmt.Sprintf("m%d", i)), stale.Revision); err == nil {
				wins.Add(1)
			} else if !errors.Is(err, registry.ErrConflict) {
				t.Errorf("register: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("takeover winners = %d, want 1", wins.Load())
	}
}

func TestInvalid(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	tests := []struct {
		name string
		ep   registry.Endpoint
	}{
		{"no session", registry.Endpoint{Owner: "a"}},
		{"no owner", registry.Endpoint{SessionID: "s"}},
		{"bad port", registry.Endpoint{SessionID: "s", Owner: "a", Port: 70000}},
		{"port 65536", registry.Endpoint{SessionID: "s", Owner: "a", Port: 65536}},
		{"negative port", registry.Endpoint{SessionID: "s", Owner: "a", Port: -1}},
		{"final without a phase", registry.Endpoint{
			SessionID: "s", Owner: "a", State: registry.StateExited,
			Final: &registry.Final{Reason: "RunnerExited", At: time.Unix(1700000000, 0).UTC()},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := registry.Claim(t.Context(), kv, tc.ep); !errors.Is(err, registry.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestTable(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// A record present before the watch starts.
	pre := ep("pre", "a")
	pre.Host, pre.Port = "10.0.0.1", 9100
	if _, err := registry.Claim(ctx, kv, pre); err != nil {
		t.Fatal(err)
	}
	// Another key space sharing the bucket is ignored.
	if _, err := kv.Put(ctx, "members.a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	tab := registry.NewTable()
	done := make(chan error, 1) // buffered: Run's result is read after cancel
	go func() { done <- tab.Run(ctx, kv) }()
	select {
	case <-tab.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("table not synced")
	}
	if !tab.Ready() {
		t.Fatal("not ready after sync")
	}
	if got, ok := tab.Lookup("pre"); !ok || got != pre {
		t.Fatalf("lookup pre = %+v %v", got, ok)
	}
	// Claimed without a port: known but not routable.
	rev, err := registry.Claim(ctx, kv, ep("new", "b"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if tab.Len() != 2 {
			return fmt.Errorf("len = %d", tab.Len())
		}
		return nil
	})
	if _, ok := tab.Lookup("new"); ok {
		t.Fatal("unported endpoint routable")
	}
	e := ep("new", "b")
	e.Host, e.Port = "127.0.0.1", 9101
	if _, err := registry.Register(ctx, kv, e, rev); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if got, ok := tab.Lookup("new"); !ok || got.Port != 9101 {
			return fmt.Errorf("lookup new = %+v %v", got, ok)
		}
		return nil
	})
	if _, err := registry.Release(ctx, kv, "pre", "a"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if _, ok := tab.Lookup("pre"); ok {
			return errors.New("pre still routable")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return")
	}
}

func FuzzKey(f *testing.F) {
	for _, s := range []string{"", "_", "a.b", "../../etc", "x y*>", "é", "=41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := registry.Key(s)
		if s != "" && k == "_" {
			t.Fatalf("key of %q collides with the empty id", s)
		}
		if k == "" {
			t.Fatal("empty key")
		}
		for _, c := range []byte(k) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				t.Fatalf("key %q of %q has %q", k, s, c)
			}
		}
	})
}

func TestListAndInvalidRecords(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx := t.Context()
	if got, err := registry.List(ctx, kv); err != nil || len(got) != 0 {
		t.Fatalf("empty list = %v, %v", got, err)
	}
	for _, id := range []string{"a", "b.c"} {
		if _, err := registry.Claim(ctx, kv, ep(id, "m")); err != nil {
			t.Fatal(err)
		}
	}
	// Garbage under a session key and a key of another key space.
	if _, err := kv.Put(ctx, registry.Key("junk"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "members.m", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got, err := registry.List(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, r.SessionID)
	}
	if len(ids) != 2 || !(ids[0] == "a" && ids[1] == "b.c" || ids[0] == "b.c" && ids[1] == "a") {
		t.Fatalf("listed %v", ids)
	}
	if _, err := registry.Get(ctx, kv, "junk"); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("get junk: %v, want ErrInvalid", err)
	}
	// Anyone may clear an undecodable record; then the id can be claimed.
	if _, err := registry.Release(ctx, kv, "junk", "whoever"); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Claim(ctx, kv, ep("junk", "m")); err != nil {
		t.Fatal(err)
	}
}

// Issue 14 point 4: released records left one delete marker each for ever
// (11,850 after 4,000 sessions). With WithMarkerTTL the release purges the
// key with a marker the server removes after the TTL, so the bucket holds
// only live records again; a watcher sees the release as a delete.
func TestReleaseMarkersExpire(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ambient-runners", LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 {
		t.Helper()
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Values()
	}
	table := registry.NewTable()
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)                 // Run's result
	go func() { done <- table.Run(tctx, kv) }() // owned by this test; ends on cancel
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if _, err := registry.Claim(ctx, kv, ep("live", "m")); err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := range n {
		id := fmt.Sprintf("s%d", i)
		e := ep(id, "m")
		if _, err := registry.Claim(ctx, kv, e); err != nil {
			t.Fatal(err)
		}
		if _, err := registry.Release(ctx, kv, id, "m", registry.WithMarkerTTL(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := registry.Get(ctx, kv, "s0"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("released record: %v, want ErrNotFound", err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := msgs(); got != 1 {
			return fmt.Errorf("bucket holds %d messages after %d released records, want the 1 live one", got, n)
		}
		if table.Len() != 1 {
			return fmt.Errorf("table holds %d records, want 1", table.Len())
		}
		return nil
	})
	if _, err := registry.Release(ctx, kv, "live", "m", registry.WithMarkerTTL(time.Millisecond)); !errors.Is(err, registry.ErrInvalidOption) {
		t.Fatalf("sub-second marker ttl: %v, want ErrInvalidOption", err)
	}
}

// TestTableOnRemove: the hook hears of every record that is deleted or
// changes project (agui-proxy forgets its authorization decisions then),
// and of nothing else.
func TestTableOnRemove(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	var removed []string // guarded by mu
	tab := registry.NewTable(registry.WithOnRemove(func(id string) {
		mu.Lock()
		removed = append(removed, id)
		mu.Unlock()
	}))
	done := make(chan error, 1) // buffered: Run's result is read after cancel
	go func() { done <- tab.Run(ctx, kv) }()
	<-tab.Synced()
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), removed...)
	}
	rev, err := registry.Claim(ctx, kv, ep("a", "m1"))
	if err != nil {
		t.Fatal(err)
	}
	same := ep("a", "m1")
	same.Host, same.Port = "127.0.0.1", 9100
	if rev, err = registry.Register(ctx, kv, same, rev); err != nil {
		t.Fatal(err)
	}
	moved := same
	moved.ProjectID = "other"
	if _, err = registry.Register(ctx, kv, moved, rev); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if g := got(); len(g) != 1 || g[0] != "a" {
			return fmt.Errorf("removed %v after a project change, want [a]", g)
		}
		return nil
	})
	if _, err := registry.Release(ctx, kv, "a", "m1"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if g := got(); len(g) != 2 || g[1] != "a" {
			return fmt.Errorf("removed %v after a delete, want [a a]", g)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
