package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// Reopen, when set, is called before each watch opens and returns a
	// channel whose close (or a send) makes WatchKV replace that watch by
	// a fresh one at once: Initial is called again with the bucket's
	// values as they are then, without Broken and without backoff, and
	// the caller keeps its state until then. [Reconnects.Next] is made for
	// it. Why: a watch survives a NATS reconnect (nats.go resumes it after
	// the last message it saw), so it never learns of a message the server
	// removed meanwhile: a purge marker whose TTL ran out while the client
	// was away is a delete the watcher misses for good.
	Reopen func() <-chan struct{}
	// ReopenEvery, when positive, replaces a watch that long after it
	// opened, as Reopen does: the bound on a missed delete when nothing
	// told of the gap (the watch's consumer was recreated while the
	// connection stayed up).
	ReopenEvery time.Duration
}

// errReopen ends a watch that is replaced on purpose (KVWatch.Reopen and
// ReopenEvery): not a break.
var errReopen = errors.New("watch reopened on purpose")

// WatchKV watches every key of kv (with opts, e.g. jetstream.MetaOnly;
// never jetstream.UpdatesOnly, which has no initial values, nor
// jetstream.IgnoreDeletes, which hides the markers watchKV counts to know
// the initial values are complete) until ctx ends,
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
		var reopen <-chan struct{}
		if w.Reopen != nil {
			reopen = w.Reopen() // before the watch opens: a reconnect meanwhile is not missed
		}
		err := watchKV(ctx, kv, nil, initial, w.Update, opts, reopenAfter{signal: reopen, every: w.ReopenEvery})
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			b.Reset() // the watch was healthy: a new break starts fast again
		}
		if errors.Is(err, errReopen) {
			continue
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

// ReadKV returns the current live value of every key of kv (delete and
// purge markers left out; opts as for WatchKV): one watch that ends once
// its initial values are delivered, which costs one subscription instead
// of a Get per key. It returns ctx's error when ctx ends first,
// ErrWatchClosed, or the JetStream error.
//
// A key being written while the watch passes it can be missing from the
// watch's initial values (the server removes its older message and the
// watch ends its initial values before the newer one arrives:
// TestReadKVWhileKeysChange). A bucket that keeps one message per key must
// hold as many keys as messages, so its read waits for the keys it lacks
// (see readCounted); other buckets are read twice and merged.
func ReadKV(ctx context.Context, kv jetstream.KeyValue, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	return ReadKVKeys(ctx, kv, nil, opts...)
}

// ReadKVKeys is ReadKV for the keys matching filters (KV key filters such
// as "sessions.*"; nil means every key). A filtered read cannot be counted
// against the bucket, so it is always read twice and merged.
func ReadKVKeys(ctx context.Context, kv jetstream.KeyValue, filters []string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	if filters == nil {
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("read kv %s: %w", kv.Bucket(), err)
		}
		if st.History() == 1 {
			return readCounted(ctx, kv, opts)
		}
	}
	var set initialSet
	for range 2 {
		var out []jetstream.KeyValueEntry
		err := watchKV(ctx, kv, filters, func(es []jetstream.KeyValueEntry) { out = es }, nil, opts, reopenAfter{})
		if err == nil && out == nil && ctx.Err() != nil {
			err = fmt.Errorf("read kv %s: %w", kv.Bucket(), ctx.Err())
		}
		if err != nil {
			return nil, err
		}
		set.merge(out)
	}
	return set.live(), nil
}

// readCatchUp bounds how long readCounted waits, after a watch's initial
// values, for the keys they lacked. The wait normally ends at the first
// update of each missing key (see readCounted); the bound is for a count
// that keeps moving (keys created and purged all the time).
const readCatchUp = 2 * time.Second

// readCounted reads a bucket that keeps one message per key with one
// watch: its initial values, then its updates until the read holds as
// many keys as the bucket holds messages. A key the initial values lack
// was rewritten after the watch went past its older message, and its newer
// message came after the watch's last initial one, so it is the watch's
// next update of that key: the wait is short and the read complete. (Four
// rereads used to be the bound; under load a key could miss all four.)
// The count is checked again only when an update brings a key the read did
// not hold, the one thing that can complete it.
func readCounted(ctx context.Context, kv jetstream.KeyValue, opts []jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		set       initialSet
		initialed bool
		statusErr error
		catchUp   *time.Timer // set by the initial values; stopped on return
	)
	defer func() {
		if catchUp != nil {
			catchUp.Stop()
		}
	}()
	checkComplete := func() {
		st, err := kv.Status(wctx)
		switch {
		case err != nil:
			statusErr = err
			stop()
		case uint64(len(set.order)) >= st.Values():
			stop()
		}
	}
	err := watchKV(wctx, kv, nil, func(es []jetstream.KeyValueEntry) {
		initialed = true
		set.merge(es)
		catchUp = time.AfterFunc(readCatchUp, stop)
		checkComplete()
	}, func(e jetstream.KeyValueEntry) {
		before := len(set.order)
		set.keep(e)
		if len(set.order) > before {
			checkComplete()
		}
	}, opts, reopenAfter{})
	switch {
	case err != nil:
		return nil, err
	case ctx.Err() != nil:
		return nil, fmt.Errorf("read kv %s: %w", kv.Bucket(), ctx.Err())
	case statusErr != nil && !errors.Is(statusErr, context.Canceled):
		// Canceled is the read's own end (readCatchUp) racing the check.
		return nil, fmt.Errorf("read kv %s: %w", kv.Bucket(), statusErr)
	case !initialed:
		return nil, fmt.Errorf("read kv %s: %w", kv.Bucket(), ErrWatchClosed)
	}
	return set.live(), nil
}

