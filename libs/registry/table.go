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

	// Freshness (see WithStaleAfter). epoch is the table's start on the
	// monotonic clock; freshAt is when (ns after epoch) the table was last
	// confirmed current, 0 before the first snapshot. staleAfter 0: never
	// stale. beatEvery is the heartbeat's interval (heartbeat in Run).
	epoch      time.Time
	freshAt    atomic.Int64
	staleAfter time.Duration
	beatEvery  time.Duration
	// created is when the bucket the watch reads was created (guarded by
	// mu; zero: not known yet), snapshots counts the watch's initial
	// snapshots (guarded by mu), and reopenNow asks Run's watch to read
	// the bucket afresh: a recreated bucket, or a table that was stale.
	created   time.Time
	snapshots uint64
	reopenNow chan struct{}
	// reopenAsked is set while a reopen the heartbeat asked (a stale
	// table, a watch that lags) awaits its snapshot: asked again at every
	// beat, a snapshot slower than a beat would never arrive.
	reopenAsked atomic.Bool
	// pendingSeq and pendingAt (guarded by mu; pendingAt 0: none) are a
	// beat's answer the watch has not caught up with yet: the stream's
	// last sequence when the beat asked, at pendingAt. The table is
	// current as of pendingAt once the watch has applied pendingSeq; a
	// status answer alone says nothing of a watch that has stopped
	// receiving (its consumer lost while the connection stays up) or lags.
	pendingSeq uint64
	pendingAt  int64
	// beatApplied is applied as the last beat saw it (guarded by mu): a
	// watch behind the server that applied nothing since is read afresh.
	beatApplied uint64
	// openedSeq is the stream's last sequence before the current watch
	// opened (guarded by mu; 0: unknown): its snapshot holds everything
	// up to there, messages removed since (an expired marker) included.
	openedSeq uint64
	// opening is set (guarded by mu) from a watch's (re)open until its
	// snapshot: a bucket check made meanwhile may already see the new
	// bucket while the table still holds the old one.
	opening bool
}

// Read-through bounds (Resolve): the reads in flight at once, and how long
// one Resolve may take in all (the read and the wait for the watch).
const (
	maxReads    = 16
	resolveWait = 2 * time.Second
)

// errReadsBusy is a read-through not made: maxReads were in flight.
var errReadsBusy = errors.New("routing reads busy")

// maxBeatEvery is the longest interval of Run's heartbeat: the table
// learns of a recreated bucket within about that long.
const maxBeatEvery = 2 * time.Second

// bucketCheck is the singleflight key of the bucket's identity check
// (Resolve's): not a KV key, so it never meets a read's.
const bucketCheck = "\x00bucket"

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

// WithStaleAfter bounds how old the table's view of the bucket may be
// while it still routes: a table not confirmed current for longer than d
// routes nothing (Lookup misses, Resolve returns ErrStale, Fresh fails)
// until a fresh snapshot of the bucket has replaced it.
//
// Why: a watch cut off from NATS hears nothing, so the table would keep
// its last snapshot however old. Meanwhile the writer (runner-manager,
// still connected) may release a session and give its port to another
// session's runner; the stale record would then route the first
// session's clients to the other session's runner, another project's. So
// the writer must wait longer than d plus Run's heartbeat interval
// (min(2s, d/4)) before it gives a released port to another runner. Zero
// (the default) never goes stale.
func WithStaleAfter(d time.Duration) TableOption {
	return func(t *Table) {
		t.staleAfter = max(d, 0)
	}
}

// NewTable returns an empty table; call Run to fill it.
func NewTable(opts ...TableOption) *Table {
	t := &Table{entries: map[string]Record{}, synced: make(chan struct{}), removed: func(string) {}, readSlots: make(chan struct{}, maxReads),
		epoch: time.Now(), beatEvery: maxBeatEvery, reopenNow: make(chan struct{}, 1)}
	for _, o := range opts {
		o(t)
	}
	if t.staleAfter > 0 {
		// Several beats per bound: one lost round trip does not make the
		// table stale.
		t.beatEvery = min(maxBeatEvery, t.staleAfter/4)
	}
	return t
}

// Lookup returns the endpoint of a session if it is routable (has a host and
// a port). Records of claimed but not yet started runners are not returned,
// nor any record while the table is stale (WithStaleAfter).
func (t *Table) Lookup(sessionID string) (Endpoint, bool) {
	if t.Fresh() != nil {
		return Endpoint{}, false
	}
	return t.Known(sessionID)
}

// Known is Lookup without the freshness bound: the endpoint the table
// last knew for a session. It is for what is routed already (a stream
// opened while the table was fresh, checked against the table's
// changes), never for routing a new request.
func (t *Table) Known(sessionID string) (Endpoint, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r, ok := t.entries[Key(sessionID)]
	if !ok || !r.Routable() {
		return Endpoint{}, false
	}
	return r.Endpoint, true
}

