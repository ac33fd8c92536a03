package publish

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/events"
)

// owedKeyPrefix starts the objects-bucket key of each resource's owed
// floor (OwedKey). Its first token is no resource token, so readers of
// the bucket that parse keys as object keys (events.ParseObjectKey: the KV
// audit, kube-reconciler's resync) skip it, and Load's "<resource>.*"
// never sees it.
const owedKeyPrefix = "informer-owed."

// OwedKey is the objects-bucket key that holds the owed floor of T's
// resource: the lowest stream sequence of an event whose KV write the
// leader still owes (its write failed and is being retried). The key
// exists only while a write is owed; a new leader reads the stream's tail
// from there (Tail), however far behind KV's position that is.
//
// Why a key of its own: TailMargin covers the writes in flight when a term
// ends, not one that failed and stays owed while later writes land (a
// bucket refusing one key, a KV leader election that rejects a burst
// while the retries back off up to 5 s at thousands of events a second).
// A term ending then more than TailMargin sequences after the owed event
// left the next leader blind to it: an object whose ADDED never reached
// KV, deleted before that leader listed, was never announced as deleted.
// The lease cannot carry the floor: its bucket's TTL removes the key when
// its holder dies, before a new leader can read it.
func OwedKey[T events.APIObject]() string {
	return owedKeyPrefix + events.ResourceToken(events.ResourceOf[T]())
}

// ReadOwed returns the owed floor of T's resource (0: nothing owed, or a
// value no informer wrote).
func ReadOwed[T events.APIObject](ctx context.Context, p *Publisher) (uint64, error) {
	key := OwedKey[T]()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	e, err := p.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	seq, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, nil //nolint:nilerr // not ours: read the tail from KV's position, as without a floor
	}
	return seq, nil
}

// StoreOwed writes the owed floor of T's resource: seq, or no key for 0
// (removed like a deleted object's, with a marker that expires). Callers
// lower it before the owed event can fall out of TailMargin, and raise or
// remove it only once the writes below the new value landed: a floor
// above an owed event is the gap it exists to close, one below costs the
// next leader a longer read.
func StoreOwed[T events.APIObject](ctx context.Context, p *Publisher, seq uint64) error {
	key := OwedKey[T]()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var value []byte
	if seq > 0 {
		value = strconv.AppendUint(nil, seq, 10)
	}
	if err := p.write(ctx, key, value); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}
