package group

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// ackTimeout bounds the confirmed ack, DLQ publish and Term of one message.
const ackTimeout = 5 * time.Second

// releaseDelay is how long a message released because its partition moved
// waits before the server may deliver it again: our consumer is being
// re-created without that partition (pcgroups waits up to 0.5 s before it
// does), and an immediate redelivery to it would only be released again.
const releaseDelay = 500 * time.Millisecond

// worker turns deliveries into handler calls and acks, dead letters or
// releases. pcgroups calls deliver from one goroutine per member, mostly
// in stream order (order.go says when not); deliver only files each
// message in its object's lane (see lane.go). The server hands the member
// at most Config.maxAckPending unsettled messages, so held messages are
// bounded by it, and lanes and lane goroutines by it plus the parked ones
// (Config.maxParked, see park.go); handler calls by slots.
type worker struct {
	cfg  Config
	js   jetstream.JetStream
	h    Handler
	log  *slog.Logger
	gate *gate // counts lane goroutines; closed when the member stops
	// slots holds one value per running handler call, at most
	// Config.MaxInFlight. A lane takes one for each try only, not while it
	// waits out the backoff before the next: lanes in backoff keep their
	// messages (held, unacked) in the consumer's head-room, and the
	// member's other objects are handled meanwhile.
	slots chan struct{}
	own   *ownership
	// tracer makes the CONSUMER span of every handler call.
	tracer trace.Tracer
	// wq is the group's work-queue stream, where a lane looks for an
	// older message of its object before it starts one (see order.go);
	// wqSubject gives a message's subject there.
	wq        jetstream.Stream
	wqSubject func(partition int, subject string) string

	mu    sync.Mutex
	lanes map[string]*lane  // guarded by mu; by object (id token); only lanes whose goroutine runs
	held  map[uint64]*entry // guarded by mu; by work-queue sequence; every unsettled message
	// handled remembers, by sequence, messages the lane settled whose
	// settlement may not have reached the server: handled, but the ack
	// never confirmed (NATS unreachable past AckWait), or dead-lettered
	// (a Term is never confirmed; a lost one leaves the message pending).
	// A redelivery of one is settled the same way without handling it
	// again, which would otherwise run it after the object's later
	// messages, and dead-letter it twice. Forgotten after handledMemory.
	handled map[uint64]settledHere // guarded by mu
	// acked and ackedBefore remember, by sequence, messages acked (and the
	// ack confirmed) after they were held for AckWait/2 or longer: the
	// server may have redelivered such a message before our ack reached
	// it (its renewals were lost with a reconnect, or came late), and that
	// stale copy can arrive after the lane settled the message. It is
	// acked, not handled again. A message acked sooner cannot have been
	// redelivered and is not remembered. acked turns into ackedBefore
	// every AckWait, so each is kept for one to two AckWaits.
	acked, ackedBefore map[uint64]struct{} // guarded by mu
	ackedSince         time.Time           // guarded by mu; when acked started
	// lastCseq is the consumer sequence of the last delivery and lostAt
	// when a delivery last showed that earlier ones were lost in transit
	// (see noteDelivery). Guarded by mu.
	lastCseq uint64
	lostAt   time.Time
	// parkedObjects counts the lanes whose batch is parked (see park),
	// at most Config.maxParked. Guarded by mu.
	parkedObjects int
}

// handledMemory is how long a handled but unconfirmed message is
// recognised when it comes back: far longer than any AckWait.
const handledMemory = 10 * time.Minute

// settledHere is how the lane settled a message in worker.handled.
type settledHere struct {
	at     time.Time // when the lane moved on
	reason string    // the dead-letter reason (terminated); "" when acked
}

