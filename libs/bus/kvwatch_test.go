package bus_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// breakableKV is a real bucket whose open watches the test can end, as a
// closed subscription would.
type breakableKV struct {
	jetstream.KeyValue
	mu      sync.Mutex
	watches []jetstream.KeyWatcher // guarded by mu
}

func (b *breakableKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := b.KeyValue.WatchAll(ctx, opts...)
	if err == nil {
		b.mu.Lock()
		b.watches = append(b.watches, w)
		b.mu.Unlock()
	}
	return w, err
}

// breakAll stops every watch opened so far.
func (b *breakableKV) breakAll(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, w := range b.watches {
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	b.watches = nil
}

func newBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// state is what a watcher rebuilds: key -> value of live keys.
type state struct {
	mu    sync.Mutex
	m     map[string]string // guarded by mu
	opens int               // guarded by mu: Initial calls
}

func (s *state) apply(m map[string]string, e jetstream.KeyValueEntry) {
	if e.Operation() == jetstream.KeyValuePut {
		m[e.Key()] = string(e.Value())
	} else {
		delete(m, e.Key())
	}
}

func (s *state) watch() bus.KVWatch {
	return bus.KVWatch{
		Initial: func(es []jetstream.KeyValueEntry) {
			m := map[string]string{}
			for _, e := range es {
				s.apply(m, e)
			}
			s.mu.Lock()
			s.m, s.opens = m, s.opens+1
			s.mu.Unlock()
		},
		Update: func(e jetstream.KeyValueEntry) {
			s.mu.Lock()
			s.apply(s.m, e)
			s.mu.Unlock()
		},
	}
}

func (s *state) want(t *testing.T, opens int, want map[string]string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.opens != opens || !maps.Equal(s.m, want) {
			return fmt.Errorf("after %d opens: %v, want %v after %d", s.opens, s.m, want, opens)
		}
		return nil
	})
}

// The initial values come first, then every change; a broken watch is
// reopened and delivers the values afresh, so a delete made while it was
// down is not missed.
func TestWatchKV(t *testing.T) {
	t.Parallel()
	kv := &breakableKV{KeyValue: newBucket(t)}
	ctx, cancel := context.WithCancel(t.Context())
	put := func(k, v string) {
		t.Helper()
		if _, err := kv.Put(t.Context(), k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "1")
	put("b", "1")
	var s state
	w := s.watch()
	broken := make(chan error, 1) // one break in this test
	w.Broken = func(err error, reopen time.Duration) {
		if reopen <= 0 || reopen > 5*time.Second {
			t.Errorf("reopen after %v", reopen)
		}
		// Changes while the watch is down (this is WatchKV's goroutine:
		// t.Error, not t.Fatal).
		if err := kv.Delete(t.Context(), "b"); err != nil {
			t.Error(err)
		}
		if _, err := kv.Put(t.Context(), "d", []byte("1")); err != nil {
			t.Error(err)
		}
		broken <- err
	}
	done := make(chan error, 1) // WatchKV's result, read below
	go func() { done <- bus.WatchKV(ctx, kv, w) }()
	s.want(t, 1, map[string]string{"a": "1", "b": "1"})
	put("c", "1")
	put("a", "2")
	s.want(t, 1, map[string]string{"a": "2", "b": "1", "c": "1"})

	kv.breakAll(t)
	if err := <-broken; !errors.Is(err, bus.ErrWatchClosed) {
		t.Fatalf("broken by %v, want ErrWatchClosed", err)
	}
	s.want(t, 2, map[string]string{"a": "2", "c": "1", "d": "1"})
	put("e", "1")
	s.want(t, 2, map[string]string{"a": "2", "c": "1", "d": "1", "e": "1"})

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("WatchKV = %v after cancel, want nil", err)
	}
	if err := bus.WatchKV(t.Context(), kv, bus.KVWatch{}); !errors.Is(err, bus.ErrInvalidConfig) {
		t.Fatalf("WatchKV without callbacks = %v, want ErrInvalidConfig", err)
	}
}

