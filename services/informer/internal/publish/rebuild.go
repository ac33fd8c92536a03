package publish

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
)

// RebuildFloor is the owed floor (OwedKey) of a term that rebuilt its
// cache from the events stream (Rebuild) while the writes of the rebuilt
// entries are owed: the stream's very beginning. A new leader that finds
// it rebuilds again, however many entries the bucket got back before the
// term ended; a floor at the lowest rebuilt event's sequence would make it
// read the stream from there, every change of days of events, where
// Rebuild reads one message per object. A floor that is 1 for another
// reason (the first event of a new stream owed) asks for the same states
// from a read of the whole stream: a rebuild gives them too.
const RebuildFloor = 1

// Rebuild reads the last event of every subject of T's resource the
// events stream holds (bus.ReadLastPerSubject: one message per object)
// and returns the state each gives its object, as Tail does for the
// stream's tail: the states consumers were last sent, a DELETED included
// (an object whose last event is a DELETED is not in the published
// state). The informer rebuilds its cache this way when the objects
// bucket lacks what the stream says consumers have (the bucket lost while
// no informer ran: deleted, purged, a NATS server restarted without its
// store), so the diff against the listing announces the objects deleted
// meanwhile, whatever TailMargin.
//
// An object whose last event tells no state (a reference event, over the
// payload limit; a replayed dead letter) has its subject read whole: a
// reference comes as Ref with the last state that fitted (TailState.Fitted,
// what the lost bucket kept), a replayed dead letter with the state before
// it. Those are rare: objects over the payload limit, and replays.
//
// Objects whose events all aged out of the stream (its MaxAge) or were
// purged are not in the result: nothing tells what consumers last saw of
// them.
func Rebuild[T events.APIObject](ctx context.Context, p *Publisher) (map[string]TailState[T], error) {
	stream, err := p.js.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("rebuild from %s: %w", p.cfg.Stream, err)
	}
	out := map[string]TailState[T]{}
	res := events.ResourceOf[T]()
	// The object token of the subject of each object whose last event
	// tells no state.
	refs := map[string]string{}
	err = bus.ReadLastPerSubject(ctx, stream, events.FilterSubject(p.cfg.Prefix, res), func(m jetstream.Msg) {
		if id := apply(out, m); id != "" && out[id].Ref {
			refs[id] = m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]
		}
	})
	if err != nil {
		return nil, fmt.Errorf("rebuild from %s: %w", p.cfg.Stream, err)
	}
	for id, token := range refs {
		if !out[id].Ref {
			continue // a later event under another project told a state
		}
		// The object's whole history, read in order (under any project
		// token), ends with the same last event and knows what came
		// before it.
		delete(out, id)
		filter := p.cfg.Prefix + "." + events.ResourceToken(res) + ".*." + token
		if err := bus.ReadStream(ctx, stream, filter, 1, func(m jetstream.Msg) { apply(out, m) }); err != nil {
			return nil, fmt.Errorf("rebuild %s from %s: %w", id, p.cfg.Stream, err)
		}
	}
	return out, nil
}