// entry is one message the member holds until it is settled: acked, dead
// lettered or released.
type entry struct {
	seq     uint64 // in the group's work-queue stream
	subject string
	// tries is how many deliveries of this consumer preceded the first
	// one we hold (NumDelivered-1): the tries of our previous run, killed
	// and restarted under the same name, count towards MaxDeliver.
	tries    uint64
	received time.Time     // when the member first got it
	msg      jetstream.Msg // guarded by worker.mu: the newest delivery of seq
	settling bool          // guarded by worker.mu: being acked or terminated, so no longer renewed
	// parked is set when the lane acked the message after a failed try
	// and keeps it for its retries (see park); only the lane's goroutine
	// reads and writes it.
	parked bool
}

func newWorker(cfg Config, js jetstream.JetStream, wq jetstream.Stream, h Handler, own *ownership, log *slog.Logger) *worker {
	return &worker{cfg: cfg, js: js, wq: wq, wqSubject: wqSubjectOf, h: h, log: log, gate: newGate(), own: own, tracer: newTracer(cfg),
		slots: make(chan struct{}, max(cfg.MaxInFlight, 1)),
		lanes: map[string]*lane{}, held: map[uint64]*entry{}, handled: map[uint64]settledHere{},
		acked: map[uint64]struct{}{}, ackedBefore: map[uint64]struct{}{}, ackedSince: time.Now()}
}

// callback adapts the worker to pcgroups. runCtx is Run's ctx (done when
// the member stops taking work); hctx is the handlers' base ctx, which
// outlives it by the stop grace.
func (w *worker) callback(runCtx, hctx context.Context) func(jetstream.Msg) {
	return func(msg jetstream.Msg) { w.deliver(runCtx, hctx, msg) }
}

// deliver files msg in its object's lane, starting the lane when the
// object has no work yet. It never blocks on a handler.
func (w *worker) deliver(runCtx, hctx context.Context, msg jetstream.Msg) {
	e := &entry{subject: msg.Subject(), msg: msg, received: time.Now()}
	meta, err := msg.Metadata()
	if err == nil {
		e.seq, e.tries = meta.Sequence.Stream, meta.NumDelivered-1
		w.cfg.Stats.lag.Store(meta.NumPending)
	}
	key := e.subject[strings.LastIndexByte(e.subject, '.')+1:]
	log := w.log.With(slog.String(logkey.Subject, e.subject), slog.Uint64(logkey.Seq, e.seq))

	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.noteDelivery(meta, e.received)
	}
	if held := w.held[e.seq]; held != nil && e.seq != 0 {
		// Delivered again while we hold it (our consumer was re-created,
		// or a renewal was lost): the lane settles the newest delivery, so
		// its ack reaches the consumer that has it pending.
		held.msg = msg
		log.Debug("held event redelivered")
		return
	}
	if done, ok := w.handled[e.seq]; ok && e.seq != 0 {
		// Handled or dead-lettered before; only its ack or Term was lost.
		settleAgain(msg, done, log)
		return
	}
	if w.wasAcked(e.seq) {
		// A copy sent before our ack reached the server.
		if err := msg.Ack(); err != nil {
			log.Debug("ack of settled event failed", slog.Any(logkey.Err, err))
		}
		log.Info("settled event redelivered, acked without handling it again")
		return
	}
	if l := w.lanes[key]; l != nil {
		l.file(e)
		w.hold(e)
		return
	}
	if !w.gate.enter() {
		// Stopping: give the message back at once for the next owner.
		w.nak(msg, 0, log)
		return
	}
	lctx, cancel := context.WithCancelCause(hctx)
	f, owned := w.own.begin(Partition(key, w.cfg.Partitions), cancel)
	if !owned {
		cancel(nil)
		w.gate.leave()
		// Delivered by a consumer being re-created without this partition.
		w.nak(msg, releaseDelay, log)
		log.Info("event released: partition not owned")
		return
	}
	l := newLane(key, e)
	w.lanes[key] = l
	w.hold(e)
	// Owned by the gate: Run's stop waits for every lane goroutine, and a
	// lane ends when its queue is empty or released (stop, move).
	go w.runLane(runCtx, lctx, cancel, f, l)
}

