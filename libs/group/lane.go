package group

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// A lane holds one object's messages in stream order and handles them one
// batch at a time (one message, or with Config.Coalesce everything queued
// up to a missing older message, see untilGap) on its own goroutine, so a
// slow or failing object holds back only its own later messages. A failed try is retried inside the lane after the
// backoff, the message kept unacked and renewed meanwhile (keepalive): a
// naked message would no longer block the object's later ones now that
// the consumer hands out many at a time, so they could overtake it. A
// lane holds a handler slot (worker.slots) only while a try runs, so
// lanes waiting out a backoff do not hold the member's other objects back.
type lane struct {
	key string // the object's id token
	// queue is sorted by stream sequence each time the lane takes its next
	// batch (see order.go); the head batch is being handled. Guarded by
	// worker.mu.
	queue []*entry
	// wake gets a value (capacity 1, never blocking) when deliver files a
	// message in the lane: a head waiting for an older message looks again.
	wake chan struct{}
	// waiting is set from a failed try to the next (the lane waits out
	// its backoff): its held messages then use the consumer's head-room
	// (see park). Guarded by worker.mu.
	waiting bool
}

// newLane returns the lane of the object key, holding e.
func newLane(key string, e *entry) *lane {
	return &lane{key: key, queue: []*entry{e}, wake: make(chan struct{}, 1)}
}

