package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// A member's consumer does not always deliver one object's messages in
// stream order, so a lane cannot trust arrival order:
//
//   - pcgroups re-creates a member's consumer on every change of the
//     group's config, also one that leaves the member's partitions as they
//     are. Messages the server sent to the stopped subscription are lost
//     in transit and come back only after AckWait, as redeliveries, while
//     the new subscription already gets the object's later messages.
//   - Redeliveries do not come in stream order either.
//
// TestRebalanceMidLaneLosesAndReordersNothing caught both under load:
// member a got obj-04's v4 and v5 first as redeliveries, 2 s (AckWait)
// after the rebalance, v5 before v4, and only then v6.
//
// So a lane keeps its queue sorted by stream sequence, and before it
// starts its head message it asks the work-queue stream for the object's
// oldest message: one direct get by the object's subjects (objectFilter:
// the project token changes when a session moves). In a work queue an acked
// message is gone, so that is the oldest one not yet settled. If it is
// older than the head, the lane waits for it. It comes back as a
// redelivery (the server redelivers even at MaxAckPending), or a former
// owner settles it, within about AckWait.
//
// A coalesced batch (Config.Coalesce) is the lane's whole queue, and a
// message can be missing between two of its messages as well as before
// the head: v2 and v4 held, v3 lost in transit. Handled as v4 and acked
// with v2, the batch would leave v3 to run after v4 when it comes back.
// So the lane asks, for each later message of the batch, for the
// object's next message after the previous one, and cuts the batch at
// the first that is neither that message nor one this member settled
// (untilGap). The rest waits as the next head does.

// The direct get costs a round trip per handler batch (asked every time,
// BenchmarkThroughput lost about a sixth with 2 ms handlers), so a lane asks only while a
// delivery may be missing: for riskWindows AckWaits after the group's
// config was rewritten (pcgroups re-created the consumer) or after a
// delivery showed a loss (noteDelivery). A lost message comes back after
// AckWait, and its redelivery opens a window of its own, so a message
// that could overtake it arrives inside one.
const riskWindows = 2

// Polling for the older message: from olderPollMin, doubling to
// olderPollMax. A delivery filed in the lane ends a wait at once.
const (
	olderPollMin = 10 * time.Millisecond
	olderPollMax = 500 * time.Millisecond
)

// unsureMax is how many answers that do not show the head itself a lane
// takes before it goes on. A stream replica may answer a direct get while
// it still lags behind the head; no answer at all means the head was
// settled behind the lane's back (its earlier delivery was acked).
const unsureMax = 3

// longWaitAckWaits is after how many AckWaits a wait for an older message
// is logged as a warning.
const longWaitAckWaits = 3

// keyOlderSeq names the older message's sequence in log lines.
const keyOlderSeq = "older_seq"

// olderWait is a lane's state while its head waits for an older message.
type olderWait struct {
	head   uint64        // the head the state is about; 0 when none
	delay  time.Duration // the next poll's delay
	unsure int           // answers that did not show the head
	since  time.Time     // when the head was first seen behind an older message (then counted, logged); zero before
	warned bool          // the long wait was logged
}

// reset starts the state over for head.
func (o *olderWait) reset(head uint64) { *o = olderWait{head: head, delay: olderPollMin} }

// wqSubjectOf is the subject (or filter) of messages in the group's
// work-queue stream: pcgroups' transform prefixes the partition, and its
// delivery strips it again.
func wqSubjectOf(partition int, subject string) string {
	return fmt.Sprintf("%d.%s", partition, subject)
}

// waitForOlder reports whether the lane must not start e yet because the
// work-queue stream still holds an older message of e's object that this
// member neither holds nor settled. It then waits for the next poll, a
// delivery filed in the lane or the lane's end, and the caller looks at
// its queue again.
func (w *worker) waitForOlder(runCtx, lctx context.Context, f *flight, l *lane, e *entry, o *olderWait) bool {
	if e.seq == 0 || w.wq == nil {
		return false // no metadata, or no stream to ask
	}
	if o.head != e.seq {
		o.reset(e.seq)
	}
	if o.since.IsZero() && !w.mayHaveLost() {
		// Nothing lost lately. A head already seen behind an older
		// message keeps waiting, however long that takes.
		return false
	}
	log := w.log.With(slog.String(logkey.Subject, e.subject), slog.Uint64(logkey.Seq, e.seq))
	filter := w.objectFilter(e.subject)
	oldest, err := w.nextInStream(lctx, f.partition, filter, 0)
	// Skip the messages handled here whose ack is still on its way (or
	// dead-lettered, their Term lost): they say nothing about those
	// between them and the head, one of which may be lost in transit.
	for err == nil && oldest != 0 && oldest < e.seq && w.settledByUs(oldest) {
		oldest, err = w.nextInStream(lctx, f.partition, filter, oldest+1)
	}
	switch {
	case err != nil && (runCtx.Err() != nil || lctx.Err() != nil):
		return false // released by the caller
	case err != nil && !w.js.Conn().IsConnected():
		// The lane waits for the connection: handling e now could not
		// be acked, and the answer is needed.
	case err != nil:
		o.unsure++
		log.Warn("looking for an older event of the object failed", slog.Any(logkey.Err, err))
	case oldest == e.seq:
		return false
	case oldest != 0 && oldest < e.seq:
		switch {
		case o.since.IsZero():
			o.since = time.Now()
			w.cfg.Stats.reordered.Add(1)
			log.Info("event waits for an older event of its object", slog.Uint64(keyOlderSeq, oldest))
		case !o.warned && time.Since(o.since) > longWaitAckWaits*w.cfg.AckWait:
			// Not expected (the older one is due within an AckWait);
			// the lane keeps waiting rather than break the order, and
			// says so once.
			o.warned = true
			log.Warn("event still waits for an older event of its object", slog.Uint64(keyOlderSeq, oldest),
				slog.Duration(logkey.Duration, time.Since(o.since)))
		}
	default:
		o.unsure++
	}
	if o.unsure > unsureMax {
		log.Debug("older event not found, going on", slog.Uint64(keyOlderSeq, oldest), slog.Any(logkey.Err, err))
		return false
	}
	t := time.NewTimer(o.delay)
	defer t.Stop()
	o.delay = min(2*o.delay, olderPollMax)
	select {
	case <-t.C:
	case <-l.wake:
	case <-runCtx.Done():
	case <-lctx.Done():
	}
	return true
}