func TestReadKV(t *testing.T) {
	t.Parallel()
	kv := newBucket(t)
	ctx := t.Context()
	got, err := bus.ReadKV(ctx, kv)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty bucket: %v, %v; want an empty list", got, err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, err := kv.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	keys := func(es []jetstream.KeyValueEntry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Key()+":"+e.Operation().String())
		}
		return out
	}
	live, err := bus.ReadKV(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(keys(live)); got != "[a:KeyValuePutOp c:KeyValuePutOp]" {
		t.Fatalf("ReadKV = %s, want the live keys only", got)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := bus.ReadKV(cctx, kv); err == nil {
		t.Fatal("ReadKV with an ended ctx succeeded")
	}
}

// TestReadKVKeys: only the keys matching the filters are read, and an empty
// match is an empty list, not an error.
func TestReadKVKeys(t *testing.T) {
	t.Parallel()
	kv := newBucket(t)
	ctx := t.Context()
	for _, k := range []string{"sessions.a", "sessions.b", "projects.a"} {
		if _, err := kv.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := bus.ReadKVKeys(ctx, kv, []string{"sessions.*"}, jetstream.MetaOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range got {
		keys = append(keys, e.Key())
		if len(e.Value()) != 0 {
			t.Errorf("%s: value %q read with MetaOnly", e.Key(), e.Value())
		}
	}
	if fmt.Sprint(keys) != "[sessions.a sessions.b]" {
		t.Errorf("ReadKVKeys(sessions.*) = %v", keys)
	}
	none, err := bus.ReadKVKeys(ctx, kv, []string{"project_settings.*"})
	if err != nil || none == nil || len(none) != 0 {
		t.Errorf("no match: %v, %v; want an empty list", none, err)
	}
}

// TestReadKVWhileKeysChange: a read taken while other keys are written is
// complete. nats.go's watcher announces the end of the initial values once
// it has received as many messages as were pending at its creation; a key
// written meanwhile is delivered again later in the stream, so another
// key's newer value could stand in for it and the watcher ended without it
// (consumer groups then counted a live member dead, issue 15).
func TestReadKVWhileKeysChange(t *testing.T) {
	t.Parallel()
	kv := newBucket(t)
	ctx := t.Context()
	const keys = 8
	for i := range keys {
		if _, err := kv.Put(ctx, fmt.Sprint("k", i), []byte("0")); err != nil {
			t.Fatal(err)
		}
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() { // owned by the test: stopped and awaited below
			defer wg.Done()
			// Paced: every key rewritten every 5 ms, 1,000 times a
			// heartbeat's rate. Unpaced, thousands of writes a second to
			// eight keys can outlast ReadKV's rereads.
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
				}
				_, _ = kv.Put(wctx, fmt.Sprint("k", i), []byte(fmt.Sprint(n))) // errors only once stopped
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	for round := range 200 {
		es, err := bus.ReadKV(ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range es {
			seen[e.Key()] = true
		}
		if len(seen) != keys {
			t.Fatalf("read %d: %d of %d keys (%d entries)", round, len(seen), keys, len(es))
		}
	}
}

// TestWatchKVReopen: a watch replaced on purpose (Reopen's channel closes,
// or ReopenEvery passes) delivers the bucket afresh through Initial, without
// Broken: the caller keeps its state until the fresh values replace it.
func TestWatchKVReopen(t *testing.T) {
	t.Parallel()
	t.Run("signal", func(t *testing.T) {
		t.Parallel()
		kv := newBucket(t)
		var s state
		w := s.watch()
		w.Broken = func(err error, _ time.Duration) { t.Errorf("broken by %v: a reopen is no break", err) }
		handed := make(chan chan struct{}, 2) // the channels Reopen handed out
		w.Reopen = func() <-chan struct{} {
			ch := make(chan struct{})
			handed <- ch
			return ch
		}
		stop := watchInBackground(t, kv, w)
		s.want(t, 1, map[string]string{})
		if _, err := kv.Put(t.Context(), "a", []byte("1")); err != nil {
			t.Fatal(err)
		}
		s.want(t, 1, map[string]string{"a": "1"})
		close(<-handed)
		s.want(t, 2, map[string]string{"a": "1"})
		stop()
	})
	t.Run("every", func(t *testing.T) {
		t.Parallel()
		kv := newBucket(t)
		var s state
		w := s.watch()
		w.Broken = func(err error, _ time.Duration) { t.Errorf("broken by %v: a reopen is no break", err) }
		w.ReopenEvery = 100 * time.Millisecond
		stop := watchInBackground(t, kv, w)
		testenv.Eventually(t, 5*time.Second, func() error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.opens < 3 {
				return fmt.Errorf("%d opens, want 3 or more", s.opens)
			}
			return nil
		})
		stop()
	})
}

// watchInBackground runs WatchKV(kv, w) until the returned stop, which
// checks that it returned nil.
func watchInBackground(t *testing.T, kv jetstream.KeyValue, w bus.KVWatch) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1) // WatchKV's result, read by stop
	go func() { done <- bus.WatchKV(ctx, kv, w) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("WatchKV = %v after cancel, want nil", err)
		}
	}
}