// file appends e to the lane's queue and wakes a waiting head. Caller
// holds worker.mu.
func (l *lane) file(e *entry) {
	l.queue = append(l.queue, e)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// connectedPoll is how often a lane looks whether the connection is back
// before it starts a handler call.
const connectedPoll = 50 * time.Millisecond

// Ack retry (see ack): from ackRetryMin, doubling to ackRetryMax.
const (
	ackRetryMin = 50 * time.Millisecond
	ackRetryMax = time.Second
)

// errReleased ends a lane's work on a message without settling it: the
// member stops, or the object's partition moved.
var errReleased = errors.New("event released")

// deadError is a try that ends in the dead-letter queue.
type deadError struct {
	reason string
	err    error
}

func (e *deadError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *deadError) Unwrap() error { return e.err }

// runLane handles l's messages until its queue is empty, or releases them
// all when the member stops (runCtx) or the partition moves (lctx).
func (w *worker) runLane(runCtx, lctx context.Context, cancel context.CancelCauseFunc, f *flight, l *lane) {
	defer w.gate.leave()
	defer cancel(nil)
	defer w.own.end(f)
	var older olderWait
	for {
		batch := w.next(l)
		if batch == nil {
			return
		}
		if runCtx.Err() == nil && lctx.Err() == nil && w.waitForOlder(runCtx, lctx, f, l, batch[0], &older) {
			continue
		}
		batch = w.untilGap(lctx, f, batch)
		if runCtx.Err() != nil || lctx.Err() != nil || !w.handle(runCtx, lctx, f, l, batch) {
			w.releaseLane(lctx, l)
			return
		}
	}
}

// next returns the lane's next batch, oldest first, or nil after removing
// the lane when its queue is empty (under mu, so deliver never files into a
// lane whose goroutine has ended). Every message of the previous batch is
// settled by now, so sorting moves none that is being handled.
func (w *worker) next(l *lane) []*entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(l.queue) == 0 {
		delete(w.lanes, l.key)
		return nil
	}
	slices.SortStableFunc(l.queue, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	if w.cfg.Coalesce {
		return slices.Clone(l.queue)
	}
	return []*entry{l.queue[0]}
}

// handle settles one batch and reports false when the lane must be
// released instead (stop, partition moved).
func (w *worker) handle(runCtx, lctx context.Context, f *flight, l *lane, batch []*entry) bool {
	// Messages the handler does not get are settled (sortOut); the rest
	// are handled by one call with the newest (coalescing).
	b := &callBatch{}
	defer w.endParked(b)
	for _, e := range batch {
		ctx, got, ok := w.sortOut(runCtx, lctx, l, e)
		if !ok {
			return false
		}
		if got != nil {
			b.add(ctx, e, got)
		}
	}
	if len(b.items) == 0 {
		return true
	}
	newest := b.newest()
	log := w.log.With(slog.String(logkey.Subject, newest.subject), slog.Uint64(logkey.Seq, newest.seq),
		slog.String(logkey.Resource, events.ResourceToken(b.ev.GetResource())),
		slog.String(logkey.ProjectID, b.ev.GetProjectId()), slog.String(logkey.ObjectID, b.ev.GetObjectId()),
		slog.String(logkey.EventID, b.ev.GetEventId()))

	attempt, err := w.try(runCtx, lctx, f, l, b, log)
	items, ev, hctx, newest := b.items, b.ev, b.hctx, b.newest()
	var dead *deadError
	switch {
	case err == nil && !w.own.movedAway(f):
		for _, e := range items {
			if e.parked {
				w.cfg.Stats.acked.Add(1) // its ack was confirmed when it was parked
				continue
			}
			if !w.ack(lctx, l, e, log) && lctx.Err() != nil {
				return false
			}
		}
		w.cfg.Stats.coalesced.Add(uint64(len(items) - 1))
		log.Debug("event handled", slog.Int(logkey.Count, len(items)))
		return true
	case errors.As(err, &dead):
		m := Message{Event: ev, Subject: newest.subject, Header: w.current(newest).Headers(),
			Attempt: attempt, Seq: newest.seq, Coalesced: len(items) - 1}
		dctx, span := w.startDeadLetterSpan(hctx, m, f.partition, b.from.links(), dead.reason)
		defer endConsumerSpan(span, dead.err)
		for _, e := range items {
			if !w.deadLetter(runCtx, lctx, l, e, attempt, dead.reason, dead.err, ev.GetProjectId()) {
				// Released before its dead letter was stored: parked work
				// is no longer on the server.
				w.republishParked(lctx, l, b, log)
				return false
			}
		}
		w.onDeadLetter(dctx, m, dead.reason, dead.err, log)
		return true
	default:
		// Stopping, or the partition moved: whatever the handler
		// returned, the next owner handles the event again, so neither an
		// ack nor a retry of ours may count.
		if w.own.movedAway(f) {
			log.Info("event released: partition moved", slog.Any(logkey.Err, err))
		} else {
			log.Info("event released on stop", slog.Any(logkey.Err, err))
		}
		w.republishParked(lctx, l, b, log)
		return false
	}
}

// sortOut counts e as delivered and decodes it. It returns e's event,
// carried in its producer's context, when the handler gets it. The others
// it settles, as the handler never gets them: a message that cannot be
// decoded is dead-lettered, an event of a resource outside
// Config.Resources (see partitioningFilters) or a replay meant for another
// group (HeaderReplayGroup) is acked unhandled; the event is then nil, and
// ok false when the lane was released before the dead letter was stored.
func (w *worker) sortOut(runCtx, lctx context.Context, l *lane, e *entry) (context.Context, *eventsv1.ResourceEvent, bool) {
	w.cfg.Stats.delivered.Add(1)
	msg := w.current(e)
	ctx, ev, err := events.Decode(lctx, msg.Headers(), msg.Data())
	switch {
	case err != nil:
		w.cfg.Stats.undecodable.Add(1)
		return nil, nil, w.deadLetter(runCtx, lctx, l, e, e.tries+1, ReasonUndecodable, err, subjectProject(w.cfg.SubjectPrefix, e.subject))
	case !w.forHandler(msg, ev):
		w.skip(l, e, msg)
		return nil, nil, true
	}
	return ctx, ev, true
}

// skip acks unhandled a message the handler does not get (an event of a
// resource outside Config.Resources, a replay meant for another group).
func (w *worker) skip(l *lane, e *entry, msg jetstream.Msg) {
	if err := msg.Ack(); err != nil {
		w.log.Debug("ack of skipped event failed", slog.Any(logkey.Err, err))
	}
	w.settled(l, e)
}

// onDeadLetter calls Config.OnDeadLetter, when set, for a message already
// in the DLQ. A panic in it is logged, not propagated: it runs on the
// lane's goroutine, where a panic would take the whole member (and every
// other object's work) down for a report about one object, as the handler's
// own panics do not (see call).
func (w *worker) onDeadLetter(ctx context.Context, m Message, reason string, cause error, log *slog.Logger) {
	if w.cfg.OnDeadLetter == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			log.Error("dead letter report panicked", slog.String(logkey.Reason, reason), slog.Any(logkey.Err, fmt.Errorf("on dead letter panic: %v", r)))
		}
	}()
	w.cfg.OnDeadLetter(ctx, m, reason, cause)
}

