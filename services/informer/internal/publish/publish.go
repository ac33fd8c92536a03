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

// Publish publishes the event for c, waits for the ack, then stores the new
// state in KV (or deletes it for DELETED). It starts a producer span whose
// context travels in the message headers. When only the KV write fails the
// error wraps ErrNotStored: the caller must count the event as published and
// retry the write with Store.
func Publish[T events.APIObject](ctx context.Context, p *Publisher, c diff.Change[T]) error {
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
			return fmt.Errorf("encode %s: %w", key, err)
		}
		value = b
	}
	return p.publish(ctx, ev, key, value)
}

func (p *Publisher) publish(ctx context.Context, ev *eventsv1.ResourceEvent, key string, value []byte) (err error) {
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
	if pid := ev.GetProjectId(); pid != "" {
		span.SetAttributes(attribute.String("ambient.project_id", pid))
	}
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()

	msg, err := events.NewMsg(ctx, p.cfg.Prefix, ev)
	if err != nil {
		return fmt.Errorf("build message %s: %w", ev.GetEventId(), err)
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	ack, err := p.js.PublishMsg(pctx, msg, jetstream.WithExpectStream(p.cfg.Stream))
	cancel()
	if err != nil {
		return fmt.Errorf("publish %s: %w", ev.GetEventId(), err)
	}
	took := time.Since(start)
	span.SetAttributes(attribute.Int64("messaging.nats.seq", int64(ack.Sequence)), attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
	if p.cfg.Observe != nil {
		p.cfg.Observe(ctx, ev, took, ack.Duplicate)
	}
	if p.cfg.AfterPublish != nil {
		if err := p.cfg.AfterPublish(ctx, ev); err != nil {
			return err
		}
	}
	// The event is in the stream: finish the KV write even if ctx ended
	// meanwhile (shutdown, lease lost), within StoreTimeout, so KV does not
	// fall behind the stream and no later diff repeats this event.
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.StoreTimeout)
	defer cancel()
	if value == nil {
		err = p.kv.Delete(kctx, key)
	} else {
		_, err = p.kv.Put(kctx, key, value)
	}
	if err != nil {
		return fmt.Errorf("store %s: %w: %w", key, ErrNotStored, err)
	}
	return nil
}

// Store writes obj as the persisted state of id (present), or deletes the
// key (!present). It retries a KV write after ErrNotStored.
func Store[T events.APIObject](ctx context.Context, p *Publisher, id string, obj T, present bool) error {
	key := events.ObjectKey(events.ResourceOf[T](), id)
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if !present {
		if err := p.kv.Delete(ctx, key); err != nil {
			return fmt.Errorf("delete %s: %w", key, err)
		}
		return nil
	}
	b, err := proto.Marshal(events.Wrap(obj))
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if _, err := p.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}
