package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Encoded is one state of an API object in wire form, with what a
// publisher needs without decoding it again: its version (kept as numbers,
// 16 bytes instead of a 34-byte string) and project. Keeping objects
// encoded costs a fraction of the memory of the decoded message (the
// informer holds one per object), and an event or KV value is built from
// the bytes without marshalling the object again.
type Encoded struct {
	// Raw is the object's deterministic protobuf encoding; nil for "no
	// object".
	Raw []byte
	// ProjectID is ProjectID(Wrap(object)).
	ProjectID string
	// Micros is metadata.updated_at in microseconds (0 when unset).
	Micros int64
	// Hash is the first 8 bytes of ContentHash's SHA-256.
	Hash [8]byte
}

// Version is VersionOf(object).
func (e Encoded) Version() string {
	if e.Raw == nil {
		return ""
	}
	return versionString(e.Micros, e.Hash)
}

// SameVersion reports whether e and o are the same state (their versions
// are equal), without formatting versions.
func (e Encoded) SameVersion(o Encoded) bool {
	return (e.Raw == nil) == (o.Raw == nil) && e.Micros == o.Micros && e.Hash == o.Hash
}

// Encode marshals obj once, deterministically, and derives its version from
// those bytes: the result's Version() equals VersionOf(obj). It fails only
// for a message that does not marshal (invalid UTF-8 in a string field).
func Encode[T APIObject](obj T) (Encoded, error) {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(obj)
	if err != nil {
		return Encoded{}, fmt.Errorf("encode %s %s: %w", ResourceToken(ResourceOf[T]()), obj.GetMetadata().GetId(), err)
	}
	if raw == nil {
		raw = []byte{} // an empty message is still an object
	}
	var micros int64
	if ts := obj.GetMetadata().GetUpdatedAt(); ts != nil {
		micros = max(ts.AsTime().UnixMicro(), 0)
	}
	return Encoded{Raw: raw, ProjectID: ProjectID(Wrap(obj)), Micros: micros, Hash: hashWithoutUpdatedAt(raw)}, nil
}

// DecodeObject unmarshals the encoding of a T (Encoded.Raw) into a new T.
func DecodeObject[T APIObject](raw []byte) (T, error) {
	var zero T
	m := zero.ProtoReflect().Type().New().Interface()
	if err := proto.Unmarshal(raw, m); err != nil {
		return zero, fmt.Errorf("decode %s: %w", ResourceToken(ResourceOf[T]()), err)
	}
	t, _ := m.(T) // m was made from T's own type
	return t, nil
}

func versionString(micros int64, hash [8]byte) string {
	// fmt.Sprintf("%0*d-%s") as Version writes it, without fmt's cost.
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], micros, 10)
	out := make([]byte, 0, versionMicrosWidth+1+contentHashLen)
	for range versionMicrosWidth - len(d) {
		out = append(out, '0')
	}
	out = append(out, d...)
	out = append(out, '-')
	out = hex.AppendEncode(out, hash[:])
	return string(out)
}

// Field numbers the hash skips: metadata in every API object, updated_at in
// ObjectReference. Read from the descriptors so a renumbering cannot go
// unnoticed (TestEncodeVersion compares with ContentHash).
var (
	metadataField  = (&ambientv1.Session{}).ProtoReflect().Descriptor().Fields().ByName("metadata").Number()
	updatedAtField = (&ambientv1.ObjectReference{}).ProtoReflect().Descriptor().Fields().ByName("updated_at").Number()
)

// hashWithoutUpdatedAt is ContentHash of the object whose deterministic
// encoding is raw, computed from raw: the bytes ContentHash would hash are
// raw with metadata re-encoded without updated_at. Deterministic encoding
// writes fields in number order, so everything else is raw as it is.
func hashWithoutUpdatedAt(raw []byte) [8]byte {
	h := sha256.New()
	rest := raw
	for len(rest) > 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			break
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			break
		}
		field := rest[:n+m]
		rest = rest[n+m:]
		if num != metadataField || typ != protowire.BytesType {
			h.Write(field)
			continue
		}
		md, _ := protowire.ConsumeBytes(field[n:])
		md = withoutField(md, updatedAtField)
		var hdr []byte
		hdr = protowire.AppendTag(hdr, num, protowire.BytesType)
		hdr = protowire.AppendVarint(hdr, uint64(len(md)))
		h.Write(hdr)
		h.Write(md)
	}
	var sum [sha256.Size]byte
	var out [8]byte
	copy(out[:], h.Sum(sum[:0]))
	return out
}

