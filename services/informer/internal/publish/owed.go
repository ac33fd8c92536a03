package publish

import (
	"context"
	"fmt"
	"strconv"
	"time"

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

// Floor is the owed floor as the objects bucket holds it: Seq (0: none)
// and Rev, the revision of the key's last entry (0: none), which the
// next write of the key expects (StoreOwed).
type Floor struct {
	Seq, Rev uint64
}

// ReadOwed returns the owed floor of T's resource (Seq 0: nothing owed, or
// a value no informer wrote) and the revision of its key's last entry,
// a removal's marker included.
func ReadOwed[T events.APIObject](ctx context.Context, p *Publisher) (Floor, error) {
	return ReadOwedSince[T](ctx, p, time.Time{})
}

// ReadOwedSince is ReadOwed for the events stream created at since
// (Publisher.StreamCreated): a floor written before it names a sequence of
// a stream lost since, and counts as none (its revision still does).
func ReadOwedSince[T events.APIObject](ctx context.Context, p *Publisher, since time.Time) (Floor, error) {
	key := OwedKey[T]()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	last, err := p.lastKV(ctx, key)
	switch {
	case err != nil:
		return Floor{}, fmt.Errorf("read %s: %w", key, err)
	case last == nil:
		return Floor{}, nil
	case last.Header.Get(kvOpHeader) != "":
		return Floor{Rev: last.Sequence}, nil // removed
	}
	seq, err := strconv.ParseUint(string(last.Data), 10, 64)
	if err != nil {
		// Not ours: read the tail from KV's position, as without a floor.
		return Floor{Rev: last.Sequence}, nil //nolint:nilerr // see above
	}
	if last.Time.Before(since) {
		return Floor{Rev: last.Sequence}, nil
	}
	return Floor{Seq: seq, Rev: last.Sequence}, nil
}

// StoreOwed writes the owed floor seq of T's resource over stored (what
// the key holds, as ReadOwed or the last StoreOwed returned it), or
// removes the key for 0 (a purge, like a deleted object's, with a marker
// that expires), and returns what the key holds then. Callers lower it
// before the owed event can fall out of TailMargin, and raise or remove it
// only once the writes below the new value landed: a floor above an owed
// event is the gap it exists to close, one below costs the next leader a
// longer read.
//
// Fenced like an object's entry: the write expects stored.Rev as the
// key's last revision, so a deposed leader's late write (a raise or a
// removal) cannot land over its successor's floor and hide that one's
// owed writes from the next leader; a refusal is settled by kvConflict
// (the lease reconfirmed first).
func StoreOwed[T events.APIObject](ctx context.Context, p *Publisher, stored Floor, seq uint64) (Floor, error) {
	key := OwedKey[T]()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var value []byte
	if seq > 0 {
		value = strconv.AppendUint(nil, seq, 10)
	}
	rev, err := p.writeKey(ctx, events.ResourceOf[T](), key, value, 0, stored.Rev)
	if err != nil {
		return stored, fmt.Errorf("store %s: %w", key, err)
	}
	return Floor{Seq: seq, Rev: rev}, nil
}
