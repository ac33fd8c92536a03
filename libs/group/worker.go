package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// ackTimeout bounds the confirmed ack, DLQ publish and Term of one message.
const ackTimeout = 5 * time.Second

// worker turns deliveries into handler calls and acks, naks or dead
// letters. pcgroups calls it from one goroutine per member (the consume
// callback), so messages are processed one at a time in stream order.
type worker struct {
	cfg  Config
	js   jetstream.JetStream
	h    Handler
	log  *slog.Logger
	gate *gate
}

// callback adapts the worker to pcgroups. ctx is the handlers' base ctx:
// it outlives Run's ctx by the stop grace.
func (w *worker) callback(ctx context.Context) func(jetstream.Msg) {
	return func(msg jetstream.Msg) {
		if !w.gate.enter() {
			// Stopping: give the message back at once for the next owner.
			if err := msg.Nak(); err != nil {
				w.log.Debug("nak after stop failed", slog.Any(logkey.Err, err))
			}
			return
		}
		defer w.gate.leave()
		w.process(ctx, msg)
	}
}

func (w *worker) process(ctx context.Context, msg jetstream.Msg) {
	w.cfg.Stats.delivered.Add(1)
	subject := msg.Subject()
	attempt, seq := uint64(1), uint64(0)
	if meta, err := msg.Metadata(); err == nil {
		attempt, seq = meta.NumDelivered, meta.Sequence.Stream
		w.cfg.Stats.lag.Store(meta.NumPending)
	}
	log := w.log.With(slog.String(logkey.Subject, subject), slog.Uint64(logkey.Seq, seq), slog.Uint64(logkey.Attempt, attempt))

	hctx, ev, err := events.Decode(ctx, msg.Headers(), msg.Data())
	if err != nil {
		w.cfg.Stats.undecodable.Add(1)
		w.deadLetter(ctx, msg, subject, attempt, ReasonUndecodable, err, log)
		return
	}
	if g := msg.Headers().Get(HeaderReplayGroup); !slices.Contains(w.cfg.Resources, ev.GetResource()) || (g != "" && g != w.cfg.Group) {
		// Not this group's resource (see partitioningFilters), or a replay
		// meant for another group: done.
		if err := msg.Ack(); err != nil {
			log.Debug("ack of skipped event failed", slog.Any(logkey.Err, err))
		}
		return
	}
	log = log.With(slog.String(logkey.Resource, events.ResourceToken(ev.GetResource())),
		slog.String(logkey.ObjectID, ev.GetObjectId()), slog.String(logkey.EventID, ev.GetEventId()))

	herr := w.call(hctx, msg, Message{Event: ev, Subject: subject, Header: msg.Headers(), Attempt: attempt, Seq: seq})
	switch {
	case herr == nil:
		actx, cancel := context.WithTimeout(ctx, ackTimeout)
		defer cancel()
		// A confirmed ack: counting a lost ack as done would hide a
		// redelivery that is coming.
		if err := msg.DoubleAck(actx); err != nil {
			log.Warn("ack failed, event will be redelivered", slog.Any(logkey.Err, err))
			return
		}
		w.cfg.Stats.acked.Add(1)
		log.Debug("event handled")
	case ctx.Err() != nil:
		// The stop grace ran out: release the message unharmed.
		if err := msg.Nak(); err != nil {
			log.Debug("nak on stop failed", slog.Any(logkey.Err, err))
		}
		log.Info("event released on stop", slog.Any(logkey.Err, herr))
	case IsTerminal(herr):
		w.deadLetter(ctx, msg, subject, attempt, ReasonTerminal, herr, log)
	case attempt >= uint64(w.cfg.MaxDeliver):
		w.deadLetter(ctx, msg, subject, attempt, ReasonExhausted, herr, log)
	default:
		delay := w.cfg.backoff(attempt)
		if err := msg.NakWithDelay(delay); err != nil {
			log.Warn("nak failed, event will be redelivered after ack wait", slog.Any(logkey.Err, err))
		}
		w.cfg.Stats.retried.Add(1)
		log.Warn("event handling failed, retrying", slog.Any(logkey.Err, herr), slog.Duration(logkey.Duration, delay))
	}
}

// call runs the handler, turning a panic into an error and telling the
// server the message is in progress while it runs, so a slow handler is not
// redelivered behind its back.
func (w *worker) call(ctx context.Context, msg jetstream.Msg, m Message) (err error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	// Owned by call: exits when done is closed below, and call waits for it.
	go func() {
		defer wg.Done()
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					w.log.Debug("in progress failed", slog.Any(logkey.Err, err))
				}
			}
		}
	}()
	defer func() {
		close(done)
		wg.Wait()
	}()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return w.h(ctx, m)
}

// deadLetter publishes the message to the DLQ and terminates it. If the
// publish fails the message is naked instead, so nothing is lost.
func (w *worker) deadLetter(ctx context.Context, msg jetstream.Msg, subject string, attempt uint64, reason string, cause error, log *slog.Logger) {
	dlq := dlqMsg(w.cfg, subject, msg.Headers(), msg.Data(), attempt, reason, cause)
	pctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	_, err := w.js.PublishMsg(pctx, dlq)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		// No stream captures the DLQ subject: still tell live subscribers.
		log.Warn("no stream stores dead letters", slog.String(logkey.Subject, dlq.Subject))
		err = w.js.Conn().PublishMsg(dlq)
	}
	if err != nil {
		delay := w.cfg.backoff(attempt)
		if nerr := msg.NakWithDelay(delay); nerr != nil {
			log.Debug("nak failed", slog.Any(logkey.Err, nerr))
		}
		log.Error("dead letter publish failed, will retry", slog.Any(logkey.Err, err), slog.String(logkey.Reason, reason))
		return
	}
	if err := msg.TermWithReason(reason); err != nil {
		log.Warn("term failed, event may be redelivered", slog.Any(logkey.Err, err))
	}
	w.cfg.Stats.deadLettered.Add(1)
	log.Error("event dead-lettered", slog.String(logkey.Reason, reason), slog.Any(logkey.Err, cause))
}