// withoutField returns b (a message's fields) without the fields numbered
// num. It copies only when there is something to drop.
func withoutField(b []byte, num protowire.Number) []byte {
	var out []byte
	rest, start := b, 0
	for len(rest) > 0 {
		n, typ, tn := protowire.ConsumeTag(rest)
		if tn < 0 {
			return b
		}
		vn := protowire.ConsumeFieldValue(n, typ, rest[tn:])
		if vn < 0 {
			return b
		}
		pos := len(b) - len(rest)
		if n == num {
			if out == nil {
				out = make([]byte, 0, len(b))
			}
			out = append(out, b[start:pos]...)
			start = pos + tn + vn
		}
		rest = rest[tn+vn:]
	}
	if out == nil {
		return b
	}
	return append(out, b[start:]...)
}

// oneofField is the field of the Object oneof that holds T.
func oneofField[T APIObject]() protowire.Number {
	var field protoreflect.Name
	switch ResourceOf[T]() {
	case eventsv1.Resource_RESOURCE_SESSIONS:
		field = "session"
	case eventsv1.Resource_RESOURCE_PROJECTS:
		field = "project"
	default:
		field = "project_settings"
	}
	return objectDesc.Fields().ByName(field).Number()
}

var (
	objectDesc = (&eventsv1.Object{}).ProtoReflect().Descriptor()
	eventDesc  = (&eventsv1.ResourceEvent{}).ProtoReflect().Descriptor()
)

// AppendObject appends the encoding of the Object oneof holding the T
// encoded in raw: what proto.Marshal(Wrap(obj)) gives, without marshalling
// obj again. It is the objects bucket's value.
func AppendObject[T APIObject](b, raw []byte) []byte {
	b = protowire.AppendTag(b, oneofField[T](), protowire.BytesType)
	return protowire.AppendBytes(b, raw)
}

// AppendEventSeq appends Object.event_seq (seq > 0) to an Object's
// encoding, such as AppendObject's: the objects bucket records which event
// published each state.
func AppendEventSeq(b []byte, seq uint64) []byte {
	if seq == 0 {
		return b
	}
	b = protowire.AppendTag(b, objectDesc.Fields().ByName("event_seq").Number(), protowire.VarintType)
	return protowire.AppendVarint(b, seq)
}

// MarshalEvent returns the encoding of the event NewEventVersion(typ, obj,
// old, obj.Version(), observed) builds, from the encoded objects (old.Raw nil:
// no old object), and the event id (MsgID). Decoding it gives that event.
func MarshalEvent[T APIObject](typ eventsv1.EventType, id string, obj, old Encoded, observed time.Time) ([]byte, string) {
	res := ResourceOf[T]()
	version := obj.Version()
	eventID := ResourceToken(res) + "/" + EscapeToken(id) + "/" + version + "/" + typeToken(typ)
	field := func(name protoreflect.Name) protowire.Number { return eventDesc.Fields().ByName(name).Number() }
	size := len(eventID) + len(id) + len(obj.ProjectID) + len(version) + len(obj.Raw) + len(old.Raw) + 64
	b := make([]byte, 0, size)
	b = appendString(b, field("event_id"), eventID)
	b = protowire.AppendTag(b, field("type"), protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(typ))
	b = protowire.AppendTag(b, field("resource"), protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(res))
	b = appendString(b, field("object_id"), id)
	b = appendString(b, field("project_id"), obj.ProjectID)
	b = protowire.AppendTag(b, field("object"), protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(objectSize[T](obj.Raw)))
	b = AppendObject[T](b, obj.Raw)
	if old.Raw != nil {
		b = protowire.AppendTag(b, field("old_object"), protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(objectSize[T](old.Raw)))
		b = AppendObject[T](b, old.Raw)
	}
	b = protowire.AppendTag(b, field("observed_time"), protowire.BytesType)
	b = protowire.AppendBytes(b, appendTimestamp(nil, observed))
	b = appendString(b, field("version"), version)
	return b, eventID
}

// objectSize is len(AppendObject[T](nil, raw)).
func objectSize[T APIObject](raw []byte) int {
	return protowire.SizeTag(oneofField[T]()) + protowire.SizeBytes(len(raw))
}

// appendString appends a proto3 string field, omitted when empty (as
// proto.Marshal does).
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendTimestamp appends the fields of a google.protobuf.Timestamp.
func appendTimestamp(b []byte, t time.Time) []byte {
	if s := t.Unix(); s != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s))
	}
	if n := t.Nanosecond(); n != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(n))
	}
	return b
}