// callBatch is what one handler call stands for: the newest message and,
// with Config.Coalesce, the older ones queued before it, decoded.
type callBatch struct {
	items []*entry
	ev    *eventsv1.ResourceEvent // the newest message's event
	// hctx is the newest message's producer context (its trace and
	// baggage over the lane's context); the batch lives for one call of
	// handle, which gave it that context.
	hctx context.Context //nolint:containedctx // replaced with the newest message's as the batch grows (takeQueued)
	from producers       // every message's producer, oldest first
	// parked is set once the batch's messages were parked (see park):
	// the object counts in worker.parkedObjects until the batch ends.
	parked bool
}

// add appends e, whose event is ev, carried in ctx, as the newest.
func (b *callBatch) add(ctx context.Context, e *entry, ev *eventsv1.ResourceEvent) {
	b.items, b.ev, b.hctx = append(b.items, e), ev, ctx
	b.from = append(b.from, trace.SpanContextFromContext(ctx))
}

func (b *callBatch) newest() *entry { return b.items[len(b.items)-1] }

// try calls the handler for b until it succeeds, retrying in the lane
// with Config.Backoff. Each call runs in its own CONSUMER span (see
// startConsumerSpan), linked to the producers of the coalesced messages.
// With Config.Coalesce a retry first takes the object's messages filed
// in the lane while the failed call ran or its backoff was waited
// (takeQueued), so b can grow. It returns the last attempt and nil, a
// *deadError (terminal error or MaxDeliver tries), or an error wrapping
// errReleased.
func (w *worker) try(runCtx, lctx context.Context, f *flight, l *lane, b *callBatch, log *slog.Logger) (uint64, error) {
	first := b.newest()
	attempt := first.tries
	defer w.setWaiting(l, false)
	// The wait between tries ends when the member stops or the partition
	// moves; the handler call itself only with lctx (the stop grace).
	wctx, cancel := context.WithCancelCause(lctx)
	defer cancel(nil)
	defer context.AfterFunc(runCtx, func() { cancel(errReleased) })()
	sched := &schedule{delays: w.cfg.Backoff, start: int(first.tries)}
	var parkedWait time.Duration // the backoff a parked lane waits out itself
	op := func() (struct{}, error) {
		if parkedWait > 0 {
			d := parkedWait
			parkedWait = 0
			if err := w.waitParked(wctx, lctx, f, l, b, d, log); err != nil {
				return struct{}{}, backoff.Permanent(errors.Join(errReleased, err))
			}
		}
		w.setWaiting(l, false)
		if attempt > first.tries && w.cfg.Coalesce {
			// A retry: before its slot, as the lookups of untilGap
			// are made without one for a first try too.
			w.takeQueued(lctx, f, l, b, log)
		}
		// A handler slot for this try only: the backoff before the next
		// one is waited without it (see worker.slots).
		if !w.takeSlot(runCtx, lctx) {
			return struct{}{}, backoff.Permanent(errReleased)
		}
		slot := true
		free := func() {
			if slot {
				slot = false
				w.freeSlot()
			}
		}
		defer free()
		if err := w.waitConnected(runCtx, lctx); err != nil {
			return struct{}{}, backoff.Permanent(err)
		}
		attempt++
		if attempt > first.tries+1 {
			w.cfg.Stats.delivered.Add(1) // a retry is a delivery again
		}
		e := b.newest()
		msg := w.current(e)
		m := Message{Event: b.ev, Subject: e.subject, Header: msg.Headers(), Attempt: attempt, Seq: e.seq, Coalesced: len(b.items) - 1}
		sctx, span := w.startConsumerSpan(b.hctx, m, f.partition, b.from.links())
		herr := w.call(sctx, m)
		endConsumerSpan(span, herr)
		switch {
		case herr == nil:
			return struct{}{}, nil
		case w.own.movedAway(f) || runCtx.Err() != nil || lctx.Err() != nil:
			return struct{}{}, backoff.Permanent(errors.Join(errReleased, herr))
		case IsTerminal(herr):
			return struct{}{}, backoff.Permanent(&deadError{reason: ReasonTerminal, err: herr})
		case attempt >= uint64(w.cfg.MaxDeliver):
			return struct{}{}, backoff.Permanent(&deadError{reason: ReasonExhausted, err: herr})
		}
		w.cfg.Stats.retried.Add(1)
		log.Warn("event handling failed, retrying", slog.Any(logkey.Err, herr), slog.Uint64(logkey.Attempt, attempt),
			slog.Duration(logkey.Duration, w.cfg.backoff(attempt)))
		free() // park's acks are not a handler call
		w.park(lctx, l, b, log)
		if b.parked {
			// Parked: the lane waits out the backoff itself, without a
			// slot, at the next op (see waitParked).
			parkedWait, sched.waited = w.cfg.backoff(attempt), true
		}
		return struct{}{}, herr
	}
	_, err := backoff.Retry(wctx, op, backoff.WithBackOff(sched), backoff.WithMaxElapsedTime(0))
	if err != nil && wctx.Err() != nil && !errors.Is(err, errReleased) {
		err = errors.Join(errReleased, err)
	}
	return attempt, err
}