// Resolve is Lookup with a read-through for a session the table lacks,
// and an answer that tells a session that has no route (ErrNoRoute) from
// one the table cannot tell about (ErrRouteUnknown, ErrStale).
//
// Why the read-through: the table follows the bucket by a watch, so it can
// lag a record just written by a few milliseconds, and a client asks for
// exactly such a record: runner-manager registers a runner and then
// reports the session Running, and a client that reads Running opens its
// stream at once (it got 404 "unknown session" now and then). On a miss
// Resolve reads the key from the bucket; when the bucket holds a routable
// record, Resolve waits until the watch has applied that record's
// revision and answers from the table. The table stays written by its
// watch alone, so a read can never put back a record the watch has
// already removed.
//
// Why ErrRouteUnknown: a read that fails (NATS cut off), a read not made
// (maxReads in flight) or a watch that does not bring the record read in
// time says nothing about the session; answering "no route" would tell a
// client of a session that exists that it does not. A record read at a
// revision the watch is past, yet missing from the table, is checked
// against the bucket's identity: a bucket deleted and created again
// starts its revisions anew, and the watch is reopened on it.
//
// Misses of one session share one read, at most maxReads run at once, and
// Resolve returns within ctx and resolveWait. Before Run's first
// snapshot, and while its watch is broken, a miss is ErrNoRoute (the
// caller tells "not synced" by Ready).
func (t *Table) Resolve(ctx context.Context, sessionID string) (Endpoint, error) {
	if err := t.Fresh(); err != nil {
		return Endpoint{}, err
	}
	if ep, ok := t.Known(sessionID); ok {
		return ep, nil
	}
	t.mu.RLock()
	kv := t.kv
	t.mu.RUnlock()
	if kv == nil || !t.ready.Load() {
		return Endpoint{}, ErrNoRoute
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
	switch {
	case err != nil:
		return Endpoint{}, fmt.Errorf("%w: %w", ErrRouteUnknown, err)
	case rev == 0:
		return Endpoint{}, ErrNoRoute
	}
	return t.awaitApplied(ctx, kv, key, rev)
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
// When the watch is past rev and the table lacks the record, the record
// is either gone again (ErrNoRoute) or of a bucket created anew, whose
// revisions the watch of the old one does not read: checkBucket tells,
// and has the watch reopened on the new bucket, whose snapshot is then
// awaited.
func (t *Table) awaitApplied(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) (Endpoint, error) {
	var awaitSnapshot uint64 // after a reopen: the snapshot count to wait for
	for {
		t.mu.Lock()
		r, ok := t.entries[key]
		switch {
		case ok && r.Routable():
			t.mu.Unlock()
			return r.Endpoint, nil
		case t.applied >= rev && t.snapshots >= awaitSnapshot:
			snapshots := t.snapshots
			t.mu.Unlock()
			if awaitSnapshot > 0 {
				// The new bucket's snapshot lacks it too: gone again.
				return Endpoint{}, ErrNoRoute
			}
			recreated, err := t.checkBucket(ctx, kv)
			switch {
			case err != nil:
				return Endpoint{}, fmt.Errorf("%w: %w", ErrRouteUnknown, err)
			case !recreated:
				t.mu.Lock()
				again := t.opening || t.snapshots != snapshots
				t.mu.Unlock()
				if again {
					// A reopen began or ended since the table was read
					// (the heartbeat's, another Resolve's): the bucket
					// checked may be the new one the table has not read
					// yet, so its snapshot decides.
					awaitSnapshot = snapshots + 1
					continue
				}
				// The watch is past the record read: gone again meanwhile.
				return Endpoint{}, ErrNoRoute
			}
			awaitSnapshot = snapshots + 1
			continue
		}
		if t.changed == nil {
			t.changed = make(chan struct{})
		}
		changed := t.changed
		t.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Endpoint{}, fmt.Errorf("%w: the watch did not bring revision %d of %s in time", ErrRouteUnknown, rev, key)
		}
	}
}

// checkBucket reports whether kv's bucket is another than the one the
// watch opened on (deleted and created again since), and if so asks Run
// to reopen the watch. Concurrent checks share one.
func (t *Table) checkBucket(ctx context.Context, kv jetstream.KeyValue) (bool, error) {
	v, err, _ := t.reads.Do(bucketCheck, func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveWait)
		defer cancel()
		st, err := kv.Status(cctx)
		if err != nil {
			return false, fmt.Errorf("bucket status: %w", err)
		}
		return t.observe(st), nil
	})
	if err != nil {
		return false, err
	}
	recreated, _ := v.(bool) //nolint:errcheck // the function returns a bool
	return recreated, nil
}

