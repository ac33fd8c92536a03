package publish

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// Load reads every object of T's resource from the objects bucket (the
// persisted cache). Entries that do not decode as a T are skipped and
// counted in bad: the object is then published again as ADDED, which is
// harmless, where failing would stop the informer for good.
func Load[T events.APIObject](ctx context.Context, kv jetstream.KeyValue) (objs []T, bad int, err error) {
	res := events.ResourceOf[T]()
	w, err := kv.Watch(ctx, events.ResourceToken(res)+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, 0, fmt.Errorf("watch %s keys: %w", events.ResourceToken(res), err)
	}
	defer func() { _ = w.Stop() }() // best effort; the consumer is ephemeral
	for {
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("load %s: %w", events.ResourceToken(res), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, 0, fmt.Errorf("load %s: watcher closed", events.ResourceToken(res))
			}
			if e == nil { // all current values delivered
				return objs, bad, nil
			}
			o := &eventsv1.Object{}
			if err := proto.Unmarshal(e.Value(), o); err != nil {
				bad++
				continue
			}
			t, ok := events.Unwrap[T](o)
			if !ok {
				bad++
				continue
			}
			objs = append(objs, t)
		}
	}
}
