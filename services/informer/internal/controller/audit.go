package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
	"github.com/ambient-code/control-plane/services/informer/internal/watch"
)

// auditKV compares the objects bucket with the store every
// Config.AuditInterval while the watch is synced, and makes each id whose
// entry disagrees with its published state owe its KV write (the workers
// write the published state again: the entry, or its purge).
//
// KV is this leader's to keep, yet it can change under it: a NATS server
// that rebuilds its store after an unclean shutdown can bring back the last
// value of a key purged with a marker TTL once the marker expires
// (nats-io/nats-server#8505), and a rebuilt replica that then leads the
// bucket serves it to every reader. Readers of the bucket (kube-reconciler's
// resync) would take such an entry for a live object and create its
// AgenticSession again; this audit bounds that to one interval. A write the
// audit asks for is idempotent: a state that changes meanwhile is written by
// its own publish after it.
func (r *Resource[T]) auditKV(ctx context.Context, store *diff.Store[T], w *watch.Watcher[T], t *term) error {
	if r.cfg.AuditInterval <= 0 {
		return nil
	}
	tk := time.NewTicker(r.cfg.AuditInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		if !w.Connected() {
			continue // the store may lack what the API holds: nothing to compare yet
		}
		err := r.audit(ctx, store, t)
		if gerr := r.goneError(ctx, err); gerr != nil && ctx.Err() == nil {
			// The bucket is gone: nothing to repair entry by entry.
			return fmt.Errorf("kv audit: %w", gerr)
		}
		if err != nil && ctx.Err() == nil {
			r.log.Warn("kv audit failed, the next one retries", slog.Any(logkey.Err, err))
		}
	}
}

// audit runs one comparison of KV with the store.
func (r *Resource[T]) audit(ctx context.Context, store *diff.Store[T], t *term) error {
	actx, cancel := context.WithTimeout(ctx, max(r.cfg.AuditInterval, loadTimeout))
	defer cancel()
	res := r.Kind()
	es, err := bus.ReadKVKeys(actx, r.kv, []string{events.ResourceToken(res) + ".*"}, jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	stored := make(map[string]bool, len(es))
	for _, e := range es {
		if kres, id, err := events.ParseObjectKey(e.Key()); err == nil && kres == res {
			stored[id] = true
		}
	}
	ids := store.Disagreeing(stored)
	// A published state over the payload limit was never written (KV keeps
	// the last state that fitted, or nothing when none did): its missing
	// entry is no disagreement, and a write would skip it again.
	ids = slices.DeleteFunc(ids, func(id string) bool {
		state, present := store.PublishedState(id)
		return present && !stored[id] && !r.pub.Storable(state)
	})
	r.m.kvAudits.Add(ctx, 1, resAttr(res))
	if len(ids) == 0 {
		return nil
	}
	for _, id := range ids {
		_, seq, _ := store.PublishedSeq(id)
		t.unstored.add(id, seq)
		t.q.Add(id)
	}
	r.m.kvRepairs.Add(ctx, int64(len(ids)), resAttr(res))
	r.log.Warn("kv disagreed with the published state: entries written again", slog.Int(logkey.Count, len(ids)), slog.Int("kv_entries", len(stored)))
	return nil
}
