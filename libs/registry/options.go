package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MinMarkerTTL is the smallest marker TTL: the server's per-message TTLs
// have a resolution of one second.
const MinMarkerTTL = time.Second

// Option adjusts [Release].
type Option func(*options) error

type options struct {
	markerTTL time.Duration
}

// WithMarkerTTL makes Release purge the record with a marker that the
// server removes after ttl, instead of leaving a delete marker for ever
// (a bucket that held one marker per session ever run grew without
// bound: issue 14). The bucket needs LimitMarkerTTL set
// (jetstream.KeyValueConfig), and ttl must be at least [MinMarkerTTL];
// it returns [ErrInvalidOption] otherwise. Watchers see the purge as a
// delete; a watcher away for longer than ttl never sees it (its watch
// resumes after the marker is gone) unless it reads the bucket afresh
// after a reconnect, where the key is absent: a Table does with
// [WithReopen].
func WithMarkerTTL(ttl time.Duration) Option {
	return func(o *options) error {
		if ttl < MinMarkerTTL {
			return fmt.Errorf("marker ttl %v: want >= %v: %w", ttl, MinMarkerTTL, ErrInvalidOption)
		}
		o.markerTTL = ttl
		return nil
	}
}

func applyOptions(opts []Option) (options, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return options{}, err
		}
	}
	return o, nil
}

// deleteOpts is how a record at revision rev (0: any) is removed.
func (o options) deleteOpts(rev uint64) []jetstream.KVDeleteOpt {
	var out []jetstream.KVDeleteOpt
	if rev != 0 {
		out = append(out, jetstream.LastRevision(rev))
	}
	if o.markerTTL > 0 {
		out = append(out, jetstream.PurgeTTL(o.markerTTL))
	}
	return out
}

// remove deletes key with o: a purge with an expiring marker when o has a
// marker TTL, else a plain delete (a marker that stays).
func (o options) remove(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) error {
	if o.markerTTL > 0 {
		return kv.Purge(ctx, key, o.deleteOpts(rev)...)
	}
	return kv.Delete(ctx, key, o.deleteOpts(rev)...)
}
