package queue

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestQueueCoalescesAndKeepsOrder(t *testing.T) {
	t.Parallel()
	q := New[string]()
	for _, k := range []string{"a", "b", "a", "c", "b"} {
		q.Add(k)
	}
	if got := q.Len(); got != 3 {
		t.Fatalf("Len = %d, want 3", got)
	}
	ctx := t.Context()
	for _, want := range []string{"a", "b", "c"} {
		got, err := q.Get(ctx)
		if err != nil || got != want {
			t.Fatalf("Get = %q, %v; want %q", got, err, want)
		}
		q.Done(got)
	}
}

func TestQueueReaddWhileProcessing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		readds  int
		wantLen int
	}{
		{name: "no readd", readds: 0, wantLen: 0},
		{name: "one readd", readds: 1, wantLen: 1},
		{name: "many readds coalesce", readds: 5, wantLen: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := New[int]()
			q.Add(1)
			k, err := q.Get(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for range tc.readds {
				q.Add(k)
			}
			if got := q.Len(); got != 0 {
				t.Fatalf("Len while processing = %d, want 0 (never handed out twice)", got)
			}
			q.Done(k)
			if got := q.Len(); got != tc.wantLen {
				t.Fatalf("Len after Done = %d, want %d", got, tc.wantLen)
			}
		})
	}
}

func TestQueueNoConcurrentProcessingOfAKey(t *testing.T) {
	t.Parallel()
	q := New[int]()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	active := map[int]bool{} // guarded by mu
	counts := map[int]int{}  // guarded by mu
	var wg sync.WaitGroup
	errs := make(chan error, 8) // one per worker at most
	for range 8 {
		wg.Add(1)
		go func() { // owned by this test; exits on ShutDown
			defer wg.Done()
			for {
				k, err := q.Get(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				if active[k] {
					errs <- errors.New("key handed to two workers")
				}
				active[k] = true
				counts[k]++
				mu.Unlock()
				mu.Lock()
				active[k] = false
				mu.Unlock()
				q.Done(k)
			}
		}()
	}
	for i := range 10000 {
		q.Add(i % 10)
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() > 0 && time.Now().Before(deadline) {
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(time.Millisecond):
		}
	}
	q.ShutDown()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func TestQueueShutDownAndContext(t *testing.T) {
	t.Parallel()
	q := New[string]()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := q.Get(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get on cancelled ctx: err = %v, want context.Canceled", err)
	}
	q.AddAfter("x", time.Hour)
	q.ShutDown()
	q.ShutDown()
	q.Add("y")
	if _, err := q.Get(t.Context()); !errors.Is(err, ErrShutDown) {
		t.Fatalf("Get after ShutDown: err = %v, want ErrShutDown", err)
	}
}

func TestQueueAddAfter(t *testing.T) {
	t.Parallel()
	q := New[string]()
	q.AddAfter("x", 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	k, err := q.Get(ctx)
	if err != nil || k != "x" {
		t.Fatalf("Get = %q, %v; want x", k, err)
	}
}

func BenchmarkQueueAddGetDone(b *testing.B) {
	q := New[int]()
	ctx := b.Context()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q.Add(i % 1024)
		k, err := q.Get(ctx)
		if err != nil {
			b.Fatal(err)
		}
		q.Done(k)
		i++
	}
}
