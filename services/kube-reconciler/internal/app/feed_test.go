package app

import (
	"context"
	"errors"
	"io"
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

// feed is a minimal informer for tests: it watches one resource of the
// in-memory API, lists it, and publishes every change as a ResourceEvent
// (then stores the object in KV ambient-objects), like services/informer.
// It runs until ctx ends.
func feed[T events.APIObject, E any, PE interface {
	*E
	watchEvent
}](ctx context.Context, t testing.TB, js jetstream.JetStream, kv jetstream.KeyValue,
	open func(context.Context) (grpc.ServerStreamingClient[E], error), list func(context.Context) ([]T, error), objOf func(PE) T) {
	t.Helper()
	cache := map[string]T{}
	publish := func(typ eventsv1.EventType, obj, old T) {
		ev := events.NewEvent(typ, obj, old, time.Now())
		msg, err := events.NewMsg(ctx, events.SubjectPrefix, ev)
		if err != nil {
			t.Errorf("feed: build message: %v", err)
			return
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			if ctx.Err() == nil {
				t.Errorf("feed: publish: %v", err)
			}
			return
		}
		key := events.ObjectKey(ev.GetResource(), ev.GetObjectId())
		if typ == eventsv1.EventType_EVENT_TYPE_DELETED {
			err = kv.Delete(ctx, key)
		} else {
			var b []byte
			if b, err = proto.Marshal(events.Wrap(obj)); err == nil {
				_, err = kv.Put(ctx, key, b)
			}
		}
		if err != nil && ctx.Err() == nil {
			t.Errorf("feed: kv: %v", err)
		}
	}
	for ctx.Err() == nil {
		stream, err := open(ctx)
		if err != nil {
			continue
		}
		items, err := list(ctx)
		if err != nil {
			continue
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
			raw, err := stream.Recv()
			e := PE(raw)
			if err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					t.Logf("feed: watch ended: %v", err)
				}
				break
			}
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
					continue
				}
				id = o.GetMetadata().GetId()
				old, known = cache[id]
				if known && proto.Equal(old, o) {
					continue
				}
				typ := eventsv1.EventType_EVENT_TYPE_ADDED
				if known {
					typ = eventsv1.EventType_EVENT_TYPE_MODIFIED
				}
				publish(typ, o, old)
				cache[id] = o
			}
		}
	}
}
