package memapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// maxBodyBytes bounds a REST request body. The real server reads a body of
// any size (rh-trex's handlers.Handle: io.ReadAll); this bound only guards
// the test server's memory. It sits far above gRPC's 4 MiB message limit
// and NATS's 1 MiB payload limit, so that a session too large for either
// is created and changed over REST as on the real server.
const maxBodyBytes = 64 << 20

// A REST body is read the way the real server's handlers read it (rh-trex's
// handlers.Handle: io.ReadAll, then encoding/json into the Go model of the
// route), so memapi accepts and refuses what they do:
//
//   - A body that is no JSON at all is 400 id 17 with encoding/json's
//     wording, before anything else.
//   - null sets nothing: Handle unmarshals into an interface holding the
//     model, and null clears the interface instead, so the model stays
//     empty and no check of the decoder runs (a create goes on with empty
//     fields).
//   - Keys match the model's JSON names case-insensitively, an exact match
//     preferred, the last of several wins ({"PROMPT": "hi"} sets prompt).
//   - Strings are read as encoding/json reads them: invalid UTF-8 and lone
//     surrogates become U+FFFD instead of failing.
//   - Values take only what the field's Go type takes (*int32, *float64,
//     *string, *time.Time): no quoted number, "NaN" or "Infinity", no
//     exponent or fraction for an integer. protojson, which memapi's
//     objects are read with, takes all of those.
//
// A create's model is the generated OpenAPI object (openapi.Session, ...):
// its UnmarshalJSON first checks the required properties by their exact
// keys, in the model's order ("NAME" is not "name"; a user's "username"
// before its "name"), then decodes with DisallowUnknownFields, so a key
// that matches no field is 400 id 17. A PATCH's model is a plain struct
// (SessionPatchRequest, SessionStatusPatchRequest, ...): other keys are
// ignored.

// model is the Go struct a real handler decodes a body into, as far as
// memapi knows it: the JSON names of its fields, each with the proto field
// that holds the value in memapi (which gives the Go type).
type model struct {
	goName   string // the struct's name in encoding/json's errors ("_Session")
	fields   map[string]protoreflect.FieldDescriptor
	required []string // a create's required properties (non-pointer fields), in order
	strict   bool     // unknown keys are an error (DisallowUnknownFields)
}

// createModel is the generated OpenAPI model of objects of md: the five
// metadata keys and every field of the object.
func createModel(md protoreflect.MessageDescriptor, required []string) model {
	m := model{goName: "_" + string(md.Name()), fields: map[string]protoreflect.FieldDescriptor{}, required: required, strict: true}
	ref := (&ambientv1.ObjectReference{}).ProtoReflect().Descriptor().Fields()
	for i := range ref.Len() {
		m.fields[string(ref.Get(i).Name())] = ref.Get(i)
	}
	fs := md.Fields()
	for i := range fs.Len() {
		if fs.Get(i).Name() != metadataName {
			m.fields[string(fs.Get(i).Name())] = fs.Get(i)
		}
	}
	return m
}

// patchModel is a PatchRequest struct named goName with the fields of dst
// (an Update request) but its id and fixed.
func patchModel(goName string, dst protoreflect.MessageDescriptor, fixed []string) model {
	m := model{goName: goName, fields: map[string]protoreflect.FieldDescriptor{}}
	fs := dst.Fields()
	for i := range fs.Len() {
		name := string(fs.Get(i).Name())
		if name != "id" && !slices.Contains(fixed, name) {
			m.fields[name] = fs.Get(i)
		}
	}
	return m
}

// field returns the JSON name key matches, as encoding/json matches a
// struct field: exactly, else case-insensitively (Unicode simple folding,
// strings.EqualFold).
func (m model) field(key string) (string, protoreflect.FieldDescriptor, bool) {
	if fd, ok := m.fields[key]; ok {
		return key, fd, true
	}
	for name, fd := range m.fields {
		// At most one folds equal: the names are distinct snake_case.
		if strings.EqualFold(name, key) {
			return name, fd, true
		}
	}
	return "", nil, false
}

// member is one key of a body's top-level object, in document order.
type member struct {
	key string // unquoted as encoding/json does (invalid UTF-8 replaced)
	raw json.RawMessage
}