// takeQueued adds to b, before a retry of a coalescing member, the
// object's messages filed in the lane after b's newest while the failed
// call ran or its backoff was waited. The handler is level-triggered, so
// the retry is for the object's newest state: a change that mends what
// failed (a corrected spec) is handled at the next try, not after the
// stale one has used up its MaxDeliver tries, and the messages it
// supersedes are settled with it, as messages queued behind a running
// call are. The attempt count goes on (the object's failures in a row):
// an object whose changes keep coming and keep failing still reaches the
// DLQ after MaxDeliver tries, all of b with it. It takes them in stream
// order (queuedAfter) up to the first that the handler would not get
// (undecodable, another resource, another group's replay): those wait
// for the lane's next batch, which settles them as handle does (a parked
// lane settles them while it waits, see parkQueued).
func (w *worker) takeQueued(ctx context.Context, f *flight, l *lane, b *callBatch, log *slog.Logger) {
	taken := 0
	for _, e := range w.queuedAfter(ctx, f, l, b) {
		msg := w.current(e)
		ectx, ev, err := events.Decode(ctx, msg.Headers(), msg.Data())
		if err != nil || !w.forHandler(msg, ev) {
			break
		}
		w.cfg.Stats.delivered.Add(1)
		b.add(ectx, e, ev)
		taken++
	}
	if taken > 0 {
		log.Debug("retry takes the object's newer events", slog.Int(logkey.Count, taken), slog.Uint64(logkey.Seq, b.newest().seq))
	}
}

