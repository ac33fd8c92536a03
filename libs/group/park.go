package group

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// Parking (Config.ParkFailures).
//
// A lane waiting out a retry backoff keeps its messages unacked, and the
// consumer hands a member at most maxAckPending (2 x MaxInFlight) of them:
// with that many held by lanes that wait, nothing else of the member's
// partitions was delivered until a backoff ended, so one tenant's objects
// failing together (its namespace's admission webhook down) held every
// other tenant of those partitions back for minutes. client-go's workqueue
// keeps a failing key's retries in memory and leans on the resync to
// repair what a crash loses; a member with ParkFailures does the same once
// the head-room is used up: a lane whose try fails while lanes in backoff
// hold MaxInFlight messages or more acks its messages ("parks" them) and
// keeps them for its retries. Its goroutine still waits out the backoff,
// so the object's newer messages queue behind it as before (order kept)
// and are parked with it; those the handler would not get are acked as
// they come, as a batch acks them (an undecodable one waits for the
// lane's next batch to be dead-lettered: waitParked). Message.Attempt goes
// on counting and MaxDeliver tries end in the DLQ, published from
// memory. Only the durability changes: a parked event is
// published again for the group (HeaderReplayGroup) when its lane is
// released (stop, partition moved, also while its dead letter could not
// be stored yet), unless a newer message of the object that the handler
// would get is released with it; a member that crashes loses it, and the
// service's resync repairs the object. Coalesce is required: dropping an
// old event for a newer one is right only for a level-triggered handler.

// setWaiting marks l as waiting out a backoff (or not).
func (w *worker) setWaiting(l *lane, waiting bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l.waiting = waiting
}

// park acks b's messages after a failed try when Config.ParkFailures is
// set and lanes waiting out a backoff (this one included) hold
// MaxInFlight messages or more; each ack is confirmed as ack confirms it
// (a message whose ack stays unconfirmed counts as parked all the same: a
// redelivery of it is acked unhandled, see worker.handled). A batch parked
// before parks the messages it took in since, whatever the head-room.
func (w *worker) park(ctx context.Context, l *lane, b *callBatch, log *slog.Logger) {
	if !w.cfg.ParkFailures {
		return
	}
	w.mu.Lock()
	l.waiting = true
	crowded := w.waitingHeld() >= w.cfg.MaxInFlight
	if !b.parked && crowded && w.parkedObjects < w.cfg.maxParked() {
		b.parked = true
		w.parkedObjects++
		w.cfg.Stats.parkedNow.Add(1)
	}
	w.mu.Unlock()
	if !b.parked {
		return
	}
	n := 0
	for _, e := range b.items {
		if e.parked {
			continue
		}
		w.confirmAck(ctx, l, e, log)
		e.parked = true
		n++
	}
	if n > 0 {
		w.cfg.Stats.parked.Add(uint64(n))
		log.Info("failed event parked: acked, its retries kept in memory", slog.Int(logkey.Count, n))
	}
}

// waitParked waits out a parked lane's backoff delay, parking the
// object's messages filed in the lane meanwhile: they are taken into b as
// a retry takes them (takeQueued) and acked, so a failing object whose
// changes keep coming (its own status write's echo) holds none of the
// consumer's window while it waits. Those the handler would not get are
// acked at once (parkQueued); an undecodable one, and messages after a
// gap, stay held for the lane's next batch. It returns an error when wctx
// ends first (stop, partition moved).
func (w *worker) waitParked(wctx, lctx context.Context, f *flight, l *lane, b *callBatch, delay time.Duration, log *slog.Logger) error {
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		// A message filed in the lane leaves a wake (lane.file) that only
		// this wait takes while the lane retries: one the retry did not
		// take (behind one the handler would not get) is looked at here
		// at once.
		select {
		case <-wctx.Done():
			return fmt.Errorf("parked retry: %w", context.Cause(wctx))
		case <-t.C:
			return nil
		case <-l.wake:
			w.parkQueued(lctx, f, l, b, log)
			w.park(lctx, l, b, log)
		}
	}
}

