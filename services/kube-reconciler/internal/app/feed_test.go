package app

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// watchEvent is what the three Watch* streams deliver.
type watchEvent interface {
	GetType() ambientv1.EventType
	GetResourceId() string
}

// feedCounts follows the feed's watch events for harness.quiesce: how many
// it received, and how many of those (and of the listed objects it
// publishes) are not yet acked by JetStream, event and KV entry both.
type feedCounts struct {
	received  atomic.Int64
	unsettled atomic.Int64
}

// feed is a minimal informer for tests: it watches one resource of the
// in-memory API, lists it, and publishes every change as a ResourceEvent
// (then stores the object in KV ambient-objects), like services/informer.
// It runs until ctx ends, and keeps counts up to date.
func feed[T events.APIObject, E any, PE interface {
	*E
	watchEvent
}](ctx context.Context, t testing.TB, js jetstream.JetStream, kv jetstream.KeyValue, counts *feedCounts,
	open func(context.Context) (grpc.ServerStreamingClient[E], error), list func(context.Context) ([]T, error), objOf func(PE) T) {
	t.Helper()
	cache := map[string]T{}
	// Publishes are pipelined, like services/informer's workers: each
	// event and then its KV entry are sent asynchronously, in order on one
	// connection, so one object's event and entry keep their order and
	// many objects are in flight at once; a checker reports failed acks.
	// Waiting for two acks per event in turn made this feed, not the
	// reconciler, the bottleneck of BenchmarkEndToEnd1000. The KV entry may
	// be stored before its event: the reconciler reads the newer of the
	// two, and both orders occur with the real informer's retries.
	futures := make(chan jetstream.PubAckFuture, 1<<16)
	checked := make(chan struct{})
	defer func() { <-checked }() // feed returns once ctx ended; so does the checker
	go func() {
		defer close(checked)
		for {
			select {
			case <-ctx.Done():
				return
			case f := <-futures:
				select {
				case <-ctx.Done():
					return
				case <-f.Ok():
				case err := <-f.Err():
					if ctx.Err() == nil {
						t.Errorf("feed: publish %s: %v", f.Msg().Subject, err)
					}
				}
				counts.unsettled.Add(-1)
			}
		}
	}()
	// sendAsync makes one asynchronous publish and hands its ack to the
	// checker. It counts the publish as unsettled before making it (the
	// checker settles it), so quiesce never sees it in neither place.
	sendAsync := func(publish func() (jetstream.PubAckFuture, error)) error {
		counts.unsettled.Add(1)
		f, err := publish()
		if err != nil {
			counts.unsettled.Add(-1)
			return err
		}
		futures <- f
		return nil
	}
	kvSubject := "$KV." + kv.Bucket() + "."
	publish := func(typ eventsv1.EventType, obj, old T) {
		ev := events.NewEvent(typ, obj, old, time.Now())
		msg, err := events.NewMsg(ctx, events.SubjectPrefix, ev)
		if err != nil {
			t.Errorf("feed: build message: %v", err)
			return
		}
		if err := sendAsync(func() (jetstream.PubAckFuture, error) { return js.PublishMsgAsync(msg) }); err != nil {
			if ctx.Err() == nil {
				t.Errorf("feed: publish: %v", err)
			}
			return
		}
		key := events.ObjectKey(ev.GetResource(), ev.GetObjectId())
		if typ == eventsv1.EventType_EVENT_TYPE_DELETED {
			err = kv.Delete(ctx, key) // rare; synchronous, after what was sent before
		} else {
			var b []byte
			if b, err = proto.Marshal(events.Wrap(obj)); err == nil {
				err = sendAsync(func() (jetstream.PubAckFuture, error) { return js.PublishAsync(kvSubject+key, b) })
			}
		}
		if err != nil && ctx.Err() == nil {
			t.Errorf("feed: kv: %v", err)
		}
	}
	type received struct {
		ev  PE
		err error
	}
	// handle publishes what one watch event changed.
	handle := func(e PE) {
		id := e.GetResourceId()
		old, known := cache[id]
		switch e.GetType() {
		case ambientv1.EventType_EVENT_TYPE_DELETED:
			if known {
				publish(eventsv1.EventType_EVENT_TYPE_DELETED, old, old)
				delete(cache, id)
			}
		default:
			o := objOf(e)
			if o.GetMetadata() == nil {
				return
			}
			id = o.GetMetadata().GetId()
			old, known = cache[id]
			if known && proto.Equal(old, o) {
				return
			}
			typ := eventsv1.EventType_EVENT_TYPE_ADDED
			if known {
				typ = eventsv1.EventType_EVENT_TYPE_MODIFIED
			}
			publish(typ, o, old)
			cache[id] = o
		}
	}
	for ctx.Err() == nil {
		func() {
			sctx, cancel := context.WithCancel(ctx)
			defer cancel() // ends the stream and its receiver on every exit
			stream, err := open(sctx)
			if err != nil {
				return
			}
			// Receive apart from publishing, like the real informer: the API
			// drops events for a reader that falls behind, and publishing each
			// event (ack + KV write) is slower than a burst of creates. The
			// buffer is far larger than any test's burst; the goroutine ends
			// with the stream (ctx ends it).
			recv := make(chan received, 1<<16)
			recvDone := make(chan struct{})
			// Runs first of the deferred calls: events received and not
			// handled are abandoned, as the real informer abandons them when
			// its watch ends (the relist covers them), so they stop counting.
			defer func() {
				cancel()
				<-recvDone
				for len(recv) > 0 {
					if r := <-recv; r.err == nil {
						counts.unsettled.Add(-1)
					}
				}
			}()
			go func() {
				defer close(recvDone)
				for {
					raw, err := stream.Recv()
					if err == nil {
						// Unsettled first: quiesce reads received, then
						// unsettled, and must not see it in neither.
						counts.unsettled.Add(1)
						counts.received.Add(1)
					}
					recv <- received{ev: PE(raw), err: err}
					if err != nil {
						return
					}
				}
			}()
			items, err := list(sctx)
			if err != nil {
				return
			}
			for _, o := range items {
				id := o.GetMetadata().GetId()
				old, known := cache[id]
				switch {
				case !known:
					publish(eventsv1.EventType_EVENT_TYPE_ADDED, o, old)
				case !proto.Equal(old, o):
					publish(eventsv1.EventType_EVENT_TYPE_MODIFIED, o, old)
				}
				cache[id] = o
			}
			for {
				r := <-recv
				e, err := r.ev, r.err
				if err != nil {
					if !errors.Is(err, io.EOF) && ctx.Err() == nil {
						t.Logf("feed: watch ended: %v", err)
					}
					return
				}
				handle(e)
				counts.unsettled.Add(-1) // what it published is counted on its own
			}
		}()
	}
}
