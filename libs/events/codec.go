package events

import (
	"context"
	"fmt"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"google.golang.org/protobuf/proto"
)

// MsgID is the event id of ev: <resource>/<escaped id>/<version>/<type>,
// and the JetStream deduplication id NewMsg gives it, so republishing the
// same change within the stream's duplicate window is a no-op. The
// informer's messages carry it with the expected subject sequence
// appended (its publish.MsgID), so that a state that comes back (an API
// restored from a backup) is published again.
func MsgID(ev *eventsv1.ResourceEvent) string {
	return ResourceToken(ev.GetResource()) + "/" + EscapeToken(ev.GetObjectId()) + "/" + ev.GetVersion() + "/" + typeToken(ev.GetType())
}

func typeToken(t eventsv1.EventType) string {
	switch t {
	case eventsv1.EventType_EVENT_TYPE_ADDED:
		return "ADDED"
	case eventsv1.EventType_EVENT_TYPE_MODIFIED:
		return "MODIFIED"
	case eventsv1.EventType_EVENT_TYPE_DELETED:
		return "DELETED"
	default:
		return "UNSPECIFIED"
	}
}

// TypeName returns ADDED, MODIFIED, DELETED or UNSPECIFIED, for logs and
// metric labels.
func TypeName(t eventsv1.EventType) string { return typeToken(t) }

// NewMsg encodes ev as a NATS message on its subject under prefix, with the
// Nats-Msg-Id, Content-Type and W3C trace context (from ctx, through the
// global OpenTelemetry propagator) headers. An empty ev.EventId is set to
// MsgID(ev). It returns ErrBadEvent when ev fails Validate.
func NewMsg(ctx context.Context, prefix string, ev *eventsv1.ResourceEvent) (*nats.Msg, error) {
	if ev.GetEventId() == "" {
		ev.EventId = MsgID(ev)
	}
	if err := Validate(ev); err != nil {
		return nil, err
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("marshal event %s: %w", ev.GetEventId(), err)
	}
	msg := nats.NewMsg(Subject(prefix, ev.GetResource(), ev.GetProjectId(), ev.GetObjectId()))
	msg.Data = data
	msg.Header.Set(HeaderMsgID, ev.GetEventId())
	msg.Header.Set(HeaderContentType, ContentTypeProto)
	otel.GetTextMapPropagator().Inject(ctx, HeaderCarrier(msg.Header))
	return msg, nil
}

// NewMsgData is NewMsg for an event already encoded (MarshalEvent): the
// message on subject with data and the headers NewMsg sets. It does not
// validate data.
func NewMsgData(ctx context.Context, subject, eventID string, data []byte) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: data, Header: make(nats.Header, 3)}
	msg.Header[HeaderMsgID] = []string{eventID}
	msg.Header[HeaderContentType] = []string{ContentTypeProto}
	otel.GetTextMapPropagator().Inject(ctx, HeaderCarrier(msg.Header))
	return msg
}

// Decode parses an event message and returns ctx extended with the remote
// span context found in its headers. It returns ErrBadEvent (wrapped) for
// bytes that are not a valid ResourceEvent; it never panics on any input.
//
// A reference event (see NewMsgLimit: the object was larger than the
// payload limit, HeaderOmitted says "object") is returned together with an
// error wrapping ErrObjectTooLarge: it names resource, object id, project
// and version but carries no state, so a caller that does not handle it
// must not act on it (libs/group dead-letters it). Events that only lost
// old_object, or fields of a deleted object, decode without error.
func Decode(ctx context.Context, header nats.Header, data []byte) (context.Context, *eventsv1.ResourceEvent, error) {
	ev := &eventsv1.ResourceEvent{}
	if err := proto.Unmarshal(data, ev); err != nil {
		return ctx, nil, fmt.Errorf("unmarshal: %w: %w", ErrBadEvent, err)
	}
	reference := header != nil && Omitted(header).Object
	if err := validate(ev, reference); err != nil {
		return ctx, nil, err
	}
	if header != nil {
		ctx = otel.GetTextMapPropagator().Extract(ctx, HeaderCarrier(header))
	}
	if reference {
		return ctx, ev, fmt.Errorf("event %s: %w", ev.GetEventId(), ErrObjectTooLarge)
	}
	return ctx, ev, nil
}

// Validate checks the invariants every published event keeps: a known type
// and resource, an object id, and an object of the resource's kind whose id
// matches. It returns an error wrapping ErrBadEvent.
func Validate(ev *eventsv1.ResourceEvent) error { return validate(ev, false) }

// validate is Validate, or with reference the check of a reference event:
// the same fields, but neither object nor old object.
func validate(ev *eventsv1.ResourceEvent, reference bool) error {
	switch ev.GetType() {
	case eventsv1.EventType_EVENT_TYPE_ADDED, eventsv1.EventType_EVENT_TYPE_MODIFIED, eventsv1.EventType_EVENT_TYPE_DELETED:
	default:
		return fmt.Errorf("event type %v: %w", ev.GetType(), ErrBadEvent)
	}
	if ResourceToken(ev.GetResource()) == "" {
		return fmt.Errorf("resource %v: %w", ev.GetResource(), ErrBadEvent)
	}
	if ev.GetObjectId() == "" {
		return fmt.Errorf("empty object id: %w", ErrBadEvent)
	}
	if reference {
		if ev.GetObject() != nil || ev.GetOldObject() != nil {
			return fmt.Errorf("reference event with an object: %w", ErrBadEvent)
		}
		return nil
	}
	for _, o := range [...]struct {
		name string
		obj  *eventsv1.Object
	}{{"object", ev.GetObject()}, {"old_object", ev.GetOldObject()}} {
		if o.obj == nil {
			continue
		}
		if got := ResourceOfObject(o.obj); got != ev.GetResource() {
			return fmt.Errorf("%s kind %v does not match resource %v: %w", o.name, got, ev.GetResource(), ErrBadEvent)
		}
		if id := ObjectID(o.obj); id != "" && id != ev.GetObjectId() {
			return fmt.Errorf("%s id %q does not match object id %q: %w", o.name, id, ev.GetObjectId(), ErrBadEvent)
		}
	}
	if ev.GetObject() == nil {
		return fmt.Errorf("event without object: %w", ErrBadEvent)
	}
	return nil
}

// HeaderCarrier adapts nats.Header to the OpenTelemetry TextMapCarrier. Keys
// are written exactly as the propagator gives them (lower-case traceparent),
// and read case-insensitively.
type HeaderCarrier nats.Header

// Get returns the first value of key.
func (h HeaderCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && equalFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces the values of key.
func (h HeaderCarrier) Set(key, value string) { h[key] = []string{value} }

// Keys lists the header names.
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
