package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// objectReader is what the event path reads of KV ambient-objects: one
// object.
type objectReader interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
}

var _ objectReader = (jetstream.KeyValue)(nil)

// stored returns the informer's latest object for (res, id) from KV
// ambient-objects (a proto-encoded eventsv1.Object), or nil when there is none
// (never seen, or deleted).
func stored(ctx context.Context, kv objectReader, res eventsv1.Resource, id string) (*eventsv1.Object, error) {
	key := events.ObjectKey(res, id)
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	o := &eventsv1.Object{}
	if err := proto.Unmarshal(e.Value(), o); err != nil || events.ResourceOfObject(o) != res {
		return nil, fmt.Errorf("decode %s: %w", key, events.ErrBadEvent)
	}
	return o, nil
}

// newest decides what to reconcile for ev: the event's object, or the KV
// object when that is strictly newer (a later event is already in the cache).
// deleted is true only for a DELETED event not overtaken by a newer object (a
// project deleted and created again under the same id). It never goes back to
// an older state than the event's.
func newest(ctx context.Context, kv objectReader, ev *eventsv1.ResourceEvent) (obj *eventsv1.Object, deleted bool, err error) {
	cur, err := stored(ctx, kv, ev.GetResource(), ev.GetObjectId())
	if err != nil && !errors.Is(err, events.ErrBadEvent) {
		return nil, false, err
	}
	if cur != nil && events.Newer(events.Version(events.UpdatedAt(cur), events.Message(cur)), ev.GetVersion()) {
		return cur, false, nil
	}
	return ev.GetObject(), ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED, nil
}
