package group

import (
	"fmt"
	"strings"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
)

// The names below belong to the control plane's own streams and buckets. A
// configured events stream, subject prefix or bucket that takes one of them
// would be created over it (an informer rewrites the stream's subjects and
// limits, a bucket's TTL), so configuration refuses them up front.

// ReservedStream returns why name cannot be an events stream (shadow or
// not), or "" when it can. The live events stream is not reserved: it is
// the default.
func ReservedStream(name string) string {
	switch {
	case name == bus.DLQStreamName:
		return "the dead-letter stream's name"
	case strings.HasPrefix(name, "KV_"), strings.HasPrefix(name, "OBJ_"):
		return "a name JetStream keeps for the stream of a KV bucket or object store"
	case strings.HasPrefix(name, events.StreamName+"-"):
		return "a name of the live stream's consumer-group work queues (" + events.StreamName + "-<group>)"
	}
	return ""
}

// ReservedBucket returns why name cannot be an objects bucket, or "" when
// it can.
func ReservedBucket(name string) string {
	switch {
	case name == bus.BucketRunners, name == bus.BucketLeases, name == bus.BucketRunnerMembers, name == pcgroupsConfigBucket:
		return "the name of another of the control plane's buckets"
	case strings.HasPrefix(name, membersBucketPrefix):
		return "a name of the consumer groups' member buckets (" + membersBucketPrefix + "...)"
	}
	return ""
}

// ObjectsBucketError returns the configuration error of value, read from
// variable name, as the objects bucket of an informer or reconciler: not a
// bucket name at all, or a name ReservedBucket refuses; nil when it can be
// one.
func ObjectsBucketError(name, value string) *envconfig.VarError {
	if !ValidName(value) {
		return &envconfig.VarError{Name: name, Want: `a bucket name of letters, digits, "-" and "_"`, Got: value}
	}
	if why := ReservedBucket(value); why != "" {
		return &envconfig.VarError{Name: name, Want: "an objects bucket's name, not " + why, Got: value}
	}
	return nil
}

// PrefixOverlap returns why the subject prefix of a stream other than the
// live one overlaps subjects the control plane's own streams capture, or ""
// when it does not. Two streams cannot capture overlapping subjects: the
// stream would not be created and the service would retry for ever.
func PrefixOverlap(prefix string) string {
	for _, taken := range []string{events.SubjectPrefix, events.DLQPrefix} {
		if prefix == taken || strings.HasPrefix(prefix, taken+".") || strings.HasPrefix(taken, prefix+".") {
			return fmt.Sprintf("overlaps %s.>, which another stream captures", taken)
		}
	}
	return ""
}