// parkQueued takes into b, while its parked lane waits, the object's
// messages filed in the lane after b's newest, as takeQueued does, and
// acks unhandled those the handler would not get because they are not
// its (another resource, another group's replay: skip), going on past
// them. Held for the lane's next batch, as a retry leaves them, such a
// message kept one message of the consumer's window for the whole
// backoff, and the object's later messages queued behind it held, not
// parked. Settling it now is no change of order: handle settles such a
// message of its batch before the call, and the handler never sees it.
// An undecodable message still stops the taking, as in takeQueued: its
// dead letter is published by the lane's next batch, after b's retry,
// since that publish waits out a DLQ that cannot store it (NATS away, the
// stream full) and must not hold up the retry of the object's older
// event.
func (w *worker) parkQueued(ctx context.Context, f *flight, l *lane, b *callBatch, log *slog.Logger) {
	taken := 0
	for _, e := range w.queuedAfter(ctx, f, l, b) {
		msg := w.current(e)
		ectx, ev, err := events.Decode(ctx, msg.Headers(), msg.Data())
		if err != nil {
			break
		}
		w.cfg.Stats.delivered.Add(1)
		if !w.forHandler(msg, ev) {
			w.skip(l, e, msg)
			continue
		}
		b.add(ectx, e, ev)
		taken++
	}
	if taken > 0 {
		log.Debug("parked retry takes the object's newer events", slog.Int(logkey.Count, taken), slog.Uint64(logkey.Seq, b.newest().seq))
	}
}

// waitingHeld counts the messages held by lanes waiting out a backoff.
// Caller holds mu.
func (w *worker) waitingHeld() int {
	n := 0
	for _, l := range w.lanes {
		if l.waiting {
			n += len(l.queue)
		}
	}
	return n
}

// endParked ends b's count in worker.parkedObjects, if it was parked.
func (w *worker) endParked(b *callBatch) {
	if !b.parked {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.parkedObjects--
	w.cfg.Stats.parkedNow.Add(-1)
}

// republishTimeout bounds the tries of republishParked: less than the
// time a stopping Run waits for its lanes (leaveTimeout), so that the copy
// is out before the connection closes.
const republishTimeout = 3 * time.Second

// republishParked publishes b's newest event again on its subject for
// this group only, when the lane gives b up (stop, partition moved) after
// parking it: the server no longer has it, and the next owner must try it.
// Not when a newer message of the object is held by the lane: it is
// released unacked with the lane and stands for the object's newest state
// (the handler is level-triggered). The copy lands behind whatever the
// stream holds of the object: its handler reads the newest state anyway,
// as for a replayed dead letter. Its tries count from 1 again. A copy that
// cannot be published (NATS unreachable for republishTimeout) is logged:
// the service's resync repairs the object.
func (w *worker) republishParked(ctx context.Context, l *lane, b *callBatch, log *slog.Logger) {
	if !b.parked || !b.newest().parked {
		return
	}
	newest := b.newest()
	if w.newerForHandler(ctx, l, newest.seq) {
		return
	}
	msg := w.current(newest)
	// One copy per parked message, however often the publish is retried.
	out := replayMsg(newest.subject, msg.Headers(), msg.Data(), w.cfg.Group, "park/"+w.cfg.Group+"/"+strconv.FormatUint(newest.seq, 10))
	// The lane's context has ended (that is why it is released).
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), republishTimeout)
	defer cancel()
	op := func() (struct{}, error) {
		actx, cancel := context.WithTimeout(pctx, ackTimeout)
		defer cancel()
		_, err := w.js.PublishMsg(actx, out)
		return struct{}{}, err
	}
	bo := &backoff.ExponentialBackOff{InitialInterval: ackRetryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: ackRetryMax}
	if _, err := backoff.Retry(pctx, op, backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(0)); err != nil {
		log.Error("parked event not published again on release; the object waits for its next change or the resync", slog.Any(logkey.Err, err))
		return
	}
	log.Info("parked event published again for the group's next owner")
}

// newerForHandler reports whether l holds a message after seq that the
// handler gets (decodable, of its resources, not another group's replay):
// only such a message, released with the lane, stands for the object's
// newest state at the next owner; one it acks or dead-letters unhandled
// does not.
func (w *worker) newerForHandler(ctx context.Context, l *lane, seq uint64) bool {
	w.mu.Lock()
	var later []jetstream.Msg
	for _, e := range l.queue {
		if e.seq > seq {
			later = append(later, e.msg)
		}
	}
	w.mu.Unlock()
	for _, msg := range later {
		if _, ev, err := events.Decode(ctx, msg.Headers(), msg.Data()); err == nil && w.forHandler(msg, ev) {
			return true
		}
	}
	return false
}
