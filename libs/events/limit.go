package events

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// HeaderOmitted lists, comma-separated, what NewMsgLimit left out of an
// event so that it fits the server's payload limit: OmittedOldObject,
// OmittedObject, or OmittedFieldPrefix plus a field name per field cleared
// from the object of a DELETED event. Absent when nothing was left out.
const HeaderOmitted = "Ambient-Omitted"

// Values of HeaderOmitted.
const (
	// OmittedOldObject: a MODIFIED event without old_object.
	OmittedOldObject = "old_object"
	// OmittedObject: a reference event, without object and old_object; the
	// object is larger than the payload limit itself. Decode returns
	// ErrObjectTooLarge for it.
	OmittedObject = "object"
	// OmittedFieldPrefix + field name: a field cleared from the last known
	// object of a DELETED event (metadata is always kept).
	OmittedFieldPrefix = "object."
)

// Omission says what NewMsgLimit left out of an event.
type Omission struct {
	// OldObject is set when old_object was dropped.
	OldObject bool
	// Object is set for a reference event (no object at all).
	Object bool
	// Fields lists the fields cleared from a DELETED event's object.
	Fields []string
	// Size is the payload (headers and data) the complete event would have
	// needed.
	Size int
}

// Any reports whether anything was left out.
func (o Omission) Any() bool { return o.OldObject || o.Object || len(o.Fields) > 0 }

func (o Omission) header() string {
	var parts []string
	if o.OldObject {
		parts = append(parts, OmittedOldObject)
	}
	if o.Object {
		parts = append(parts, OmittedObject)
	}
	for _, f := range o.Fields {
		parts = append(parts, OmittedFieldPrefix+f)
	}
	return strings.Join(parts, ",")
}

// Omitted returns what the sender left out of the event with this header,
// parsed from HeaderOmitted (the zero Omission when absent; Size is not
// carried).
func Omitted(h nats.Header) Omission {
	var o Omission
	for p := range strings.SplitSeq(HeaderCarrier(h).Get(HeaderOmitted), ",") {
		switch p = strings.TrimSpace(p); {
		case p == OmittedOldObject:
			o.OldObject = true
		case p == OmittedObject:
			o.Object = true
		case strings.HasPrefix(p, OmittedFieldPrefix):
			o.Fields = append(o.Fields, strings.TrimPrefix(p, OmittedFieldPrefix))
		}
	}
	return o
}

// PayloadSize is what NATS counts against max_payload for msg: its encoded
// headers plus its data.
func PayloadSize(msg *nats.Msg) int { return msg.Size() - len(msg.Subject) - len(msg.Reply) }

// NewMsgLimit is NewMsg for a server that accepts at most limit bytes of
// headers and data per message (nats.Conn.MaxPayload, less any header the
// publisher adds later). An event that does not fit loses, in this order
// and only as much as needed:
//
//  1. old_object: no consumer needs it (they are level-triggered and read
//     the new state);
//  2. for DELETED, the largest fields of the last known object, metadata
//     always kept (a delete needs the identity, not the content);
//  3. for ADDED and MODIFIED, the object itself: a reference event that
//     names resource, id, project and version but carries no state. Decode
//     returns it with ErrObjectTooLarge.
//
// The message's HeaderOmitted says what was left out; so does the returned
// Omission (zero when the event fits). ev is changed to what the message
// carries; the objects it pointed to are not modified. limit <= 0 means no
// limit. It returns ErrBadEvent like NewMsg, and ErrTooLarge when not even
// the reference fits (an id near the limit).
func NewMsgLimit(ctx context.Context, prefix string, ev *eventsv1.ResourceEvent, limit int) (*nats.Msg, Omission, error) {
	msg, err := NewMsg(ctx, prefix, ev)
	if err != nil || limit <= 0 {
		return msg, Omission{}, err
	}
	om := Omission{Size: PayloadSize(msg)}
	if om.Size <= limit {
		return msg, Omission{}, nil
	}
	fits := func() (bool, error) {
		if msg, err = encodeOmitting(msg, ev, om); err != nil {
			return false, err
		}
		return PayloadSize(msg) <= limit, nil
	}
	if ev.GetOldObject() != nil {
		ev.OldObject, om.OldObject = nil, true
		if ok, err := fits(); ok || err != nil {
			return msg, om, err
		}
	}
	if ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED {
		if ok, err := trimObject(ev, &om, fits); ok || err != nil {
			return msg, om, err
		}
	}
	ev.Object, om.Object, om.Fields = nil, true, nil
	ok, err := fits()
	if err != nil {
		return nil, om, err
	}
	if !ok {
		return nil, om, fmt.Errorf("event %s: reference of %d bytes over the limit of %d: %w", ev.GetEventId(), PayloadSize(msg), limit, ErrTooLarge)
	}
	return msg, om, nil
}

// encodeOmitting re-encodes ev into msg's subject and headers, with
// HeaderOmitted set from om.
func encodeOmitting(msg *nats.Msg, ev *eventsv1.ResourceEvent, om Omission) (*nats.Msg, error) {
	if err := validate(ev, om.Object); err != nil {
		return nil, err
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("marshal event %s: %w", ev.GetEventId(), err)
	}
	msg.Data = data
	msg.Header.Set(HeaderOmitted, om.header())
	return msg, nil
}

// trimObject clears the largest fields of a copy of ev's object, metadata
// kept, until fits reports true or nothing is left to clear.
func trimObject(ev *eventsv1.ResourceEvent, om *Omission, fits func() (bool, error)) (bool, error) {
	orig := Message(ev.GetObject())
	if orig == nil {
		return false, nil
	}
	m := proto.Clone(orig).ProtoReflect()
	type field struct {
		fd   protoreflect.FieldDescriptor
		size int
	}
	var fields []field
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != "metadata" {
			one := m.New()
			one.Set(fd, v)
			fields = append(fields, field{fd: fd, size: proto.Size(one.Interface())})
		}
		return true
	})
	slices.SortStableFunc(fields, func(a, b field) int { return cmp.Compare(b.size, a.size) })
	ev.Object = wrapMessage(m.Interface())
	for _, f := range fields {
		m.Clear(f.fd)
		om.Fields = append(om.Fields, string(f.fd.Name()))
		if ok, err := fits(); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

// wrapMessage puts an API message into the Object oneof; nil for any
// other message.
func wrapMessage(m proto.Message) *eventsv1.Object {
	switch o := m.(type) {
	case *ambientv1.Session:
		return Wrap(o)
	case *ambientv1.Project:
		return Wrap(o)
	case *ambientv1.ProjectSettings:
		return Wrap(o)
	}
	return nil
}
