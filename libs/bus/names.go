package bus

import (
	"strings"

	"github.com/ambient-code/control-plane/libs/events"
)

// KV buckets shared by the services (see ARCHITECTURE.md, NATS contract).
const (
	// BucketObjects is the informer's persisted cache: latest object per
	// events.ObjectKey.
	BucketObjects = "ambient-objects"
	// BucketRunners maps a session id to its runner endpoint (libs/registry).
	BucketRunners = "ambient-runners"
	// BucketLeases holds leader leases; entries expire after the bucket TTL.
	BucketLeases = "ambient-leases"
	// BucketRunnerMembers holds runner-manager replicas' heartbeats (TTL).
	BucketRunnerMembers = "ambient-runner-members"
)

// ShadowSuffix is what a shadow informer (one publishing to a stream other
// than events.StreamName) appends to the names of its bucket and lease key:
// "-" and the stream's name, lower-cased, "_" as "-".
func ShadowSuffix(stream string) string {
	return "-" + strings.ToLower(strings.ReplaceAll(stream, "_", "-"))
}

// ObjectsBucketFor returns the objects bucket of the informer publishing to
// stream: BucketObjects for the live stream, a bucket of its own for a
// shadow one. A consumer of stream defaults to it, so that it reads the
// cache of the informer whose events it handles.
func ObjectsBucketFor(stream string) string {
	if stream == events.StreamName {
		return BucketObjects
	}
	return BucketObjects + ShadowSuffix(stream)
}

// Dead-letter stream: captures events.DLQPrefix + ".>" so dead letters are
// kept and can be inspected or replayed.
const (
	DLQStreamName = "AMBIENT_DLQ"
)
