package publish

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// TailMargin is how far before the persisted cache's position (Loaded.Seq)
// the stream's tail is read (Config.TailMargin overrides it for tests).
// KV writes go out asynchronously after their event's ack, so when a term
// ends (lease lost, NATS gone) the writes still in flight, at most
// kvWindow per resource and nats.go's async publish window of 4,000 per
// connection, may be lost while later ones landed: their events lie within
// this many sequences before the highest landed. A write that failed and
// is still owed can lie further back: the owed floor covers it (OwedKey).
const TailMargin = 8192

// TailState is the newest state of one object the stream's tail names.
type TailState[T events.APIObject] struct {
	// Object is the state published, nil when Deleted or Ref.
	Object  T
	Deleted bool
	// Ref is set when the event is a reference (over the payload limit)
	// or a replayed dead letter of an object the tail holds no earlier
	// event of: it tells no state, only Seq, and that consumers have the
	// object (diff.Store.LoadRef).
	Ref bool
	// Fitted is, for a Ref, the newest state an earlier event of the
	// object read with it carried whole (nil: none since its last
	// DELETED): what the objects bucket keeps of an object over the
	// payload limit, found again by Rebuild.
	Fitted T
	// Version is the version a reference event names ("" for a replayed
	// dead letter: a copy of an older event).
	Version string
	// Seq is the stream sequence of the event (0: unknown): the sequence
	// the object's next event expects as its subject's last (Publish).
	Seq uint64
}

// Tail reads the events of T's resource the stream holds from TailMargin
// before seq (the persisted cache's position; 0 when unknown: the last
// TailMargin sequences), or from owed when that is earlier (the owed
// floor, ReadOwed; 0: none), to its end, and returns the newest state each
// object was published with. An object's last event in the stream is never
// older than its KV entry (KV is written after the ack), so laying the
// result over KV gives what consumers last saw, including the changes whose
// KV write a previous term lost: without it, an object whose ADDED landed
// in the stream but not in KV, deleted before the next leader lists, would
// never be announced as DELETED. Objects whose last event is a reference
// (over the payload limit) come as Ref, without a state but with the
// version it names: KV keeps their last state that fitted (or none), and
// the leader publishes nothing while the object is at that version, and a
// MODIFIED (never an ADDED) expecting the reference's sequence once it
// changed.
func Tail[T events.APIObject](ctx context.Context, p *Publisher, seq, owed uint64) (map[string]TailState[T], error) {
	stream, err := p.js.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("read the tail of %s: %w", p.cfg.Stream, err)
	}
	state := stream.CachedInfo().State
	out := map[string]TailState[T]{}
	start := tailStart(seq, owed, state.FirstSeq, state.LastSeq, p.cfg.TailMargin)
	if start == 0 {
		return out, nil
	}
	filter := events.FilterSubject(p.cfg.Prefix, events.ResourceOf[T]())
	if err := bus.ReadStream(ctx, stream, filter, start, func(m jetstream.Msg) { apply(out, m) }); err != nil {
		return nil, fmt.Errorf("read the tail: %w", err)
	}
	return out, nil
}

// tailStart is the first sequence to read (0: nothing to read) for a cache
// at position seq, with writes owed from sequence owed on (0: none), of a
// stream holding first..last, margin sequences before the position.
func tailStart(seq, owed, first, last, margin uint64) uint64 {
	if last == 0 {
		return 0
	}
	next := seq + 1
	if seq == 0 || seq > last {
		// Position unknown (an older informer wrote KV), or of another
		// stream (recreated since): read the last margin.
		next = last + 1
	}
	start := uint64(1)
	if next > margin {
		start = next - margin
	}
	if owed > 0 && owed <= last {
		// A floor past the stream's end is of another stream: ignored,
		// like such a position.
		start = min(start, owed)
	}
	return max(start, first)
}

// replayed reports whether a message with header h is a dead letter
// published again on the events stream for one consumer group
// (group.HeaderReplayGroup, group.Replay): a copy of an older event of the
// object, on its subject, that changes nothing for anybody else.
func replayed(h nats.Header) bool { return h.Get(group.HeaderReplayGroup) != "" }

// apply records the state msg's event gives its object and returns the
// object's id; undecodable events (never published by an informer) are
// skipped (""). A replayed dead letter (group.HeaderReplayGroup) gives no
// state, only the sequence the object's next event must follow.
func apply[T events.APIObject](out map[string]TailState[T], msg jetstream.Msg) string {
	_, ev, err := events.Decode(context.Background(), msg.Headers(), msg.Data())
	var seq uint64
	if md, merr := msg.Metadata(); merr == nil {
		seq = md.Sequence.Stream
	}
	if (err == nil || errors.Is(err, events.ErrObjectTooLarge)) && replayed(msg.Headers()) {
		// A copy of an older event, for one consumer group: the object's
		// state is the one before it, its sequence the subject's last.
		st, ok := out[ev.GetObjectId()]
		if !ok {
			st = TailState[T]{Ref: true}
		}
		st.Seq = seq
		out[ev.GetObjectId()] = st
		return ev.GetObjectId()
	}
	switch {
	case errors.Is(err, events.ErrObjectTooLarge):
		// The state consumers had before stays what KV keeps.
		prev := out[ev.GetObjectId()]
		fitted := prev.Object
		if prev.Ref {
			fitted = prev.Fitted
		}
		out[ev.GetObjectId()] = TailState[T]{Ref: true, Version: ev.GetVersion(), Seq: seq, Fitted: fitted}
		return ev.GetObjectId()
	case err != nil:
		return ""
	}
	if ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED {
		out[ev.GetObjectId()] = TailState[T]{Deleted: true, Seq: seq}
		return ev.GetObjectId()
	}
	obj, ok := events.Unwrap[T](ev.GetObject())
	if !ok {
		return ""
	}
	out[ev.GetObjectId()] = TailState[T]{Object: obj, Seq: seq}
	return ev.GetObjectId()
}
