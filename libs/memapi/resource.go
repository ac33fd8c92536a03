package memapi

import (
	"crypto/rand"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// BasePath is the REST prefix of the real server (restapi.BasePath).
const BasePath = restapi.BasePath

// Page size limits of the real server.
const (
	MaxPageSize     = 500
	DefaultPageSize = 20
)

// metadataName is the ObjectReference field of every resource message.
const metadataName protoreflect.Name = "metadata"

// newOf returns a new empty message of type T (T is a pointer type; the nil
// value's reflection still knows its type).
func newOf[T proto.Message]() T {
	var zero T
	return zero.ProtoReflect().New().Interface().(T)
}

// object is what every stored resource message offers.
type object interface {
	proto.Message
	GetMetadata() *ambientv1.ObjectReference
}

// resource holds the operations shared by sessions, projects and project
// settings, so each service is a thin typed adapter.
type resource[T object] struct {
	s          *Server
	st         *store[T]
	kind       string // ObjectReference.kind, e.g. "Session"
	path       string // REST collection, e.g. "sessions"
	listMethod string // gRPC full method name of the list, for the list hook
	setMeta    func(T, *ambientv1.ObjectReference)
}

// clampPage applies the real server's pagination clamps.
func clampPage(page, size int32) (int32, int32) {
	if page < 1 {
		page = 1
	}
	if size < 1 || size > MaxPageSize {
		size = DefaultPageSize
	}
	return page, size
}

// create stores obj under id with fresh metadata and returns a full
// precision copy. A taken id gives AlreadyExists (see store.insert). created_at and
// updated_at are now, except where obj already has a time (a REST create
// that named them): gorm fills only zero times, so the real server keeps
// the client's.
func (r *resource[T]) create(id string, obj T) (T, error) {
	now := timestamppb.New(r.s.now())
	created, updated := obj.GetMetadata().GetCreatedAt(), obj.GetMetadata().GetUpdatedAt()
	if zeroTime(created) {
		created = now
	}
	if zeroTime(updated) {
		updated = proto.CloneOf(now)
	}
	r.setMeta(obj, &ambientv1.ObjectReference{
		Id:        id,
		CreatedAt: created,
		UpdatedAt: updated,
		Kind:      r.kind,
		Href:      BasePath + "/" + r.path + "/" + id,
	})
	if err := r.st.insert(id, obj, microView(obj)); err != nil {
		var zero T
		return zero, err
	}
	return proto.CloneOf(obj), nil
}

// update applies mutate to the stored object as read from the database
// (microsecond timestamps, as the real server reads the row before it
// changes it), bumps updated_at and returns a copy: the fields the request
// set and updated_at at full precision, the rest in microseconds. mutate
// runs under the store lock.
func (r *resource[T]) update(id string, mutate func(T) error) (T, error) {
	obj, err := r.st.update(id, func(old T) (T, T, error) {
		n := microView(old)
		if err := mutate(n); err != nil {
			var zero T
			return zero, zero, err
		}
		n.GetMetadata().UpdatedAt = timestamppb.New(r.s.now())
		return n, microView(n), nil
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return proto.CloneOf(obj), nil
}

// get returns a copy as read from the database (microsecond timestamps).
func (r *resource[T]) get(id string) (T, error) {
	obj, ok := r.st.getView(id)
	if !ok {
		var zero T
		return zero, errNotFound(r.kind, id)
	}
	return proto.CloneOf(obj), nil
}

// list returns one page (clamped) of the objects match accepts (nil: all),
// in the order of order (nil: database order), as shared, immutable views, the list meta, and runs the list hook.
// Callers must not modify the items.
func (r *resource[T]) list(page, size int32, match func(T) bool, order func(a, b T) int) ([]T, *ambientv1.ListMeta) {
	page, size = clampPage(page, size)
	items, total := r.st.page(page, size, match, order)
	r.s.runListHook(r.listMethod, page)
	return items, &ambientv1.ListMeta{Page: page, Size: int32(len(items)), Total: int32(total)}
}

func (r *resource[T]) remove(id string) { r.st.remove(id) }

// zeroTime reports whether ts is no time for gorm: unset, or Go's zero
// time.Time (0001-01-01T00:00:00Z), which a client may send as well.
func zeroTime(ts *timestamppb.Timestamp) bool {
	return ts == nil || ts.AsTime().IsZero()
}

// microView returns a copy of m with every timestamp truncated to
// microseconds, which is what the real server's database returns.
func microView[T proto.Message](m T) T {
	v := proto.CloneOf(m)
	truncateTimes(v.ProtoReflect())
	return v
}

func truncateTimes(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
			return true
		}
		if ts, ok := v.Message().Interface().(*timestamppb.Timestamp); ok {
			ts.Nanos -= ts.Nanos % int32(time.Microsecond)
			return true
		}
		truncateTimes(v.Message())
		return true
	})
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns a 27 character base62 id shaped like the real server's KSUIDs
// (mixed case: consumers that need DNS names must lower-case them).
func newID() string {
	var b [27]byte
	// crypto/rand.Read never returns an error (it crashes the program
	// instead), see its documentation.
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b[:])
}
