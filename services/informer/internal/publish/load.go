package publish

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// Loaded is the persisted cache of one resource.
type Loaded[T events.APIObject] struct {
	// Objects are the objects last published, one per key.
	Objects []T
	// Seqs are the event_seq of Objects' entries, index for index (0: the
	// entry has none).
	Seqs []uint64
	// Revs are the revisions of Objects' entries, index for index: what
	// the next write of each key expects (Revs).
	Revs []uint64
	// Bad counts entries that do not decode as a T. They are skipped: the
	// object is then published again as ADDED, which is harmless, where
	// failing would stop the informer for good.
	Bad int
	// Seq is the highest event_seq of the entries: the events-stream
	// sequence up to which KV has caught up, but for writes lost in flight
	// (see Tail). 0 when no entry has one.
	Seq uint64
	// Markers are keys whose latest entry is a delete marker that never
	// expires (written by kv.Delete before markers had a TTL); PurgeMarkers
	// turns them into expiring ones.
	Markers []Marker
}

// Marker is a key's delete marker at a revision.
type Marker struct {
	Key      string
	Revision uint64
}

// Load reads every object of T's resource from the objects bucket (the
// persisted cache).
func Load[T events.APIObject](ctx context.Context, kv jetstream.KeyValue) (Loaded[T], error) {
	res := events.ResourceOf[T]()
	var out Loaded[T]
	w, err := kv.Watch(ctx, events.ResourceToken(res)+".*")
	if err != nil {
		return out, fmt.Errorf("watch %s keys: %w", events.ResourceToken(res), err)
	}
	defer func() { _ = w.Stop() }() // best effort; the consumer is ephemeral
	for {
		select {
		case <-ctx.Done():
			return Loaded[T]{}, fmt.Errorf("load %s: %w", events.ResourceToken(res), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return Loaded[T]{}, fmt.Errorf("load %s: watcher closed", events.ResourceToken(res))
			}
			if e == nil { // all current values delivered
				return out, nil
			}
			switch e.Operation() {
			case jetstream.KeyValueDelete:
				out.Markers = append(out.Markers, Marker{Key: e.Key(), Revision: e.Revision()})
				continue
			case jetstream.KeyValuePurge:
				continue // our own markers: they expire
			}
			o := &eventsv1.Object{}
			if err := proto.Unmarshal(e.Value(), o); err != nil {
				out.Bad++
				continue
			}
			out.Seq = max(out.Seq, o.GetEventSeq())
			t, ok := events.Unwrap[T](o)
			if !ok {
				out.Bad++
				continue
			}
			out.Objects = append(out.Objects, t)
			out.Seqs = append(out.Seqs, o.GetEventSeq())
			out.Revs = append(out.Revs, e.Revision())
		}
	}
}

// PurgeMarkers replaces the given delete markers with markers that expire
// after MarkerTTL, and returns how many it replaced before an error. Each
// purge expects the marker to still be the key's latest entry: a key
// written meanwhile is left alone.
func (p *Publisher) PurgeMarkers(ctx context.Context, markers []Marker) (int, error) {
	if p.cfg.MarkerTTL <= 0 {
		return 0, nil
	}
	for i, m := range markers {
		err := p.kv.Purge(ctx, m.Key, jetstream.LastRevision(m.Revision), jetstream.PurgeTTL(p.cfg.MarkerTTL))
		if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return i, fmt.Errorf("purge marker %s: %w", m.Key, err)
		}
	}
	return len(markers), nil
}
