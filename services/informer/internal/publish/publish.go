// Package publish turns cache changes into JetStream messages and keeps the
// persisted cache (KV) in step: publish, wait for the stream's ack, then
// write KV. A crash between the two leaves KV behind the stream; the next
// leader sees the same difference, publishes the same event with the same
// Nats-Msg-Id, and JetStream drops the duplicate.
package publish

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// DefaultTimeout bounds one publish or KV write whose ctx has no deadline.
const DefaultTimeout = 10 * time.Second

// DefaultStoreTimeout bounds the KV write that follows an ack.
const DefaultStoreTimeout = 2 * time.Second

// ErrInvalidConfig is returned by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("invalid publisher config")

// ErrNotStored wraps the error of a KV write that failed after the event
// was acked: the event is in the stream, only KV lags behind.
var ErrNotStored = errors.New("event published, kv not updated")

// ErrUnpublishable wraps an error no retry can fix for this version of the
// object: NATS refuses its size, or it does not encode. The caller must
// count the version as done, or it would block every later change of the
// object (issue 14: retried every 5 s forever).
var ErrUnpublishable = errors.New("event cannot be published")

// Config says where events go.
type Config struct {
	// Prefix is the subject prefix (events.SubjectPrefix, or the shadow one).
	Prefix string
	// Stream is the stream that must store the events; a publish that lands
	// anywhere else fails (a shadow informer can never feed the live stream).
	Stream string
	// Timeout bounds each publish and KV write (default DefaultTimeout).
	Timeout time.Duration
	// StoreTimeout bounds the KV write after an ack, which runs even when
	// ctx has ended (default DefaultStoreTimeout). Keep it well below the
	// lease TTL: a leader that lost its lease must be done before another
	// one can start.
	StoreTimeout time.Duration
	// AfterPublish, when set, runs after the ack and before the KV write;
	// an error from it is returned as is and the KV write is skipped. Tests
	// use it to crash between the two.
	AfterPublish func(ctx context.Context, ev *eventsv1.ResourceEvent) error
	// MarkerTTL, when > 0, is how long the KV delete marker of a deleted
	// object stays before the server removes it (a purge with a per-message
	// TTL; the bucket needs LimitMarkerTTL). 0 keeps markers forever, which
	// makes the bucket grow with every object ever deleted.
	MarkerTTL time.Duration
	// Observe, when set, is told about each acked event (metrics).
	Observe func(ctx context.Context, ev *eventsv1.ResourceEvent, took time.Duration, duplicate bool)
}

// Publisher publishes events and writes the objects bucket. It is safe for
// concurrent use; per object, callers publish one change at a time.
type Publisher struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	tracer trace.Tracer
	cfg    Config
}

// New returns a Publisher; it returns ErrInvalidConfig without a prefix or
// stream.
func New(js jetstream.JetStream, kv jetstream.KeyValue, tracer trace.Tracer, cfg Config) (*Publisher, error) {
	if cfg.Prefix == "" || cfg.Stream == "" {
		return nil, fmt.Errorf("prefix and stream are required: %w", ErrInvalidConfig)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = DefaultStoreTimeout
	}
	return &Publisher{js: js, kv: kv, tracer: tracer, cfg: cfg}, nil
}

// Outcome says what Publish had to leave out.
type Outcome struct {
	// Omitted is what the event left out to fit the payload limit (see
	// events.NewMsgLimit).
	Omitted events.Omission
	// KVSkipped is set when the object is over the payload limit: KV keeps
	// the previous state of the object (consumers that read KV see the last
	// version that fitted, never a stub).
	KVSkipped bool
}

// Publish publishes the event for c, waits for the ack, then stores the new
// state in KV (or deletes it for DELETED). The event fits the server's
// payload limit whatever the object's size (events.NewMsgLimit). It starts a
// producer span whose context travels in the message headers. When only the
// KV write fails the error wraps ErrNotStored: the caller must count the
// event as published and retry the write with Store. An error wrapping
// ErrUnpublishable is final for this version.
func Publish[T events.APIObject](ctx context.Context, p *Publisher, c diff.Change[T]) (Outcome, error) {
	var old T
	if c.Type == eventsv1.EventType_EVENT_TYPE_MODIFIED {
		old = c.Old
	}
	// The cache computed the version already (see events.NewEventVersion).
	ev := events.NewEventVersion(c.Type, c.Object, old, c.Version, time.Now())
	key := events.ObjectKey(ev.GetResource(), c.ID)
	var value []byte
	if c.Type != eventsv1.EventType_EVENT_TYPE_DELETED {
		b, err := proto.Marshal(events.Wrap(c.Object))
		if err != nil {
			return Outcome{}, fmt.Errorf("encode %s: %w: %w", key, ErrUnpublishable, err)
		}
		value = b
	}
	return p.publish(ctx, ev, key, value)
}

// limit is the payload limit of the server the connection talks to (0:
// unknown, not connected yet).
func (p *Publisher) limit() int {
	nc := p.js.Conn()
	if nc == nil {
		return 0
	}
	return int(nc.MaxPayload())
}

