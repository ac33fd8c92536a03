package memapi

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// watch serves one watch stream the way the real server does: no snapshot,
// no headers until the first event (SendHeader is never called; the first
// Send carries them), CREATED/UPDATED carry the object read when the event is
// sent (an object deleted by then makes the event vanish), DELETED carries
// only the id, and a full buffer drops events silently. The stream ends with
// a clean EOF after EndWatches or shutdown.
func watch[T object, E any](s *Server, st *store[T], stream grpc.ServerStreamingServer[E],
	mk func(typ ambientv1.EventType, obj T, id string) *E,
) error {
	w := s.broker.add(s.opts.watchBuffer)
	if w == nil {
		return nil // shutting down: clean EOF
	}
	defer s.broker.remove(w)
	// An outage that began between the interceptor's check and the
	// registration ended the streams before this one joined: refuse it as
	// the interceptor would have.
	if err := s.refuseInOutage(); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		// Ending wins over queued events, like a dropped connection.
		select {
		case <-w.end:
			return nil
		default:
		}
		var c change
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-w.end:
			return nil
		case c = <-w.ch:
		}
		if c.kind != st.kind {
			// Another resource's change took a place in this stream's
			// buffer until now; the real server skips it here too.
			s.watch.pending.Add(-1)
			continue
		}
		if !s.waitSendDelay(ctx, w.end) {
			s.watch.pending.Add(-1)
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return nil
		}
		var ev *E
		if c.typ == ambientv1.EventType_EVENT_TYPE_DELETED {
			var zero T
			ev = mk(c.typ, zero, c.id)
		} else {
			obj, ok := st.getView(c.id)
			if !ok {
				s.watch.pending.Add(-1)
				continue // deleted before the send: the event vanishes
			}
			ev = mk(c.typ, obj, c.id)
		}
		err := stream.Send(ev)
		if err == nil {
			// Counted sent before it stops being pending, so a reader
			// never sees it in neither count.
			s.watch.sent.Add(1)
		}
		s.watch.pending.Add(-1)
		if err != nil {
			return err
		}
	}
}