// decodeBody reads b into m as the real handler's encoding/json would and
// returns the values it sets, by the fields' JSON names, each re-encoded
// in a form protojson reads the same (strings with U+FFFD for invalid
// UTF-8, times in RFC 3339). null returns no values. A body the real
// decoder refuses is 400 id 17 with its reason.
func decodeBody(b []byte, m model) (map[string]json.RawMessage, error) {
	var whole json.RawMessage
	if err := json.Unmarshal(b, &whole); err != nil {
		return nil, errMalformed(err.Error())
	}
	whole = bytes.TrimSpace(whole)
	if string(whole) == "null" {
		return map[string]json.RawMessage{}, nil
	}
	members, err := objectMembers(whole)
	if err != nil {
		return nil, err
	}
	for _, req := range m.required {
		if !hasKey(members, req) {
			return nil, errMalformed("no value given for required property " + req)
		}
	}
	out := map[string]json.RawMessage{}
	// encoding/json keeps the first type error or unknown key and reads
	// on; an error of a field's own UnmarshalJSON (a time that does not
	// parse) ends the decoding at once and is the one returned.
	var saved error
	for _, mb := range members {
		name, fd, ok := m.field(mb.key)
		if !ok {
			if m.strict && saved == nil {
				saved = fmt.Errorf("json: unknown field %q", mb.key)
			}
			continue
		}
		v, err := goValue(mb.raw, fd)
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			// encoding/json's wording for a struct field.
			te.Struct, te.Field = m.goName, name
			if saved == nil {
				saved = te
			}
			continue
		case err != nil:
			return nil, errMalformed(err.Error())
		}
		if string(v) == "null" && slices.Contains(m.required, name) {
			continue // null leaves a non-pointer field as it was
		}
		out[name] = v
	}
	if saved != nil {
		return nil, errMalformed(saved.Error())
	}
	return out, nil
}

// objectMembers returns the members of the JSON object b (valid JSON), or
// encoding/json's error for a value that is no object.
func objectMembers(b []byte) ([]member, error) {
	if len(b) == 0 || b[0] != '{' {
		// The generated models read the body into a map first; a plain
		// struct's wording names the struct instead.
		var keys map[string]any
		err := json.Unmarshal(b, &keys)
		if err == nil {
			err = errors.New("json: not an object")
		}
		return nil, errMalformed(err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return nil, errMalformed(err.Error())
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errMalformed(err.Error())
		}
		key, _ := tok.(string) // an object's keys are strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, errMalformed(err.Error())
		}
		out = append(out, member{key: key, raw: raw})
	}
	return out, nil
}

func hasKey(members []member, key string) bool {
	for _, mb := range members {
		if mb.key == key {
			return true
		}
	}
	return false
}

// goValue decodes raw into the Go type the real model has for fd (a
// pointer: null is nil) and encodes it again; kinds without a Go
// counterpart in the models are returned as they are.
func goValue(raw json.RawMessage, fd protoreflect.FieldDescriptor) (json.RawMessage, error) {
	var dst any
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		dst = new(*int32)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		dst = new(*int64)
	case protoreflect.DoubleKind:
		dst = new(*float64)
	case protoreflect.FloatKind:
		dst = new(*float32)
	case protoreflect.StringKind:
		dst = new(*string)
	case protoreflect.BoolKind:
		dst = new(*bool)
	case protoreflect.MessageKind:
		if fd.Message().FullName() != "google.protobuf.Timestamp" {
			return raw, nil
		}
		dst = new(*time.Time)
	default:
		return raw, nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return nil, err
	}
	b, err := json.Marshal(dst)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// readBody reads a request body of at most maxBodyBytes.
func readBody(body io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, maxBodyBytes+1))
	if err != nil {
		return nil, errMalformed("read body: " + err.Error())
	}
	if len(b) > maxBodyBytes {
		return nil, errMalformed(fmt.Sprintf("body larger than %d bytes (memapi's bound; the real server reads any size)", maxBodyBytes))
	}
	return b, nil
}

