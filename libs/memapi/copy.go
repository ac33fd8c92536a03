package memapi

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// copyFields sets each populated field of src on dst's field of the same
// name. The request messages share names, not numbers, with the objects
// (Create*Request numbers from 1; Session has metadata = 1), so copying by
// number would put every field one place off, as the real server would read
// them. Fields in skip are left out. A field dst lacks is an error unless
// lenient (a REST body may carry read-only fields such as phase, which the
// request has no place for). Kinds must match: the protos use the same type
// for a name everywhere (proto/ambient/v1/wire_test.go holds them to the
// real server's).
func copyFields(dst, src proto.Message, lenient bool, skip ...string) error {
	d, s := dst.ProtoReflect(), src.ProtoReflect()
	var err error
	s.Range(func(sf protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := sf.Name()
		for _, k := range skip {
			if string(name) == k {
				return true
			}
		}
		df := d.Descriptor().Fields().ByName(name)
		if df == nil {
			if !lenient {
				err = fmt.Errorf("copy %s.%s: %s has no such field", s.Descriptor().Name(), name, d.Descriptor().Name())
			}
			return lenient
		}
		if df.Kind() != sf.Kind() || df.Cardinality() != sf.Cardinality() ||
			(df.Message() != nil && df.Message().FullName() != sf.Message().FullName()) {
			err = fmt.Errorf("copy %s.%s: type differs in %s", s.Descriptor().Name(), name, d.Descriptor().Name())
			return false
		}
		if df.Message() != nil {
			v = protoreflect.ValueOfMessage(proto.Clone(v.Message().Interface()).ProtoReflect())
		}
		d.Set(df, v)
		return true
	})
	return err
}
