package diff

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Normalize truncates every google.protobuf.Timestamp in m to whole
// microseconds, in place. The real ambient-api-server stores microseconds
// and sends them on watch and list, but answers mutations with nanoseconds;
// normalizing what enters the cache means the same state always has the same
// version, whichever path it came by. Call it only on messages nobody else
// holds yet (freshly received ones).
func Normalize(m proto.Message) {
	if m == nil {
		return
	}
	truncateTimestamps(m.ProtoReflect())
}

// Micros truncates t to microseconds, the precision the API stores.
func Micros(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

var timestampName = (&timestamppb.Timestamp{}).ProtoReflect().Descriptor().FullName()

func truncateTimestamps(m protoreflect.Message) {
	if !m.IsValid() {
		return
	}
	if m.Descriptor().FullName() == timestampName {
		nanos := m.Descriptor().Fields().ByName("nanos")
		if n := m.Get(nanos).Int(); n%1000 != 0 {
			m.Set(nanos, protoreflect.ValueOfInt32(int32(n-n%1000)))
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := range l.Len() {
					truncateTimestamps(l.Get(i).Message())
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					truncateTimestamps(mv.Message())
					return true
				})
			}
		case fd.Message() != nil:
			truncateTimestamps(v.Message())
		}
		return true
	})
}
