package restapi

import (
	"encoding/json"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// BasePath is the REST prefix of the real server.
const BasePath = "/api/ambient/v1"

// Collections under BasePath and the kinds of their objects.
const (
	SessionsPath        = "sessions"
	ProjectsPath        = "projects"
	ProjectSettingsPath = "project_settings"

	KindSession         = "Session"
	KindProject         = "Project"
	KindProjectSettings = "ProjectSettings"
)

// metaKeys are the flat keys that live in ObjectReference, in its order.
var metaKeys = []string{"id", "created_at", "updated_at", "kind", "href"}

// metadataField is the ObjectReference field of every resource message.
const metadataField protoreflect.Name = "metadata"

var (
	// EmitDefaultValues writes required scalars (name, project_id) even when
	// empty, as the real server does; fields with presence (optional and
	// messages) stay absent when unset.
	objectOut = protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}
	metaOut   = protojson.MarshalOptions{UseProtoNames: true}
)

// Object is what every ambient.v1 resource message offers.
type Object interface {
	proto.Message
	GetMetadata() *ambientv1.ObjectReference
}

// MarshalObject writes m as a flat REST object: m's metadata fields (id,
// kind, href, created_at, updated_at; empty ones absent) beside m's own
// fields under their proto names.
func MarshalObject(m Object) ([]byte, error) {
	out, err := flatten(m)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return b, nil
}

// flatten returns the keys of the flat object.
func flatten(m Object) (map[string]json.RawMessage, error) {
	name := m.ProtoReflect().Descriptor().Name()
	body := proto.Clone(m)
	fd := metadataFieldOf(body.ProtoReflect())
	if fd == nil {
		return nil, fmt.Errorf("encode %s: no metadata field", name)
	}
	body.ProtoReflect().Clear(fd)
	out := map[string]json.RawMessage{}
	if err := decodeInto(objectOut, body, out); err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	if md := m.GetMetadata(); md != nil {
		if err := decodeInto(metaOut, md, out); err != nil {
			return nil, fmt.Errorf("encode %s metadata: %w", name, err)
		}
	}
	return out, nil
}

// decodeInto marshals m with opts and adds its top-level keys to out.
func decodeInto(opts protojson.MarshalOptions, m proto.Message, out map[string]json.RawMessage) error {
	b, err := opts.Marshal(m)
	if err != nil {
		return err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	for k, v := range keys {
		out[k] = v
	}
	return nil
}

// UnmarshalOptions says how strict UnmarshalObject is.
type UnmarshalOptions struct {
	// DiscardUnknown ignores keys that are no field of the message (a client
	// reading a newer server). Without it, such a key is an error (a server
	// reading a request).
	DiscardUnknown bool
}

// UnmarshalObject reads a flat REST object into m (reset first): the
// metadata keys into m's metadata, every other key into the field of the
// same proto name. Only proto names are accepted (not lowerCamelCase), like
// the real server. Errors are *DecodeError (errors.Is ErrBadObject).
func (o UnmarshalOptions) UnmarshalObject(b []byte, m Object) error {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return decodeError("%s", err.Error())
	}
	if keys == nil {
		return decodeError("null is not an object")
	}
	proto.Reset(m)
	rm := m.ProtoReflect()
	fd := metadataFieldOf(rm)
	if fd == nil {
		return decodeError("%s has no metadata field", rm.Descriptor().Name())
	}
	meta, fields := map[string]json.RawMessage{}, map[string]json.RawMessage{}
	for k, v := range keys {
		switch {
		case slices.Contains(metaKeys, k):
			meta[k] = v
		case k != string(metadataField) && rm.Descriptor().Fields().ByName(protoreflect.Name(k)) != nil:
			fields[k] = v
		case !o.DiscardUnknown:
			return decodeError("json: unknown field %q", k)
		}
	}
	if err := unmarshalKeys(fields, m); err != nil {
		return err
	}
	if len(meta) > 0 {
		ref := &ambientv1.ObjectReference{}
		if err := unmarshalKeys(meta, ref); err != nil {
			return err
		}
		// Empty metadata ({"id": ""}) is no metadata: MarshalObject writes
		// neither, so the round trip stays exact.
		if proto.Size(ref) > 0 {
			rm.Set(fd, protoreflect.ValueOfMessage(ref.ProtoReflect()))
		}
	}
	return nil
}

// UnmarshalObject is UnmarshalOptions{}.UnmarshalObject: unknown keys are
// an error.
func UnmarshalObject(b []byte, m Object) error { return UnmarshalOptions{}.UnmarshalObject(b, m) }

func unmarshalKeys(keys map[string]json.RawMessage, m proto.Message) error {
	b, err := json.Marshal(keys)
	if err != nil {
		return decodeError("%s", err.Error())
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return decodeError("%s", err.Error())
	}
	return nil
}

func metadataFieldOf(m protoreflect.Message) protoreflect.FieldDescriptor {
	fd := m.Descriptor().Fields().ByName(metadataField)
	if fd == nil || fd.Message() == nil || fd.Message().FullName() != (&ambientv1.ObjectReference{}).ProtoReflect().Descriptor().FullName() {
		return nil
	}
	return fd
}

// List is the real server's list envelope.
type List struct {
	Kind  string            `json:"kind"`
	Page  int32             `json:"page"`
	Size  int32             `json:"size"`
	Total int32             `json:"total"`
	Items []json.RawMessage `json:"items"`
}

// ListKind is the kind of a list of objects of kind, e.g. "SessionList".
func ListKind(kind string) string { return kind + "List" }

// MarshalList writes one page of items as a list envelope of kind
// ListKind(kind). size is len(items); an empty page has "items": [].
func MarshalList[T Object](kind string, page, total int32, items []T) ([]byte, error) {
	l := List{Kind: ListKind(kind), Page: page, Size: int32(len(items)), Total: total, Items: make([]json.RawMessage, 0, len(items))}
	for _, it := range items {
		b, err := MarshalObject(it)
		if err != nil {
			return nil, err
		}
		l.Items = append(l.Items, b)
	}
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", l.Kind, err)
	}
	return b, nil
}