// observe compares the bucket's creation time in st with the one the watch
// opened on (taking st's as that when none is known yet), and on a
// difference asks Run to reopen the watch. It reports the difference.
func (t *Table) observe(st jetstream.KeyValueStatus) bool {
	created := createdOf(st)
	if created.IsZero() {
		return false // cannot tell
	}
	t.mu.Lock()
	known := t.created
	if known.IsZero() {
		t.created = created
	}
	t.mu.Unlock()
	if known.IsZero() || known.Equal(created) {
		return false
	}
	t.askReopen()
	return true
}

// caughtUpLocked returns the time of the pending beat answer once the
// watch has applied its sequence (and forgets it), else 0. t.mu must be
// held.
func (t *Table) caughtUpLocked() int64 {
	if t.pendingAt == 0 || t.applied < t.pendingSeq {
		return 0
	}
	at := t.pendingAt
	t.pendingSeq, t.pendingAt = 0, 0
	return at
}

// lastSeqOf returns the last sequence of st's stream (0 if st cannot say).
func lastSeqOf(st jetstream.KeyValueStatus) uint64 {
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
		return bs.StreamInfo().State.LastSeq
	}
	return 0
}

// createdOf returns when st's bucket was created (zero if st cannot say).
func createdOf(st jetstream.KeyValueStatus) time.Time {
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
		return bs.StreamInfo().Created
	}
	return time.Time{}
}

// askReopen has Run's watch read the bucket afresh (at most one request
// pending).
func (t *Table) askReopen() {
	select {
	case t.reopenNow <- struct{}{}:
	default:
	}
}

// Fresh returns nil while the table may route: it was confirmed current
// within the WithStaleAfter bound (or has no bound, or no snapshot yet),
// and an error wrapping ErrStale otherwise.
func (t *Table) Fresh() error {
	if t.staleAfter <= 0 {
		return nil
	}
	at := t.freshAt.Load()
	if at == 0 {
		return nil // no snapshot yet: nothing to route from, Ready says so
	}
	if age := time.Duration(t.now() - at); age > t.staleAfter {
		return fmt.Errorf("%w: not confirmed current for %s (bound %s)", ErrStale, age.Round(time.Millisecond), t.staleAfter)
	}
	return nil
}

// now is the time since the table's epoch, on the monotonic clock (never
// 0: 0 means "never fresh").
func (t *Table) now() int64 { return max(int64(time.Since(t.epoch)), 1) }

// confirm records that the table was current at at (ns after epoch),
// unless it is stale by now: only a fresh snapshot ends staleness, since
// the watch may still be catching up with what it missed.
func (t *Table) confirm(at int64) bool {
	if t.Fresh() != nil {
		return false
	}
	for {
		old := t.freshAt.Load()
		if old >= at || t.freshAt.CompareAndSwap(old, at) {
			return true
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
// them). Run must not be called twice concurrently on one table.
//
// While the watch runs, a heartbeat asks the server for the bucket's
// status every min(2s, bound/4) (WithStaleAfter). An answer confirms the
// table current as of the moment it was asked once the watch has applied
// the stream's last sequence it gave; a snapshot confirms it too. A
// change the watch applies confirms nothing by itself: a watch that lags,
// or whose consumer the server lost while the connection stayed up,
// still receives now and then. A watch short of an answer that applied
// nothing for a whole beat is reopened (a lost consumer; a last message
// removed before the watch saw it), and so is a table that went stale, as
// soon as the server answers again. A bucket whose creation time differs from the
// one the watch opened on was deleted and created again: the watch of the
// old one would wait for revisions the new one has not reached, so the
// watch is reopened at once and its snapshot replaces the table.
func (t *Table) Run(ctx context.Context, kv jetstream.KeyValue) error {
	t.mu.Lock()
	t.kv = kv
	t.mu.Unlock()
	beatCtx, stopBeat := context.WithCancel(ctx)
	beatDone := make(chan struct{})
	go func() { // ends with stopBeat, awaited below
		defer close(beatDone)
		t.heartbeat(beatCtx, kv)
	}()
	defer func() {
		stopBeat()
		<-beatDone
	}()
	// stopWait ends the goroutine of the previous watch's reopen signal;
	// used on WatchKV's goroutine only (its Reopen calls, then the defer).
	stopWait := func() {}
	defer func() { stopWait() }()
	reopen := func() <-chan struct{} {
		stopWait()
		wctx, stop := context.WithCancel(ctx)
		stopWait = stop
		// A request pending from the last watch is answered by this one.
		select {
		case <-t.reopenNow:
		default:
		}
		t.openedOn(wctx, kv)
		var next <-chan struct{} // nil: never fires
		if t.reopen != nil {
			next = t.reopen()
		}
		out := make(chan struct{})
		go func() { // ends with this watch (stopWait) or Run's ctx
			select {
			case <-next:
			case <-t.reopenNow:
			case <-wctx.Done():
				return
			}
			close(out)
		}()
		return out
	}
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
			t.snapshots++
			t.opening = false
			// The snapshot holds the stream up to the last sequence seen
			// before the watch opened, messages since removed (expired
			// markers) included: without it a last message the watch
			// never saw would hold every beat's answer unreached.
			t.appliedLocked(max(last, t.openedSeq))
			t.pendingSeq, t.pendingAt = 0, 0
			t.mu.Unlock()
			t.freshAt.Store(t.now())
			t.reopenAsked.Store(false)
			t.lastErr.Store(nil)
			t.ready.Store(true)
			t.once.Do(func() { close(t.synced) })
		},
		Update: func(e jetstream.KeyValueEntry) {
			t.mu.Lock()
			applyEntry(t.entries, e, t.removed)
			t.appliedLocked(e.Revision())
			at := t.caughtUpLocked()
			t.mu.Unlock()
			// A change says the watch receives, not that it has caught
			// up: only a beat's answer reached confirms.
			if at > 0 {
				t.confirm(at)
			}
		},
		Broken: func(err error, _ time.Duration) {
			t.mu.Lock()
			t.opening = false
			t.mu.Unlock()
			t.ready.Store(false)
			t.lastErr.Store(&err)
		},
		Reopen:      reopen,
		ReopenEvery: t.reopenEvery,
	})
	t.ready.Store(false)
	if err != nil {
		return fmt.Errorf("watch runners: %w", err)
	}
	return nil
}

