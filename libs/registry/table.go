package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/singleflight"

	"github.com/ambient-code/control-plane/libs/bus"
)

// Table is an in-memory routing map of session id -> endpoint kept current by
// a KV watch ([Table.Run]). Lookups never touch the network. Safe for
// concurrent use.
type Table struct {
	mu      sync.RWMutex
	entries map[string]Record // guarded by mu; keyed by KV key (Key(session id))
	ready   atomic.Bool
	synced  chan struct{} // closed once, after the first full snapshot
	once    sync.Once
	lastErr atomic.Pointer[error]
	removed func(sessionID string) // never nil; see WithOnRemove
	// reopen and reopenEvery make Run read the bucket afresh: see
	// WithReopen.
	reopen      func() <-chan struct{}
	reopenEvery time.Duration

	// What Resolve's read-through needs (guarded by mu): the bucket Run
	// watches, the revision of the last message the watch applied, and a
	// channel closed (and dropped) at the next apply, made only while a
	// Resolve waits for one.
	kv      jetstream.KeyValue
	applied uint64
	changed chan struct{}
	// reads makes concurrent misses of one session share one read;
	// readSlots bounds the reads in flight.
	reads     singleflight.Group
	readSlots chan struct{}
}

// Read-through bounds (Resolve): the reads in flight at once, and how long
// one Resolve may take in all (the read and the wait for the watch).
const (
	maxReads    = 16
	resolveWait = 2 * time.Second
)

// errReadsBusy is a read-through not made: maxReads were in flight.
var errReadsBusy = errors.New("routing reads busy")

// TableOption configures a Table.
type TableOption func(*Table)

// WithOnRemove calls fn with the session id of every record that leaves
// the table: deleted or purged, missing from the fresh snapshot after a
// broken watch, or replaced by a record of another project (the old
// record's facts no longer hold). fn runs on Run's goroutine while the
// table is locked: it must be quick and must not call the table.
func WithOnRemove(fn func(sessionID string)) TableOption {
	return func(t *Table) {
		if fn != nil {
			t.removed = fn
		}
	}
}

// WithReopen makes Run read the bucket afresh (a new watch whose initial
// values replace the table) whenever a channel from next closes, and every
// interval (when positive). next is meant to be the NATS connection's
// [bus.Reconnects.Next]. Without it a record purged with an expiring
// marker (runner-manager's release, WithMarkerTTL) while the table's
// connection was away longer than the marker lived stays in the table for
// good: the watch resumes after the last message it saw and the marker is
// gone, so the session keeps routing to its old port, where another
// session's runner may listen by then. The interval bounds that when no
// reconnect told of the gap (the watch's consumer was recreated while the
// connection stayed up).
func WithReopen(next func() <-chan struct{}, every time.Duration) TableOption {
	return func(t *Table) {
		t.reopen, t.reopenEvery = next, every
	}
}

// NewTable returns an empty table; call Run to fill it.
func NewTable(opts ...TableOption) *Table {
	t := &Table{entries: map[string]Record{}, synced: make(chan struct{}), removed: func(string) {}, readSlots: make(chan struct{}, maxReads)}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Lookup returns the endpoint of a session if it is routable (has a host and
// a port). Records of claimed but not yet started runners are not returned.
func (t *Table) Lookup(sessionID string) (Endpoint, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r, ok := t.entries[Key(sessionID)]
	if !ok || !r.Routable() {
		return Endpoint{}, false
	}
	return r.Endpoint, true
}

// Resolve is Lookup with a read-through for a session the table lacks.
//
// Why: the table follows the bucket by a watch, so it can lag a record
// just written by a few milliseconds, and a client asks for exactly such a
// record: runner-manager registers a runner and then reports the session
// Running, and a client that reads Running opens its stream at once (it
// got 404 "unknown session" now and then). On a miss Resolve reads the key
// from the bucket; when the bucket holds a routable record, Resolve waits
// until the watch has applied that record's revision and answers from the
// table. The table stays written by its watch alone, so a read can never
// put back a record the watch has already removed.
//
// Misses of one session share one read, at most maxReads run at once (a
// miss beyond them is answered from the table alone), and Resolve returns
// within ctx and resolveWait. Before Run's first snapshot, and while its
// watch is broken, a miss is a miss.
func (t *Table) Resolve(ctx context.Context, sessionID string) (Endpoint, bool) {
	if ep, ok := t.Lookup(sessionID); ok {
		return ep, true
	}
	t.mu.RLock()
	kv := t.kv
	t.mu.RUnlock()
	if kv == nil || !t.ready.Load() {
		return Endpoint{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, resolveWait)
	defer cancel()
	key := Key(sessionID)
	// The read is shared: it must not end with the context of the caller
	// that happened to start it.
	v, err, _ := t.reads.Do(key, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveWait)
		defer cancel()
		return t.readRevision(rctx, kv, key)
	})
	rev, _ := v.(uint64) //nolint:errcheck // readRevision returns a uint64 or an error
	if err != nil || rev == 0 {
		return Endpoint{}, false
	}
	return t.awaitApplied(ctx, key, rev)
}

// readRevision returns the revision of key's record in kv when it is a
// routable record of that key, and 0 when there is none.
func (t *Table) readRevision(ctx context.Context, kv jetstream.KeyValue, key string) (uint64, error) {
	select {
	case t.readSlots <- struct{}{}:
		defer func() { <-t.readSlots }()
	default:
		return 0, errReadsBusy
	}
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read route %s: %w", key, err)
	}
	ep, err := Decode(e.Value())
	if err != nil || Key(ep.SessionID) != key || !ep.Routable() {
		return 0, nil
	}
	return e.Revision(), nil
}