// readObject reads a create body as the generated OpenAPI model of T (see
// model) and returns it as a flat object T: 400 id 17 for a body the model
// refuses, then, as the handlers' ValidateEmpty(id), 400 id 8 "id must be
// empty" for a non-empty id. null is an empty object. What the create
// keeps of it is the collection's convert.
func readObject[T object](body io.Reader, required ...string) (T, error) {
	var zero T
	b, err := readBody(body)
	if err != nil {
		return zero, err
	}
	keys, err := decodeBody(b, createModel(newOf[T]().ProtoReflect().Descriptor(), required))
	if err != nil {
		return zero, err
	}
	obj, err := decodeKeys[T](keys)
	if err != nil {
		return zero, err
	}
	if obj.GetMetadata().GetId() != "" {
		return zero, errValidation("id must be empty")
	}
	return obj, nil
}

// readPatch reads a PATCH body as the PatchRequest struct goName, which
// has the fields of dst (an Update request) but its id and fixed (fields
// the PatchRequest lacks, e.g. a session's project_id), and copies what it
// sets into dst. Other keys are ignored; null sets nothing.
func readPatch[T object](body io.Reader, goName string, dst proto.Message, fixed []string) error {
	b, err := readBody(body)
	if err != nil {
		return err
	}
	keys, err := decodeBody(b, patchModel(goName, dst.ProtoReflect().Descriptor(), fixed))
	if err != nil {
		return err
	}
	obj, err := decodeKeys[T](keys)
	if err != nil {
		return err
	}
	if err := copyFields(dst, obj, true, "metadata", "id"); err != nil {
		return errInternal(err)
	}
	return nil
}

// decodeKeys reads decodeBody's values as a flat REST object T.
func decodeKeys[T object](keys map[string]json.RawMessage) (T, error) {
	obj := newOf[T]()
	b, err := json.Marshal(keys)
	if err != nil {
		return obj, errInternal(err)
	}
	if err := restapi.UnmarshalObject(b, obj); err != nil {
		// Only a value protojson refuses where encoding/json did not
		// gets here: a time before year 1.
		var de *restapi.DecodeError
		if errors.As(err, &de) {
			return obj, errMalformed(de.Detail)
		}
		return obj, errMalformed(err.Error())
	}
	return obj, nil
}

// errNilDereference stands for a nil-pointer panic of the real handler: a
// REST create answers it by ending the connection without an answer.
var errNilDereference = errors.New("memapi: the real handler dereferences nil here")

// convertBody is a real create handler's ConvertX (plugins/<kind>/
// presenter.go, read from the code): the object to store holds the body's
// fields that req (the Create request, whose fields are the ones ConvertX
// copies) has, plus extra (fields of the object ConvertX copies although
// the gRPC request lacks them: a project's status), and the client's
// created_at and updated_at; gorm's create fills only the zero ones
// (resource.create). ConvertSession copies each time on its own. With
// linkedTimes, as ConvertProject and ConvertProjectSettings do (`if
// CreatedAt != nil { c.CreatedAt = *CreatedAt; c.UpdatedAt = *UpdatedAt
// }`), updated_at is read only beside created_at, and created_at without
// updated_at dereferences nil: errNilDereference.
func convertBody[T object](body T, req proto.Message, setMeta func(T, *ambientv1.ObjectReference), extra []string, linkedTimes bool) (T, error) {
	var zero T
	obj := newOf[T]()
	if err := copyFields(req, body, true, "metadata", "id"); err != nil {
		return zero, errInternal(err)
	}
	if err := copyFields(obj, req, false); err != nil {
		return zero, errInternal(err)
	}
	src, dst := body.ProtoReflect(), obj.ProtoReflect()
	for _, name := range extra {
		fd := src.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd != nil && src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		}
	}
	created, updated := body.GetMetadata().GetCreatedAt(), body.GetMetadata().GetUpdatedAt()
	if linkedTimes {
		switch {
		case created == nil:
			updated = nil
		case updated == nil:
			return zero, errNilDereference
		}
	}
	if created != nil || updated != nil {
		setMeta(obj, &ambientv1.ObjectReference{CreatedAt: proto.CloneOf(created), UpdatedAt: proto.CloneOf(updated)})
	}
	return obj, nil
}
