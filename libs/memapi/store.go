package memapi

import (
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// row is one stored object. Stored messages are immutable: a mutation stores a
// new message, so readers can share them without copying.
type row[T proto.Message] struct {
	id      string
	obj     T    // full precision, returned by mutations
	view    T    // timestamps truncated to microseconds, returned by lists and watches
	deleted bool // tombstone in order until the next compaction
}

// change is what a watcher queues: the object itself is read when the event is
// sent, like the real server does.
type change struct {
	kind string // the store's, e.g. "Session": every stream gets every kind
	typ  ambientv1.EventType
	id   string
}

// watchCounts follows watch events across a server's stores, so a test can
// tell when the server has nothing left to send (Server.WatchPending).
type watchCounts struct {
	dropped atomic.Int64 // lost to a full watcher buffer
	pending atomic.Int64 // queued on a watcher and not yet sent, vanished or abandoned
	sent    atomic.Int64 // sent on a stream without error
}

// watcher is one open watch stream.
type watcher struct {
	ch  chan change   // buffered (Options.watchBuffer, 256 by default); full means drop
	end chan struct{} // closed by EndWatches
}

// store is one resource table in database order. It is safe
// for concurrent use.
//
// Database order is the real server's: it lists without ORDER BY, so
// PostgreSQL returns rows in storage order, and an update writes the row's
// new version where there is room, which in a table whose pages are full is
// its end. Here an update moves the object to the end of the order. A list
// read page by page while objects are updated or deleted can therefore skip
// an object or show one twice, as on the real server.
//
// Deleting or moving marks a tombstone; lists compact them first (and so do
// writes, once tombstones outnumber the rows), so n changes cost O(n)
// overall instead of O(n^2).
type store[T proto.Message] struct {
	kind   string  // e.g. "Session", for the not-found reason
	broker *broker // shared by the server's stores
	// unique, when set, is a unique index of the real server's table (a
	// project's name, a project's settings): no two objects, live or
	// deleted, may share its key.
	unique func(T) string
	// fk, when set, is a foreign key of the real server's table (a
	// session's parent, a settings object's project): the object it names
	// must exist, live or deleted.
	fk *foreignKey[T]

	mu    sync.Mutex
	rows  map[string]*row[T] // guarded by mu
	order []*row[T]          // guarded by mu; database order, may hold tombstones
	dead  int                // guarded by mu; tombstones in order
	// gone holds the ids, and goneKeys the unique keys, of the deleted
	// objects, for good: the real server deletes softly (rh-trex's gorm
	// DeletedAt: the row stays, marked), and its primary keys and unique
	// indexes are plain ones, not partial (WHERE deleted_at IS NULL), so a
	// deleted row keeps its id and its key taken and still satisfies a
	// foreign key. Read from the real server's migrations
	// (plugins/projects/migration.go, plugins/projectSettings/migration.go)
	// and rh-trex-ai's pkg/db/model.go.
	gone     map[string]struct{} // guarded by mu
	goneKeys map[string]struct{} // guarded by mu
}

// foreignKey is a foreign key constraint of the real server's table,
// which PostgreSQL checks on every insert and update of a row.
//
// Lock order: when the key refers to another store (known set), the
// check takes that store's lock while holding its own, so a store's lock
// comes before the lock of every store its foreign key refers to
// (settings before projects). Nothing may take them the other way round:
// the referenced store must not read the referring one under its lock
// (a list filter run under the projects lock must not read the settings
// store: see visibleProjects), and a referenced store has no foreign key
// back.
type foreignKey[T proto.Message] struct {
	table, constraint string // PostgreSQL's names, part of the error's text
	// ref returns the id the object refers to, and false when it refers
	// to none (NULL, which satisfies the key).
	ref func(T) (string, bool)
	// known reports whether the referenced table holds id, live or
	// deleted, taking that table's lock (see the lock order above). nil
	// when the key refers to the store's own table (a session's parent),
	// which is read under the lock already held.
	known func(id string) bool
}

func newStore[T proto.Message](kind string, b *broker, unique func(T) string) *store[T] {
	return &store[T]{kind: kind, unique: unique, broker: b, rows: make(map[string]*row[T]),
		gone: make(map[string]struct{}), goneKeys: make(map[string]struct{})}
}

// getView returns the microsecond view (what watches send).
func (st *store[T]) getView(id string) (T, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	r, ok := st.rows[id]
	if !ok {
		var zero T
		return zero, false
	}
	return r.view, true
}

// insert stores a new object and notifies watchers. A taken id or unique
// key (a deleted object's included) is AlreadyExists, then a foreign key
// naming no object the foreign key's error: PostgreSQL checks unique
// indexes as it writes the row and foreign keys after it.
func (st *store[T]) insert(id string, obj, view T) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.knownLocked(id) || st.takenLocked(id, obj) {
		return errAlreadyExists(st.kind)
	}
	if err := st.checkFKLocked(obj, nil, "create"); err != nil {
		return err
	}
	r := &row[T]{id: id, obj: obj, view: view}
	st.rows[id] = r
	st.order = append(st.order, r)
	st.notifyLocked(ambientv1.EventType_EVENT_TYPE_CREATED, id)
	return nil
}