// openedOn records the creation time of the bucket a watch is about to
// open on (zero when the server does not answer: the heartbeat's first
// answer then sets it).
func (t *Table) openedOn(ctx context.Context, kv jetstream.KeyValue) {
	t.mu.Lock()
	t.created = time.Time{}
	t.openedSeq = 0
	t.opening = true
	t.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, t.beatEvery)
	defer cancel()
	if st, err := kv.Status(cctx); err == nil {
		t.observe(st)
		t.mu.Lock()
		t.openedSeq = lastSeqOf(st)
		t.mu.Unlock()
	}
}

// heartbeat confirms the table current every beatEvery until ctx ends
// (see Run).
func (t *Table) heartbeat(ctx context.Context, kv jetstream.KeyValue) {
	tick := time.NewTicker(t.beatEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.beat(ctx, kv)
	}
}

// beat is one heartbeat: a round trip to the server for the bucket's
// status, which gives the stream's last sequence. The table counts as
// current from the moment the question was asked once its watch has
// applied that sequence (here, or at a later change), and only while the
// watch is live and on the same bucket. A watch stuck short of an answer
// for a beat, or a table gone stale, is read afresh.
func (t *Table) beat(ctx context.Context, kv jetstream.KeyValue) {
	asked := t.now()
	cctx, cancel := context.WithTimeout(ctx, t.beatEvery)
	st, err := kv.Status(cctx)
	cancel()
	if err != nil || t.observe(st) || !t.ready.Load() {
		return
	}
	t.mu.Lock()
	// An answer kept from an earlier beat is not replaced by this one: a
	// watch that keeps lagging a moving stream would never reach one.
	// Stuck: behind an earlier answer and nothing applied since the last
	// beat. A watch that is merely slow (a loaded machine, a backlog) is
	// left to catch up: reading the bucket afresh would not be quicker,
	// and the bound still holds (a stale table is read afresh below).
	stuck := t.pendingAt != 0 && t.applied < t.pendingSeq && t.applied == t.beatApplied
	t.beatApplied = t.applied
	if t.pendingAt == 0 {
		t.pendingSeq, t.pendingAt = lastSeqOf(st), asked
	}
	at := t.caughtUpLocked()
	opening := t.opening
	t.mu.Unlock()
	if at > 0 && t.confirm(at) {
		return
	}
	// Not confirmed. Stale, and the server answers again: a fresh
	// snapshot ends it (the watch may not have caught up with what it
	// missed yet). A watch stuck a whole beat behind the server has lost
	// its consumer, or will never reach the answer: the stream's last
	// message was removed before the watch saw it (an expired marker). A
	// fresh snapshot settles either before the table goes stale. A
	// reopen already under way will bring one.
	if (stuck || t.Fresh() != nil) && !opening && t.reopenAsked.CompareAndSwap(false, true) {
		t.askReopen()
	}
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
