package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// Reopen backoff of a broken KV watch: from watchRetryMin doubling to
// watchRetryMax, +/-25 %; back to the start once a reopened watch has
// delivered its initial values.
const (
	watchRetryMin = 250 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// KVWatch is what [WatchKV] does with what it sees. Initial and Update are
// called from WatchKV's goroutine, one at a time.
type KVWatch struct {
	// Initial receives the bucket's current values each time the watch
	// opens, before any update: the last entry of every key, delete and
	// purge markers included unless the watch ignores deletes. After a
	// break it is called again with the values as they are then, so a
	// caller that rebuilds its state from it misses nothing that changed
	// meanwhile, deletes included. Required.
	Initial func(entries []jetstream.KeyValueEntry)
	// Update receives every later change, in order. Required.
	Update func(e jetstream.KeyValueEntry)
	// Broken, when set, is told why the watch broke and how long until it
	// reopens.
	Broken func(err error, reopen time.Duration)
}

// WatchKV watches every key of kv (with opts, e.g. jetstream.IgnoreDeletes;
// never jetstream.UpdatesOnly, which has no initial values) until ctx ends,
// and then returns nil. A watch that breaks is reopened with backoff. It
// returns ErrInvalidConfig when Initial or Update is nil.
func WatchKV(ctx context.Context, kv jetstream.KeyValue, w KVWatch, opts ...jetstream.WatchOpt) error {
	if w.Initial == nil || w.Update == nil {
		return fmt.Errorf("kv watch needs Initial and Update: %w", ErrInvalidConfig)
	}
	b := &backoff.ExponentialBackOff{InitialInterval: watchRetryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: watchRetryMax}
	b.Reset()
	for {
		synced := false
		initial := func(es []jetstream.KeyValueEntry) {
			synced = true
			w.Initial(es)
		}
		err := watchKV(ctx, kv, nil, initial, w.Update, opts)
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			b.Reset() // the watch was healthy: a new break starts fast again
		}
		d := b.NextBackOff()
		if w.Broken != nil {
			w.Broken(err, d)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// ReadKV returns the current value of every key of kv (with opts, as for
// WatchKV): one watch that ends once its initial values are delivered,
// which costs one subscription instead of a Get per key. It returns ctx's
// error when ctx ends first, ErrWatchClosed, or the JetStream error.
func ReadKV(ctx context.Context, kv jetstream.KeyValue, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	return ReadKVKeys(ctx, kv, nil, opts...)
}

// ReadKVKeys is ReadKV for the keys matching filters (KV key filters such
// as "sessions.*"; nil means every key).
func ReadKVKeys(ctx context.Context, kv jetstream.KeyValue, filters []string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	var out []jetstream.KeyValueEntry
	err := watchKV(ctx, kv, filters, func(es []jetstream.KeyValueEntry) { out = es }, nil, opts)
	if err == nil && out == nil && ctx.Err() != nil {
		err = fmt.Errorf("read kv %s: %w", kv.Bucket(), ctx.Err())
	}
	return out, err
}

// watchKV runs one watch of the keys matching filters (nil: all): initial
// once the initial values are in, then update for each change until ctx
// ends (nil) or the watch breaks. With a nil update it returns right after
// initial.
func watchKV(ctx context.Context, kv jetstream.KeyValue, filters []string, initial func([]jetstream.KeyValueEntry), update func(jetstream.KeyValueEntry), opts []jetstream.WatchOpt) error {
	var w jetstream.KeyWatcher
	var err error
	if filters == nil {
		w, err = kv.WatchAll(ctx, opts...)
	} else {
		w, err = kv.WatchFiltered(ctx, filters, opts...)
	}
	if err != nil {
		return fmt.Errorf("watch kv %s: %w", kv.Bucket(), err)
	}
	defer func() {
		// Stop only ends the watch's subscription; nothing to handle.
		_ = w.Stop()
	}()
	var entries []jetstream.KeyValueEntry
	synced := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return fmt.Errorf("watch kv %s: %w", kv.Bucket(), ErrWatchClosed)
			case synced:
				update(e)
			case e != nil:
				entries = append(entries, e)
			default: // nil: the initial values are delivered
				if entries == nil {
					entries = []jetstream.KeyValueEntry{}
				}
				initial(entries)
				if update == nil {
					return nil
				}
				synced, entries = true, nil
			}
		}
	}
}
