package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultLeaseTTL is how long a leader lease lives without renewal; the
// informer renews well within it.
const DefaultLeaseTTL = 10 * time.Second

// BucketsConfig sets the shared buckets' replicas and the lease bucket TTL.
type BucketsConfig struct {
	// Replicas defaults to 1.
	Replicas int
	// LeaseTTL is the per-bucket TTL of BucketLeases (default DefaultLeaseTTL).
	LeaseTTL time.Duration
}

// DefaultObjectsMarkerTTL is how long the marker of a key purged from
// BucketObjects stays (the informer's OBJECTS_MARKER_TTL default).
const DefaultObjectsMarkerTTL = time.Minute

// ObjectsBucket is the KeyValueConfig of BucketObjects (one history entry:
// only the latest object matters), with per-message TTLs allowed
// (LimitMarkerTTL DefaultObjectsMarkerTTL): the informer purges a deleted
// object's key with a marker that expires. Whoever creates the bucket
// (kube-reconciler does when it starts before any informer, or after the
// bucket was lost) must allow them, or every such purge fails ("per-message
// TTL is disabled") until an informer starts and updates the bucket.
func ObjectsBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: BucketObjects, Description: "informer cache: latest object per <resource>.<id>", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), LimitMarkerTTL: DefaultObjectsMarkerTTL}
}

// RunnersBucket is the KeyValueConfig of BucketRunners.
func RunnersBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: BucketRunners, Description: "session id -> runner endpoint", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)}
}

// LeasesBucket is the KeyValueConfig of BucketLeases: every key expires ttl
// after its last write (0 = DefaultLeaseTTL).
func LeasesBucket(replicas int, ttl time.Duration) jetstream.KeyValueConfig {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return jetstream.KeyValueConfig{Bucket: BucketLeases, Description: "leader leases", Storage: jetstream.FileStorage, Replicas: max(replicas, 1), TTL: ttl}
}

// EnsureKVKeepTTL is EnsureKV for a bucket whose TTL is its keys'
// lifetime (leases, heartbeats): it creates the bucket with cfg, or updates
// an existing one to cfg with its TTL raised to cfg.TTL but never lowered,
// and returns the bucket's TTL after the call. Lowering it under running
// holders (a shadow or a canary with a lower setting, a rolling update
// lowering it) expires their keys between their renewals, so live holders
// look gone. Raising it is safe: keys live longer than their holders trust
// them. A caller whose cfg.TTL is below the returned one must renew, trust
// and wait by the returned one, as the holders already running do. Two
// callers starting at once with different TTLs can still race (read, then
// update); the next start settles it. Errors are EnsureKV's, or the
// bucket's status read's.
func EnsureKVKeepTTL(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, time.Duration, error) {
	kv, err := retryTransient(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, cfg.Bucket) })
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		kv, err = EnsureKV(ctx, js, cfg)
		return kv, cfg.TTL, err
	case err != nil:
		return nil, 0, fmt.Errorf("open kv %s: %w", cfg.Bucket, err)
	}
	st, err := retryTransient(ctx, func(ctx context.Context) (jetstream.KeyValueStatus, error) { return kv.Status(ctx) })
	if err != nil {
		return nil, 0, fmt.Errorf("status of kv %s: %w", cfg.Bucket, err)
	}
	cfg.TTL = max(cfg.TTL, st.TTL()) // kept: holders may be renewing by it
	kv, err = EnsureKV(ctx, js, cfg)
	return kv, cfg.TTL, err
}

// EnsureLeasesBucket is EnsureKVKeepTTL for BucketLeases with ttl (0 =
// DefaultLeaseTTL): a leader leads by the returned TTL.
func EnsureLeasesBucket(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration) (jetstream.KeyValue, time.Duration, error) {
	return EnsureKVKeepTTL(ctx, js, LeasesBucket(replicas, ttl))
}

// EnsureKV creates the bucket or updates it to cfg; safe to call from every
// replica at start-up. Transient JetStream errors (see Transient) are
// retried with backoff until ctx ends. It returns ErrInvalidConfig without
// a bucket name, or the JetStream error.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("bucket name is required: %w", ErrInvalidConfig)
	}
	kv, err := retryTransient(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateOrUpdateKeyValue(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("ensure kv %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// OpenKV opens the bucket, creating it with cfg when it does not exist yet;
// unlike EnsureKV it leaves an existing bucket's config alone (its owner
// sets it). Transient JetStream errors are retried until ctx ends.
func OpenKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := retryTransient(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, cfg)
			if errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = js.KeyValue(ctx, cfg.Bucket)
			}
		}
		return kv, err
	})
	if err != nil {
		return nil, fmt.Errorf("open kv %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// Buckets are the shared buckets returned by EnsureBuckets.
type Buckets struct {
	Objects jetstream.KeyValue
	Runners jetstream.KeyValue
	Leases  jetstream.KeyValue
}

// EnsureBuckets ensures BucketObjects, BucketRunners and BucketLeases (the
// latter as EnsureLeasesBucket does: its TTL is never lowered).
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, cfg BucketsConfig) (Buckets, error) {
	var b Buckets
	var err error
	if b.Objects, err = EnsureKV(ctx, js, ObjectsBucket(cfg.Replicas)); err != nil {
		return Buckets{}, err
	}
	if b.Runners, err = EnsureKV(ctx, js, RunnersBucket(cfg.Replicas)); err != nil {
		return Buckets{}, err
	}
	if b.Leases, _, err = EnsureLeasesBucket(ctx, js, cfg.Replicas, cfg.LeaseTTL); err != nil {
		return Buckets{}, err
	}
	return b, nil
}
