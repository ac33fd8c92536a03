package publish

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	// Outdated are the entries written before the events stream was
	// created (LoadSince): the stream they name was lost and recreated
	// since, so consumers of this one were never sent their states, while
	// consumers of the lost one may still hold them (an object deleted
	// meanwhile must be announced as deleted). They are not in Objects,
	// nor in Seq: their event_seq names the lost stream.
	Outdated []Outdated[T]
	// Markers are keys whose latest entry is a delete marker that never
	// expires (written by kv.Delete before markers had a TTL); PurgeMarkers
	// turns them into expiring ones.
	Markers []Marker
}

// Outdated is an entry older than the events stream (Loaded.Outdated):
// Object, at revision Rev (what the key's next write expects).
type Outdated[T events.APIObject] struct {
	Object T
	Rev    uint64
}

// ID is the id of the entry's object.
func (o Outdated[T]) ID() string { return o.Object.GetMetadata().GetId() }

// Marker is a key's delete marker at a revision.
type Marker struct {
	Key      string
	Revision uint64
}

// Load reads every object of T's resource from the objects bucket (the
// persisted cache).
func Load[T events.APIObject](ctx context.Context, kv jetstream.KeyValue) (Loaded[T], error) {
	return LoadSince[T](ctx, kv, time.Time{})
}

// LoadSince is Load for the events stream created at since
// (Publisher.StreamCreated): an entry written before it (the server's
// time of the entry) is Outdated. Each entry is written after its event's
// ack, so every entry of this stream's events is younger than the stream;
// an older one names an event of a stream lost since (deleted, or lost
// with a server's store while the objects bucket survived). Laid over
// the cache as published, such entries made the new leader diff the API
// against states the recreated stream never carried: the objects that
// did not change were never published into it, and a consumer group
// created on it, or rebuilding from it, missed them.
func LoadSince[T events.APIObject](ctx context.Context, kv jetstream.KeyValue, since time.Time) (Loaded[T], error) {
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
			t, ok := events.Unwrap[T](o)
			if !ok {
				out.Bad++
				continue
			}
			if e.Created().Before(since) {
				out.Outdated = append(out.Outdated, Outdated[T]{Object: t, Rev: e.Revision()})
				continue
			}
			out.Seq = max(out.Seq, o.GetEventSeq())
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

// StreamCreated returns when the events stream was created, as the
// server recorded it (LoadSince, ReadOwedSince).
func (p *Publisher) StreamCreated(ctx context.Context) (time.Time, error) {
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return time.Time{}, fmt.Errorf("look up %s: %w", p.cfg.Stream, err)
	}
	return s.CachedInfo().Created, nil
}