// watchKV runs one watch of the keys matching filters (nil: all): initial
// once the initial values are in, then update for each change until ctx
// ends (nil) or the watch breaks. With a nil update it returns right after
// initial.
//
// The initial values are complete: nats.go's watcher announces their end
// (a nil entry) once it has received as many messages as were pending when
// it was created, but a key written meanwhile is delivered again later in
// the stream (its older value is gone from a bucket that keeps one per
// key), so another key's newer value may fill the count and the
// announcement come before the written key's value (TestReadKVWhileKeysChange:
// 1 key of 8 read). The initial set therefore lasts until an entry says
// nothing more is pending (Delta 0), each key's latest entry winning. That
// needs every message delivered, markers included: callers must not pass
// jetstream.IgnoreDeletes (ReadKV drops markers itself).
//
// It returns errReopen when re says the watch is to be replaced.
func watchKV(ctx context.Context, kv jetstream.KeyValue, filters []string, initial func([]jetstream.KeyValueEntry), update func(jetstream.KeyValueEntry), opts []jetstream.WatchOpt, re reopenAfter) error {
	var w jetstream.KeyWatcher
	var err error
	if filters == nil {
		w, err = kv.WatchAll(ctx, opts...)
	} else {
		// A copy: nats.go rewrites the keys it is given into subjects.
		w, err = kv.WatchFiltered(ctx, slices.Clone(filters), opts...)
	}
	if err != nil {
		return fmt.Errorf("watch kv %s: %w", kv.Bucket(), err)
	}
	defer func() {
		// Stop only ends the watch's subscription; nothing to handle.
		_ = w.Stop()
	}()
	var every <-chan time.Time
	if re.every > 0 {
		t := time.NewTimer(re.every)
		defer t.Stop()
		every = t.C
	}
	var set initialSet
	announced, synced := false, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-re.signal:
			return errReopen
		case <-every:
			return errReopen
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				if ctx.Err() != nil {
					// nats.go closes the channel when the watch's
					// context ends: the end asked for, not a break.
					return nil
				}
				return fmt.Errorf("watch kv %s: %w", kv.Bucket(), ErrWatchClosed)
			case synced:
				update(e)
				continue
			case e == nil:
				announced = true
			default:
				set.add(e)
			}
			if !announced || !set.caughtUp() {
				continue
			}
			initial(set.entries())
			if update == nil {
				return nil
			}
			synced, set = true, initialSet{}
		}
	}
}

// reopenAfter is when watchKV ends a healthy watch to be replaced: signal
// closed or sent on, or every after it opened (zero values: never).
type reopenAfter struct {
	signal <-chan struct{}
	every  time.Duration
}

// initialSet gathers a watch's initial values: the latest entry of each
// key, in the order keys first appeared.
type initialSet struct {
	order []string
	last  map[string]jetstream.KeyValueEntry
	// pending is the Delta of the last entry received: how many messages
	// the watch had still to deliver after it. any: an entry was received.
	pending uint64
	any     bool
}

func (s *initialSet) add(e jetstream.KeyValueEntry) {
	s.keep(e)
	s.pending, s.any = e.Delta(), true
}

// keep records e unless the set holds a newer entry of its key.
func (s *initialSet) keep(e jetstream.KeyValueEntry) {
	if s.last == nil {
		s.last = map[string]jetstream.KeyValueEntry{}
	}
	old, seen := s.last[e.Key()]
	switch {
	case !seen:
		s.order = append(s.order, e.Key())
		s.last[e.Key()] = e
	case e.Revision() > old.Revision():
		s.last[e.Key()] = e
	}
}

// caughtUp reports whether nothing was pending after the last entry (or
// there was no entry at all: the watcher found the bucket empty).
func (s *initialSet) caughtUp() bool { return !s.any || s.pending == 0 }

// merge adds es, each key's entry of the higher revision winning.
func (s *initialSet) merge(es []jetstream.KeyValueEntry) {
	for _, e := range es {
		s.keep(e)
	}
}

// live returns the set without delete and purge markers (never nil).
func (s *initialSet) live() []jetstream.KeyValueEntry {
	return slices.DeleteFunc(s.entries(), func(e jetstream.KeyValueEntry) bool {
		op := e.Operation()
		return op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge
	})
}

// entries returns the set (never nil).
func (s *initialSet) entries() []jetstream.KeyValueEntry {
	out := make([]jetstream.KeyValueEntry, 0, len(s.order))
	for _, k := range s.order {
		out = append(out, s.last[k])
	}
	return out
}