// tooLarge reports the errors a retry cannot fix: the client's or the
// stream's size limit.
func tooLarge(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum)
}

func (p *Publisher) publish(ctx context.Context, ev *eventsv1.ResourceEvent, key string, value []byte) (out Outcome, err error) {
	typ := events.TypeName(ev.GetType())
	res := events.ResourceToken(ev.GetResource())
	ctx, span := p.tracer.Start(ctx, "publish "+res+" "+typ,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", events.Subject(p.cfg.Prefix, ev.GetResource(), ev.GetProjectId(), ev.GetObjectId())),
			attribute.String("messaging.message.id", ev.GetEventId()),
			attribute.String("ambient.resource", res),
			attribute.String("ambient.event_type", typ),
			attribute.String("ambient.object_id", ev.GetObjectId()),
		))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()

	limit := p.limit()
	// WithExpectStream adds one header after the message is built.
	reserve := len(jetstream.ExpectedStreamHeader) + len(": \r\n") + len(p.cfg.Stream)
	msg, om, err := events.NewMsgLimit(ctx, p.cfg.Prefix, ev, limit-reserve)
	if err != nil {
		return out, fmt.Errorf("build message %s: %w: %w", ev.GetEventId(), ErrUnpublishable, err)
	}
	out.Omitted = om
	if om.Any() {
		span.SetAttributes(attribute.String("ambient.omitted", msg.Header.Get(events.HeaderOmitted)), attribute.Int("ambient.event_size", om.Size))
	}
	if err := p.connected(); err != nil {
		return out, fmt.Errorf("publish %s: %w", ev.GetEventId(), err)
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	ack, err := p.js.PublishMsg(pctx, msg, jetstream.WithExpectStream(p.cfg.Stream))
	cancel()
	if err != nil {
		if tooLarge(err) {
			// The limit shrank under us (another server after a reconnect).
			err = fmt.Errorf("%w: %w", ErrUnpublishable, err)
		}
		return out, fmt.Errorf("publish %s: %w", ev.GetEventId(), err)
	}
	took := time.Since(start)
	span.SetAttributes(attribute.Int64("messaging.nats.seq", int64(ack.Sequence)), attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
	if p.cfg.Observe != nil {
		p.cfg.Observe(ctx, ev, took, ack.Duplicate)
	}
	if p.cfg.AfterPublish != nil {
		if err := p.cfg.AfterPublish(ctx, ev); err != nil {
			return out, err
		}
	}
	if value != nil && limit > 0 && len(value) > limit {
		out.KVSkipped = true
		return out, nil
	}
	// The event is in the stream: finish the KV write even if ctx ended
	// meanwhile (shutdown, lease lost), within StoreTimeout, so KV does not
	// fall behind the stream and no later diff repeats this event.
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.StoreTimeout)
	defer cancel()
	if err := p.write(kctx, key, value); err != nil {
		if tooLarge(err) {
			out.KVSkipped = true
			return out, nil
		}
		return out, fmt.Errorf("store %s: %w: %w", key, ErrNotStored, err)
	}
	return out, nil
}

// connected fails while the connection is reconnecting. nats.go would keep
// a message published meanwhile in its reconnect buffer and send it after
// the reconnect, even though the call timed out here and the lease may have
// moved on by then: an old leader's event landing after the new leader's
// newer one (TestPartitionedLeaderPublishesNothingLate), or its KV write
// over the new leader's. Callers retry. What remains is a disconnect
// between this check and the write into the buffer.
func (p *Publisher) connected() error {
	if nc := p.js.Conn(); nc != nil && !nc.IsConnected() {
		return nats.ErrConnectionReconnecting
	}
	return nil
}

// write puts value under key, or removes the key (value nil): a purge with
// MarkerTTL, so the marker, and with it the key, is gone after the TTL.
func (p *Publisher) write(ctx context.Context, key string, value []byte) error {
	if err := p.connected(); err != nil {
		return err
	}
	if value != nil {
		_, err := p.kv.Put(ctx, key, value)
		return err
	}
	if p.cfg.MarkerTTL > 0 {
		return p.kv.Purge(ctx, key, jetstream.PurgeTTL(p.cfg.MarkerTTL))
	}
	return p.kv.Delete(ctx, key)
}

// Store writes obj as the persisted state of id (present), or removes the
// key (!present). It retries a KV write after ErrNotStored. An object over
// the payload limit is not written (see Outcome.KVSkipped).
func Store[T events.APIObject](ctx context.Context, p *Publisher, id string, obj T, present bool) error {
	key := events.ObjectKey(events.ResourceOf[T](), id)
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var value []byte
	if present {
		b, err := proto.Marshal(events.Wrap(obj))
		if err != nil {
			return fmt.Errorf("encode %s: %w", key, err)
		}
		if limit := p.limit(); limit > 0 && len(b) > limit {
			return nil
		}
		value = b
	}
	if err := p.write(ctx, key, value); err != nil && !tooLarge(err) {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}
