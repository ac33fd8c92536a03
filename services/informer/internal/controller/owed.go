package controller

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
)

// Pacing of the owed floor's writes (keepOwed): a floor that goes down is
// written at once, and a floor that goes up or away waits owedPace after
// the last write, so a KV that fails one write in a hundred costs a floor
// write a second, not two per failure. A failed write is retried after a
// backoff from owedRetry, doubling to owedRetryMax (jittered, reset by a
// write that lands): a KV that refuses every write (down, or full) is
// asked and logged about every 5 s, not ten times a second.
const (
	owedPace     = time.Second
	owedRetry    = 100 * time.Millisecond
	owedRetryMax = 5 * time.Second
	owedJitter   = 0.25
	// owedTimeout bounds the floor's write at the start of a term.
	owedTimeout = 10 * time.Second
)

// owedWrites are the ids whose KV write is owed, each with the stream
// sequence of the event it owes (0: unknown), safe for concurrent use.
//
// Its floor (lowest) is the lowest known sequence added since the set was
// last empty, not the lowest still owed: kept in O(1) per add and remove,
// it only goes down until nothing is owed, so a set of every object (after
// a KV outage) costs no scan. held, when set, is a floor of an earlier
// term this one could not check (see Lead): it stays for the whole term.
type owedWrites struct {
	mu    sync.Mutex
	seqs  map[string]uint64 // guarded by mu
	floor uint64            // guarded by mu; 0: none known
	held  uint64            // guarded by mu; 0: none
	// changed holds one token when the floor may have changed; buffered 1
	// so add and remove never block.
	changed chan struct{}
}

func newOwedWrites() *owedWrites {
	return &owedWrites{seqs: map[string]uint64{}, changed: make(chan struct{}, 1)}
}

func (o *owedWrites) signal() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

// add records that id owes the KV write of the event at seq (0: unknown).
// An id owed already keeps its lower sequence.
func (o *owedWrites) add(id string, seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev, ok := o.seqs[id]; ok && prev != 0 && (seq == 0 || prev < seq) {
		seq = prev
	}
	o.seqs[id] = seq
	if seq != 0 && (o.floor == 0 || seq < o.floor) {
		o.floor = seq
		o.signal()
	}
}

// remove records that id's KV write landed.
func (o *owedWrites) remove(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.seqs[id]; !ok {
		return
	}
	delete(o.seqs, id)
	if len(o.seqs) == 0 && o.floor != 0 {
		o.floor = 0
		o.signal()
	}
}

func (o *owedWrites) has(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.seqs[id]
	return ok
}

// hold keeps seq in the floor for the rest of the term (0: nothing).
func (o *owedWrites) hold(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.held = seq
	o.signal()
}

// lowest is the floor to persist: the stream sequence a new leader must
// read the tail from to see every owed write (0: none owed).
func (o *owedWrites) lowest() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.held == 0:
		return o.floor
	case o.floor == 0:
		return o.held
	}
	return min(o.floor, o.held)
}

// storeOwed writes the owed floor want over stored and returns what the
// key now holds.
func (r *Resource[T]) storeOwed(ctx context.Context, stored publish.Floor, want uint64) (publish.Floor, error) {
	stored, err := publish.StoreOwed[T](ctx, r.pub, stored, want)
	if err != nil {
		return stored, err
	}
	if want != 0 {
		r.log.Warn("kv writes owed: the next leader reads the events stream from the first", slog.Uint64(logkey.Seq, want))
	} else {
		r.log.Info("no kv write owed any more")
	}
	return stored, nil
}

// keepOwed keeps the owed floor (publish.OwedKey) in step with t's owed
// writes until ctx ends; stored is what the key holds. A lower floor is
// written at once: the owed event must not drop out of the next leader's
// TailMargin before the floor covers it, and at thousands of events a
// second that takes about two seconds. The writes stop with the term
// (lease lost: at once), and each expects the key's revision this term
// knows (publish.StoreOwed), so a deposed leader's late write never lands
// over the next one's floor; a floor left behind only makes the next
// leader read more.
func (r *Resource[T]) keepOwed(ctx context.Context, t *term, stored publish.Floor) error {
	keepFloor(ctx, t.unstored, stored.Seq, func(ctx context.Context, want uint64) (uint64, error) {
		var err error
		stored, err = r.storeOwed(ctx, stored, want)
		return stored.Seq, err
	}, r.log)
	return nil
}

// keepFloor is keepOwed's loop: it writes owed's floor with write, which
// returns the floor the key holds afterwards (stored: before the first),
// paced and backed off as the constants above say, until ctx ends.
func keepFloor(ctx context.Context, owed *owedWrites, stored uint64, write func(ctx context.Context, want uint64) (uint64, error), log *slog.Logger) {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     owedRetry,
		RandomizationFactor: owedJitter,
		Multiplier:          2,
		MaxInterval:         owedRetryMax,
	}
	b.Reset()
	var pace <-chan time.Time  // set after each write: raises wait for it
	var retry <-chan time.Time // set after a failed write: every write waits for it
	for {
		select {
		case <-ctx.Done():
			return
		case <-owed.changed:
		case <-pace:
			pace = nil
		case <-retry:
			retry = nil
		}
		if retry != nil {
			continue // the backoff brings the loop back, lower floor or not
		}
		want := owed.lowest()
		if want == stored {
			continue
		}
		lower := want != 0 && (stored == 0 || want < stored)
		if !lower && pace != nil {
			continue // pace brings the loop back
		}
		var err error
		if stored, err = write(ctx, want); err != nil {
			if ctx.Err() != nil {
				return
			}
			// Capped after the jitter: owedRetryMax is the longest wait.
			d := min(b.NextBackOff(), owedRetryMax)
			log.Warn("owed floor write failed, retrying", slog.Uint64(logkey.Seq, want), slog.Duration(logkey.Duration, d), slog.Any(logkey.Err, err))
			retry, pace = time.After(d), nil
			continue
		}
		b.Reset()
		pace = time.After(owedPace)
	}
}
