package bus

// KV buckets shared by the services (see ARCHITECTURE.md, NATS contract).
const (
	// BucketObjects is the informer's persisted cache: latest object per
	// events.ObjectKey.
	BucketObjects = "ambient-objects"
	// BucketRunners maps a session id to its runner endpoint (libs/registry).
	BucketRunners = "ambient-runners"
	// BucketLeases holds leader leases; entries expire after the bucket TTL.
	BucketLeases = "ambient-leases"
)

// Dead-letter stream: captures events.DLQPrefix + ".>" so dead letters are
// kept and can be inspected or replayed.
const (
	DLQStreamName = "AMBIENT_DLQ"
)
