package publish

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// streamNotFound is JetStream's answer to the info request of a stream
// that does not exist.
const streamNotFound = `{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"}}`

// TestConcurrentLookupsShareOne: JetStream stops while the connection
// stays up, and every worker asks at once whether the stream and the
// bucket are gone (controller's goneError after a no-responders answer).
// A subscriber to the stream info requests stands for a JetStream that
// takes them but does not answer yet (a cluster electing its meta leader,
// a loaded server): every worker would wait for its own request, up to
// its bound, in its publish path. Concurrent callers share one lookup:
// one request however many callers, a caller that gives up does not end
// it for the others, and the answer, once it comes, confirms the store
// gone (bus.StoreGone) for a caller that waits for it.
func TestConcurrentLookupsShareOne(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EV", Subjects: []string{"ev.>"}}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.NATS().ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var requests []*nats.Msg // guarded by mu; the info requests received
	answer := false          // guarded by mu; answer requests as they come
	sub, err := nc.Subscribe("$JS.API.STREAM.INFO.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		requests = append(requests, m)
		if answer {
			_ = m.Respond([]byte(streamNotFound)) // the requester's timeout reports a lost answer
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() }) // best effort: the connection closes too
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	received := func() []string {
		mu.Lock()
		defer mu.Unlock()
		subjects := make([]string, 0, len(requests))
		for _, m := range requests {
			subjects = append(subjects, m.Subject)
		}
		return subjects
	}

	// Hang guard only: the shared lookup ends when it is answered.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	const workers = 16
	var started, done sync.WaitGroup
	started.Add(workers)
	errs := make(chan error, workers)
	for range workers {
		done.Go(func() {
			started.Done()
			errs <- p.Lookup(wctx)
		})
	}
	started.Wait()
	testenv.Eventually(t, 30*time.Second, func() error {
		if len(received()) == 0 {
			return errors.New("no lookup request yet")
		}
		return nil
	})
	// Every worker gives up (its term ended); the request stays held, so
	// a worker that reaches Lookup only now still finds it in flight.
	cancel()
	done.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("a worker's lookup: %v, want its context's end", err)
		}
	}
	if got := received(); len(got) != 1 {
		t.Fatalf("%d workers sent %d lookup requests %v, want one shared", workers, len(got), got)
	}

	// The answer comes: a caller now gets the shared lookup's, or a new
	// one's, and both streams read as gone.
	mu.Lock()
	answer = true
	held := requests[0]
	mu.Unlock()
	if err := held.Respond([]byte(streamNotFound)); err != nil {
		t.Fatal(err)
	}
	if err := p.Lookup(ctx); !bus.StoreGone(err) {
		t.Fatalf("lookup answered not found: %v, want bus.StoreGone", err)
	}
}