// queuedAfter returns the object's messages filed in l after b's newest,
// in stream order, up to the first that skips a message of the object
// still unsettled in the stream (untilGap).
func (w *worker) queuedAfter(ctx context.Context, f *flight, l *lane, b *callBatch) []*entry {
	newest := b.newest()
	w.mu.Lock()
	var later []*entry
	for _, e := range l.queue {
		if e.seq > newest.seq {
			later = append(later, e)
		}
	}
	w.mu.Unlock()
	if len(later) == 0 {
		return nil
	}
	slices.SortFunc(later, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	return w.untilGap(ctx, f, append([]*entry{newest}, later...))[1:]
}

// waitConnected holds a lane while the connection is down: a member that
// cannot reach NATS can neither ack nor keep its messages, which go to
// another member after MemberTTL; handling them here meanwhile would only
// run them twice, out of order.
func (w *worker) waitConnected(runCtx, lctx context.Context) error {
	for !w.js.Conn().IsConnected() {
		select {
		case <-runCtx.Done():
			return errReleased
		case <-lctx.Done():
			return errReleased
		case <-time.After(connectedPoll):
		}
	}
	return nil
}

// ack confirms e's ack. A failed ack is retried, always on the newest
// delivery of e (a consumer re-created under us redelivers it, see
// deliver), while the lane waits: the object's next message must not be
// handled before this one is settled. After AckWait without a
// confirmation the lane moves on (false) and remembers e as handled, so a
// later redelivery is acked, not handled again after the object's next
// messages; a confirmed ack of a message held long enough to have been
// redelivered meanwhile is remembered too (see worker.acked). Stops early
// when ctx ends.
func (w *worker) ack(ctx context.Context, l *lane, e *entry, log *slog.Logger) bool {
	if !w.confirmAck(ctx, l, e, log) {
		return false
	}
	w.cfg.Stats.acked.Add(1)
	return true
}

// confirmAck is ack without counting the message as handled: park acks
// messages whose handler has not succeeded yet.
func (w *worker) confirmAck(ctx context.Context, l *lane, e *entry, log *slog.Logger) bool {
	w.setSettling(e)
	op := func() (struct{}, error) {
		actx, cancel := context.WithTimeout(ctx, ackTimeout)
		defer cancel()
		return struct{}{}, w.current(e).DoubleAck(actx)
	}
	notify := func(err error, d time.Duration) {
		log.Debug("ack failed, retrying", slog.Any(logkey.Err, err), slog.Duration(logkey.Duration, d))
	}
	b := &backoff.ExponentialBackOff{InitialInterval: ackRetryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: ackRetryMax}
	_, err := backoff.Retry(ctx, op, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(w.cfg.AckWait+ackTimeout), backoff.WithNotify(notify))
	// Remembered before it is no longer held, so that a redelivery
	// arriving in between is recognised either way.
	w.mu.Lock()
	if err != nil {
		w.handled[e.seq] = settledHere{at: time.Now()}
	} else {
		w.rememberAcked(e, time.Now())
	}
	w.mu.Unlock()
	w.settled(l, e)
	if err != nil {
		log.Warn("ack unconfirmed, event may be handled again", slog.Any(logkey.Err, err))
		return false
	}
	return true
}

// deadLetter publishes e to the DLQ and terminates it; project is the
// event's, for the logs. A failed publish is retried in the lane with
// Config.Backoff, the message kept, so nothing is lost; false when the
// member stops or the partition moves first. The
// Term is never confirmed, so e is remembered as dead-lettered (see
// worker.handled): if the Term is lost, the server redelivers e after
// AckWait, and that redelivery is terminated, not handled again after the
// object's later messages and dead-lettered twice.
func (w *worker) deadLetter(runCtx, lctx context.Context, l *lane, e *entry, attempt uint64, reason string, cause error, project string) bool {
	log := w.log.With(slog.String(logkey.Subject, e.subject), slog.Uint64(logkey.Seq, e.seq), slog.Uint64(logkey.Attempt, attempt),
		slog.String(logkey.ProjectID, project))
	op := func() (struct{}, error) {
		msg := w.current(e)
		if err := w.publishDeadLetter(lctx, msg, e.subject, attempt, reason, cause); err != nil {
			log.Error("dead letter publish failed, will retry", slog.Any(logkey.Err, err), slog.String(logkey.Reason, reason))
			return struct{}{}, err
		}
		return struct{}{}, nil
	}
	wctx, cancel := context.WithCancelCause(lctx)
	defer cancel(nil)
	defer context.AfterFunc(runCtx, func() { cancel(errReleased) })()
	if _, err := backoff.Retry(wctx, op, backoff.WithBackOff(&schedule{delays: w.cfg.Backoff}), backoff.WithMaxElapsedTime(0)); err != nil {
		return false
	}
	if e.parked {
		// Acked when it was parked: nothing on the server to terminate.
		w.cfg.Stats.deadLettered.Add(1)
		log.Error("event dead-lettered", slog.String(logkey.Reason, reason), slog.Any(logkey.Err, cause))
		return true
	}
	w.setSettling(e)
	if err := w.current(e).TermWithReason(reason); err != nil {
		log.Warn("term failed, a redelivery will be terminated unhandled", slog.Any(logkey.Err, err))
	}
	// Remembered before it is no longer held, as in ack.
	w.rememberDeadLettered(e, reason)
	w.settled(l, e)
	w.cfg.Stats.deadLettered.Add(1)
	log.Error("event dead-lettered", slog.String(logkey.Reason, reason), slog.Any(logkey.Err, cause))
	return true
}

// subjectProject is the project named by an event's subject, for the
// logs of a message that cannot be decoded: "" when the subject does not
// name it (a digest token, a subject of another form).
func subjectProject(prefix, subject string) string {
	parts, err := events.ParseSubject(prefix, subject)
	if err != nil {
		return ""
	}
	return parts.ProjectID
}

// rememberDeadLettered records e as dead-lettered in worker.handled.
func (w *worker) rememberDeadLettered(e *entry, reason string) {
	if e.seq == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handled[e.seq] = settledHere{at: time.Now(), reason: reason}
}

// setSettling stops renewing e: if its ack or term was lost, the server
// redelivers it after AckWait and the lane settles that delivery.
func (w *worker) setSettling(e *entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e.settling = true
}

// settled drops e, settled, from the lane and the held messages.
func (w *worker) settled(l *lane, e *entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i := slices.Index(l.queue, e); i >= 0 {
		l.queue = slices.Delete(l.queue, i, i+1)
	}
	w.unhold(e)
}

// unhold forgets e. Caller holds mu.
func (w *worker) unhold(e *entry) {
	if w.held[e.seq] == e {
		delete(w.held, e.seq)
	}
	w.cfg.Stats.inFlight.Add(-1)
}

// releaseLane gives every message of l back unacked and removes the lane:
// for the next owner at once when the member stops (its consumer is
// deleted when it leaves), after releaseDelay when the partition moved
// (our consumer is being re-created without it).
func (w *worker) releaseLane(lctx context.Context, l *lane) {
	type released struct {
		e   *entry
		msg jetstream.Msg
	}
	w.mu.Lock()
	out := make([]released, 0, len(l.queue))
	for _, e := range l.queue {
		w.unhold(e)
		out = append(out, released{e: e, msg: e.msg})
	}
	l.queue = nil
	delete(w.lanes, l.key)
	w.mu.Unlock()
	delay := time.Duration(0)
	if errors.Is(context.Cause(lctx), ErrPartitionMoved) {
		delay = releaseDelay
	}
	for _, r := range out {
		w.nak(r.msg, delay, w.log.With(slog.String(logkey.Subject, r.e.subject), slog.Uint64(logkey.Seq, r.e.seq)))
	}
	if len(out) > 0 {
		w.log.Info("events released", slog.String(logkey.ObjectID, l.key), slog.Int(logkey.Count, len(out)))
	}
}

// forHandler reports whether msg, carrying ev, is for the handler: an
// event of one of Config.Resources (see partitioningFilters), not a
// replay meant for another group. The others are acked unhandled.
func (w *worker) forHandler(msg jetstream.Msg, ev *eventsv1.ResourceEvent) bool {
	return slices.Contains(w.cfg.Resources, ev.GetResource()) && w.replayedForUs(msg)
}

// replayedForUs reports whether msg is an ordinary event or a replay meant
// for this group (see HeaderReplayGroup).
func (w *worker) replayedForUs(msg jetstream.Msg) bool {
	g := msg.Headers().Get(HeaderReplayGroup)
	return g == "" || g == w.cfg.Group
}
