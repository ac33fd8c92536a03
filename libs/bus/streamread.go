package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// streamReadBatch and streamReadWait bound one fetch of ReadStream.
const (
	streamReadBatch = 512
	streamReadWait  = 5 * time.Second
)

// ReadStream calls fn with every message of stream matching filter from
// sequence start to the stream's end, in order, through an ephemeral
// consumer that acknowledges nothing and is deleted afterwards (the
// informer reads its events' tail this way when it begins to lead: the
// NATS user needs CONSUMER.CREATE, MSG.NEXT and DELETE on the stream). It
// returns the JetStream error, or ctx's. s is the stream as looked up by
// the caller, who usually needs its state to choose start.
func ReadStream(ctx context.Context, s jetstream.Stream, filter string, start uint64, fn func(jetstream.Msg)) error {
	return read(ctx, s, jetstream.ConsumerConfig{
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    max(start, 1),
		FilterSubjects: []string{filter},
	}, fn)
}

// ReadLastPerSubject calls fn with the last message of every subject of
// stream matching filter, in stream order, the way ReadStream reads (same
// permissions, same errors). It costs one message per subject however
// many each holds: the informer rebuilds its objects bucket from it, one
// message per object where the whole stream holds every change. Messages
// published while it reads come too, so a subject may come twice, its
// newer message last.
func ReadLastPerSubject(ctx context.Context, s jetstream.Stream, filter string, fn func(jetstream.Msg)) error {
	return read(ctx, s, jetstream.ConsumerConfig{
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		FilterSubjects: []string{filter},
	}, fn)
}

// read delivers what the consumer cfg selects to fn until nothing is
// pending, through an ephemeral consumer made from cfg that acknowledges
// nothing and is deleted afterwards.
func read(ctx context.Context, s jetstream.Stream, cfg jetstream.ConsumerConfig, fn func(jetstream.Msg)) error {
	stream := s.CachedInfo().Config.Name
	cfg.AckPolicy = jetstream.AckNonePolicy
	cfg.InactiveThreshold = time.Minute
	cfg.MemoryStorage = true
	cfg.Replicas = 1
	cons, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	defer func() {
		// Best effort: an ephemeral consumer left behind goes after
		// InactiveThreshold.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = s.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	for pending := cons.CachedInfo().NumPending; pending > 0; {
		n, err := fetchInto(ctx, cons, &pending, fn)
		switch {
		case err != nil:
			return fmt.Errorf("read stream %s: %w", stream, err)
		case n == 0 && ctx.Err() != nil:
			return fmt.Errorf("read stream %s: %w", stream, ctx.Err())
		case n == 0:
			return fmt.Errorf("read stream %s: no message within %s, %d pending", stream, streamReadWait, pending)
		}
	}
	return nil
}

// fetchInto fetches one batch (bounded by streamReadWait and ctx), calls fn
// with each message and keeps pending at the last message's NumPending. It
// returns how many messages there were.
func fetchInto(ctx context.Context, cons jetstream.Consumer, pending *uint64, fn func(jetstream.Msg)) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, streamReadWait)
	defer cancel()
	// No more than are pending: a fetch waits for its whole batch.
	batch, err := cons.Fetch(int(min(*pending, streamReadBatch)), jetstream.FetchContext(fctx))
	if err != nil {
		return 0, err
	}
	n := 0
	for msg := range batch.Messages() {
		n++
		md, err := msg.Metadata()
		if err != nil {
			return n, err
		}
		*pending = md.NumPending
		fn(msg)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		return n, err
	}
	return n, nil
}