// untilGap returns the longest head of a coalesced batch that skips no
// message of its object still unsettled in the work-queue stream (see the
// top of this file). It asks only while a delivery may be missing, as
// waitForOlder does. A lookup that fails or does not show the message
// cuts the batch too: that message then comes to waitForOlder as the
// head, which tells those cases apart.
func (w *worker) untilGap(ctx context.Context, f *flight, batch []*entry) []*entry {
	if len(batch) < 2 || w.wq == nil || !w.mayHaveLost() {
		return batch
	}
	for i := 1; i < len(batch); i++ {
		if !w.followsInStream(ctx, f.partition, batch[i-1], batch[i]) {
			w.log.Debug("coalesced batch cut before a missing older event", slog.String(logkey.Subject, batch[i].subject),
				slog.Uint64(logkey.Seq, batch[i].seq), slog.Int(logkey.Count, i))
			return batch[:i]
		}
	}
	return batch
}

// followsInStream reports whether the work-queue stream holds no message
// of e's object between prev and e that this member has not settled.
func (w *worker) followsInStream(ctx context.Context, partition int, prev, e *entry) bool {
	if prev.seq == 0 || e.seq == 0 {
		return false // no metadata: only waitForOlder may let e go
	}
	filter := w.objectFilter(e.subject)
	for from := prev.seq + 1; ; {
		next, err := w.nextInStream(ctx, partition, filter, from)
		switch {
		case err != nil || next == 0 || next > e.seq:
			return false
		case next == e.seq:
			return true
		case !w.settledByUs(next):
			return false
		}
		from = next + 1
	}
}

// objectFilter returns the subject filter (as delivered, without the
// partition) of every message of the object of a message on subject
// <prefix>.<resource>.<project>.<id>: <prefix>.<resource>.*.<id>. An
// object's subject is not fixed: a session moved to another project
// publishes its later events under the new project's token. Looking up
// the head's subject alone, a lane took an older message lost in transit
// under the old project for none, and handled (or coalesced over) it
// after the newer ones
// (TestLaneWaitsForOlderLostDeliveryOfMovedObject). A subject not of that
// form is its own filter.
func (w *worker) objectFilter(subject string) string {
	rest, ok := strings.CutPrefix(subject, w.cfg.SubjectPrefix+".")
	if !ok || strings.Count(rest, ".") != 2 {
		return subject
	}
	resource, _, _ := strings.Cut(rest, ".")
	return w.cfg.SubjectPrefix + "." + resource + ".*." + rest[strings.LastIndexByte(rest, '.')+1:]
}

// nextInStream returns the sequence of the first message matching filter
// (see objectFilter) at or after sequence from in the group's work-queue
// stream, or 0 when it holds none. From 0 that is the object's oldest
// message not yet settled.
func (w *worker) nextInStream(ctx context.Context, partition int, filter string, from uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	m, err := w.wq.GetMsg(ctx, from, jetstream.WithGetMsgSubject(w.wqSubject(partition, filter)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("next message of %s from %d: %w", filter, from, err)
	}
	return m.Sequence, nil
}

// settledByUs reports whether seq is a message this member handled and
// acked (or tried to), or dead-lettered, whose removal from the stream has
// not been seen yet.
func (w *worker) settledByUs(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.handled[seq]; ok {
		return true
	}
	return w.wasAcked(seq)
}

// noteDelivery records a delivery's metadata. A consumer numbers its
// deliveries 1, 2, 3, ... (redeliveries included), so a delivery that does
// not follow the last one shows that deliveries were lost in transit (a
// subscription stopped or lagged, a pull lost with a reconnect) or that
// the consumer is a new one, re-created or left by our previous run with
// messages still pending. A redelivery shows a loss, too. Caller holds mu.
func (w *worker) noteDelivery(meta *jetstream.MsgMetadata, at time.Time) {
	if meta.Sequence.Consumer != w.lastCseq+1 || meta.NumDelivered > 1 {
		w.lostAt = at
	}
	w.lastCseq = meta.Sequence.Consumer
}

// mayHaveLost reports whether a delivery may be missing now: a config was
// rewritten or a loss was seen less than riskWindows AckWaits ago.
func (w *worker) mayHaveLost() bool {
	w.mu.Lock()
	lost := w.lostAt
	w.mu.Unlock()
	if r := w.own.lastRewrite(); r.After(lost) {
		lost = r
	}
	return !lost.IsZero() && time.Since(lost) < riskWindows*w.cfg.AckWait
}