// update replaces the object with id by mutate(old). mutate runs under the
// lock, must not call back into the store, and returns the new full and view
// messages, or an error that is returned as is.
func (st *store[T]) update(id string, mutate func(old T) (T, T, error)) (T, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	var zero T
	r, ok := st.rows[id]
	if !ok {
		return zero, errNotFound(st.kind, id)
	}
	obj, view, err := mutate(r.obj)
	if err != nil {
		return zero, err
	}
	if st.takenLocked(id, obj) {
		return zero, errUpdateConflict(st.kind)
	}
	if err := st.checkFKLocked(obj, &r.obj, "update"); err != nil {
		return zero, err
	}
	// The new version goes to the end of the order (see store); the old
	// messages stay valid for readers that already hold them.
	st.tombstoneLocked(r)
	moved := &row[T]{id: id, obj: obj, view: view}
	st.rows[id] = moved
	st.order = append(st.order, moved)
	st.notifyLocked(ambientv1.EventType_EVENT_TYPE_UPDATED, id)
	return obj, nil
}

// takenLocked reports whether another object than id, live or deleted,
// has obj's unique key. A scan of the live ones: the tables with a unique
// index (projects, their settings) are small.
func (st *store[T]) takenLocked(id string, obj T) bool {
	if st.unique == nil {
		return false
	}
	key := st.unique(obj)
	if _, ok := st.goneKeys[key]; ok {
		return true
	}
	for other, r := range st.rows {
		if other != id && st.unique(r.obj) == key {
			return true
		}
	}
	return false
}

// knownLocked reports whether an object with id exists or existed (see
// gone).
func (st *store[T]) knownLocked(id string) bool {
	_, live := st.rows[id]
	_, deleted := st.gone[id]
	return live || deleted
}

// known is knownLocked for a caller that does not hold the lock: the
// foreign key check of a store referring to this one (foreignKey.known).
func (st *store[T]) known(id string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.knownLocked(id)
}

// checkFKLocked is PostgreSQL's check of the store's foreign key as obj
// is written by op ("create" or "update", old the version it replaces):
// the object it refers to must exist, or have existed. Like PostgreSQL,
// an update that leaves the reference as it was is not checked. A
// referenced table of its own (a session's parent is a session) is read
// under the lock held; another store (a settings object's project) under
// its own lock too, taken after this one's (see foreignKey).
func (st *store[T]) checkFKLocked(obj T, old *T, op string) error {
	if st.fk == nil {
		return nil
	}
	ref, ok := st.fk.ref(obj)
	if !ok {
		return nil
	}
	if old != nil {
		if was, wasSet := st.fk.ref(*old); wasSet && was == ref {
			return nil
		}
	}
	known := st.knownLocked
	if st.fk.known != nil {
		known = st.fk.known
	}
	if !known(ref) {
		return errForeignKey(op, st.kind, st.fk.table, st.fk.constraint)
	}
	return nil
}

// remove deletes id if present, keeping its id and unique key taken (see
// gone), and always notifies watchers: the real server sends DELETED for
// every delete call, even of unknown ids.
func (st *store[T]) remove(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if r, ok := st.rows[id]; ok {
		st.gone[id] = struct{}{}
		if st.unique != nil {
			st.goneKeys[st.unique(r.obj)] = struct{}{}
		}
		st.tombstoneLocked(r)
		delete(st.rows, id)
	}
	st.notifyLocked(ambientv1.EventType_EVENT_TYPE_DELETED, id)
}

// purge forgets the deleted objects' ids and keys (Server.PurgeDeleted).
func (st *store[T]) purge() {
	st.mu.Lock()
	defer st.mu.Unlock()
	clear(st.gone)
	clear(st.goneKeys)
}

// tombstoneLocked marks r's place in the order as dead, letting go of its
// messages, and compacts the order once tombstones outnumber the rows: a
// table that is only written, never listed, must not grow without bound.
func (st *store[T]) tombstoneLocked(r *row[T]) {
	var zero T
	r.deleted, r.obj, r.view = true, zero, zero
	st.dead++
	if st.dead > len(st.rows)+compactSlack {
		st.compactLocked()
	}
}

// compactSlack is how many tombstones a small table may hold before a
// write compacts it.
const compactSlack = 1024

// page returns one page of views and the total count, both of the objects
// match accepts (nil accepts all), in the order of order (a REST list's
// orderBy; nil, or objects it ties, in database order). page and size must
// already be clamped. match and order run under the lock and must not call
// back into the store.
func (st *store[T]) page(page, size int32, match func(T) bool, order func(a, b T) int) ([]T, int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.compactLocked()
	rows := st.order
	if match != nil || order != nil {
		// A copy: sorting must not reorder the table itself.
		rows = make([]*row[T], 0, len(st.order))
		for _, r := range st.order {
			if match == nil || match(r.view) {
				rows = append(rows, r)
			}
		}
	}
	if order != nil {
		// Stable: ties keep database order (PostgreSQL leaves it
		// unspecified; see orderby.go).
		slices.SortStableFunc(rows, func(a, b *row[T]) int { return order(a.view, b.view) })
	}
	total := len(rows)
	// int64 so that a huge page number cannot overflow.
	off := int64(page-1) * int64(size)
	if off >= int64(total) {
		return nil, total
	}
	end := min(off+int64(size), int64(total))
	items := make([]T, 0, end-off)
	for _, r := range rows[off:end] {
		items = append(items, r.view)
	}
	return items, total
}

func (st *store[T]) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.rows)
}

func (st *store[T]) compactLocked() {
	if st.dead == 0 {
		return
	}
	live := st.order[:0]
	for _, r := range st.order {
		if !r.deleted {
			live = append(live, r)
		}
	}
	clear(st.order[len(live):]) // let the garbage collector have the tombstones
	st.order = live
	st.dead = 0
}

// notifyLocked hands the change of id to the broker, under the store's
// lock, so watchers get the store's changes in commit order.
func (st *store[T]) notifyLocked(typ ambientv1.EventType, id string) {
	st.broker.notify(change{kind: st.kind, typ: typ, id: id})
}