// awaitApplied waits until the watch has applied revision rev (or the
// record of key is in the table) and returns what the table then holds.
func (t *Table) awaitApplied(ctx context.Context, key string, rev uint64) (Endpoint, bool) {
	for {
		t.mu.Lock()
		r, ok := t.entries[key]
		switch {
		case ok && r.Routable():
			t.mu.Unlock()
			return r.Endpoint, true
		case t.applied >= rev:
			// The watch is past the record read: gone again meanwhile.
			t.mu.Unlock()
			return Endpoint{}, false
		}
		if t.changed == nil {
			t.changed = make(chan struct{})
		}
		changed := t.changed
		t.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Endpoint{}, false
		}
	}
}

// appliedLocked records that the watch applied the message at rev and
// wakes the Resolves waiting for it. t.mu must be held.
func (t *Table) appliedLocked(rev uint64) {
	t.applied = rev
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
}

// Len returns the number of records (routable or not).
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.entries)
}

// Snapshot returns a copy of all records.
func (t *Table) Snapshot() []Record {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]Record, 0, len(t.entries))
	for _, r := range t.entries {
		out = append(out, r)
	}
	return out
}

// Ready reports whether the table holds a full snapshot of the bucket (the
// watch delivered its initial values) and the watch is live.
func (t *Table) Ready() bool { return t.ready.Load() }

// Err returns the error that last broke the watch, or nil.
func (t *Table) Err() error {
	if p := t.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Synced returns a channel closed after the first full snapshot.
func (t *Table) Synced() <-chan struct{} { return t.synced }

// Run watches kv (bus.WatchKV) and keeps the table current until ctx ends;
// it then returns nil. If the watch breaks it is reopened with backoff and
// the table is rebuilt from the fresh values, so deletes missed meanwhile
// are applied; until then Ready is false and Err says why (a reopen asked
// by WithReopen keeps the table and Ready until the fresh values replace
// them). Run must not be
// called twice concurrently on one table.
func (t *Table) Run(ctx context.Context, kv jetstream.KeyValue) error {
	t.mu.Lock()
	t.kv = kv
	t.mu.Unlock()
	err := bus.WatchKV(ctx, kv, bus.KVWatch{
		Initial: func(es []jetstream.KeyValueEntry) {
			// A fresh map swapped in whole, so records deleted while a
			// previous watch was down vanish (and are reported removed).
			m := make(map[string]Record, len(es))
			var last uint64
			for _, e := range es {
				applyEntry(m, e, func(string) {})
				last = max(last, e.Revision())
			}
			t.mu.Lock()
			for k, old := range t.entries {
				if now, ok := m[k]; !ok || now.ProjectID != old.ProjectID {
					t.removed(old.SessionID)
				}
			}
			t.entries = m
			t.appliedLocked(last)
			t.mu.Unlock()
			t.lastErr.Store(nil)
			t.ready.Store(true)
			t.once.Do(func() { close(t.synced) })
		},
		Update: func(e jetstream.KeyValueEntry) {
			t.mu.Lock()
			applyEntry(t.entries, e, t.removed)
			t.appliedLocked(e.Revision())
			t.mu.Unlock()
		},
		Broken: func(err error, _ time.Duration) {
			t.ready.Store(false)
			t.lastErr.Store(&err)
		},
		Reopen:      t.reopen,
		ReopenEvery: t.reopenEvery,
	})
	t.ready.Store(false)
	if err != nil {
		return fmt.Errorf("watch runners: %w", err)
	}
	return nil
}

// applyEntry applies one watch entry to m and tells removed about a record
// that left or changed project.
func applyEntry(m map[string]Record, e jetstream.KeyValueEntry, removed func(sessionID string)) {
	if !isSessionKey(e.Key()) {
		return
	}
	old, had := m[e.Key()]
	drop := func() {
		delete(m, e.Key())
		if had {
			removed(old.SessionID)
		}
	}
	if e.Operation() != jetstream.KeyValuePut {
		drop()
		return
	}
	ep, err := Decode(e.Value())
	if err != nil || Key(ep.SessionID) != e.Key() {
		// Garbage, or a record filed under another session's key: not routable.
		drop()
		return
	}
	if had && old.ProjectID != ep.ProjectID {
		removed(old.SessionID)
	}
	m[e.Key()] = Record{Endpoint: ep, Revision: e.Revision()}
}