// settleAgain settles a redelivery of a message the lane settled before
// as it did then: an ack, or a Term (not a second dead letter).
func settleAgain(msg jetstream.Msg, done settledHere, log *slog.Logger) {
	if done.reason != "" {
		if err := msg.TermWithReason(done.reason); err != nil {
			log.Debug("term of dead-lettered event failed", slog.Any(logkey.Err, err))
		}
		log.Info("dead-lettered event redelivered, terminated without handling it again")
		return
	}
	if err := msg.Ack(); err != nil {
		log.Debug("ack of handled event failed", slog.Any(logkey.Err, err))
	}
	log.Info("handled event redelivered, acked without handling it again")
}

// hold records e as held. Caller holds mu.
func (w *worker) hold(e *entry) {
	if e.seq != 0 {
		w.held[e.seq] = e
	}
	w.cfg.Stats.inFlight.Add(1)
}

// current returns the newest delivery of e.
func (w *worker) current(e *entry) jetstream.Msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return e.msg
}

// nak gives msg back unacked, for this member's consumer after delay or
// for the next owner, without counting a try.
func (w *worker) nak(msg jetstream.Msg, delay time.Duration, log *slog.Logger) {
	var err error
	if delay > 0 {
		err = msg.NakWithDelay(delay)
	} else {
		err = msg.Nak()
	}
	if err != nil {
		log.Debug("nak of released event failed", slog.Any(logkey.Err, err))
	}
}

// keepalive tells the server, every AckWait/3, that every held message not
// yet being settled is in progress: a message waiting in its lane behind a
// slow handler or a backoff must not be redelivered behind the lane's back
// (that would hand it over out of order). It returns a channel closed when
// it has stopped, after ctx ends.
func (w *worker) keepalive(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	// Owned by Run: ends with ctx, which Run cancels before returning, and
	// Run waits on done.
	go func() {
		defer close(done)
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			w.forgetHandled(time.Now().Add(-handledMemory))
			for _, msg := range w.renewable() {
				if err := msg.InProgress(); err != nil {
					w.log.Debug("in progress failed", slog.Any(logkey.Err, err))
				}
			}
		}
	}()
	return done
}

// rememberAcked records that e's ack was confirmed, if e was held long
// enough for the server to redeliver it meanwhile (see worker.acked).
// Caller holds mu.
func (w *worker) rememberAcked(e *entry, now time.Time) {
	if e.seq == 0 || now.Sub(e.received) < w.cfg.AckWait/2 {
		return
	}
	if now.Sub(w.ackedSince) >= w.cfg.AckWait {
		w.ackedBefore, w.acked, w.ackedSince = w.acked, map[uint64]struct{}{}, now
	}
	w.acked[e.seq] = struct{}{}
}

// wasAcked reports whether seq is a message rememberAcked recorded.
// Caller holds mu.
func (w *worker) wasAcked(seq uint64) bool {
	_, ok := w.acked[seq]
	if !ok {
		_, ok = w.ackedBefore[seq]
	}
	return ok
}

// forgetHandled drops handled messages the lane moved on from before t.
func (w *worker) forgetHandled(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for seq, done := range w.handled {
		if done.at.Before(t) {
			delete(w.handled, seq)
		}
	}
}

// renewable returns the newest delivery of every held message that is
// not being settled.
func (w *worker) renewable() []jetstream.Msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]jetstream.Msg, 0, len(w.held))
	for _, e := range w.held {
		if !e.settling {
			out = append(out, e.msg)
		}
	}
	return out
}

// takeSlot waits for a handler slot (see worker.slots); false when the
// member stops or the partition moves first. freeSlot gives it back.
func (w *worker) takeSlot(runCtx, lctx context.Context) bool {
	select {
	case w.slots <- struct{}{}:
		return true
	case <-runCtx.Done():
		return false
	case <-lctx.Done():
		return false
	}
}

// freeSlot gives back a slot takeSlot took.
func (w *worker) freeSlot() { <-w.slots }

// call runs the handler, turning a panic into an error.
func (w *worker) call(ctx context.Context, m Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return w.h(ctx, m)
}
