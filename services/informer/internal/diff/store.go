package diff

import (
	"maps"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// ID returns the object id from the metadata.
func ID[T events.APIObject](o T) string { return o.GetMetadata().GetId() }

// UpdatedAt returns metadata.updated_at truncated to microseconds; zero when
// unset.
func UpdatedAt[T events.APIObject](o T) time.Time {
	ts := o.GetMetadata().GetUpdatedAt()
	if ts == nil {
		return time.Time{}
	}
	return Micros(ts.AsTime())
}

// Observed is one thing the watch saw: an object that exists in the given
// state, or the deletion of an id.
type Observed[T events.APIObject] struct {
	ID      string
	Object  T // valid unless Deleted
	Deleted bool
}

// Change is what a worker must publish for one id. States travel encoded
// (events.Encoded): the event and the KV value are built from the bytes.
type Change[T events.APIObject] struct {
	Type eventsv1.EventType
	ID   string
	// New is the new state for ADDED and MODIFIED and the last known state
	// for DELETED.
	New events.Encoded
	// Old is the previously published state for MODIFIED, zero otherwise.
	Old events.Encoded
	// Seq is the stream sequence of the object's last event (the one that
	// published the published state, or a DELETED; 0: none, or unknown).
	// The event is published expecting it as its subject's last, so that
	// the stream refuses it when someone else published the object
	// meanwhile (publish.Publish).
	Seq uint64
	// Announced is set on a MODIFIED whose New is the very version the
	// object's last event, a reference event (over the payload limit),
	// named: consumers have been told of it, nothing is published. The
	// caller records it as published (PublishedAt, seq 0) and does what
	// follows a reference event (the session condition).
	Announced bool
}

// Version is the version of the state the change publishes.
func (c Change[T]) Version() string { return c.New.Version() }

// Object decodes New.
func (c Change[T]) Object() (T, error) { return events.DecodeObject[T](c.New.Raw) }

// OldObject decodes Old (zero T and no error when there is none).
func (c Change[T]) OldObject() (T, error) {
	if c.Old.Raw == nil {
		var zero T
		return zero, nil
	}
	return events.DecodeObject[T](c.Old.Raw)
}

// Result tells what an update of the store did, for the queue and metrics.
type Result struct {
	// Dirty lists ids whose desired state now differs from the published one.
	Dirty []string
	// Stale counts watch events dropped: the very state already cached, or
	// one stamped earlier than a state a list of the open stream read
	// (eventWins). Unknown counts deletes of ids never seen.
	Stale, Unknown int
	// Backward counts watch events applied although their updated_at is
	// earlier than the state they replaced: the API's clock stepped back,
	// or the replica that wrote them runs behind another (eventWins).
	Backward int
	// Bad counts objects that could not be encoded (and were skipped).
	Bad int
}

// state is one object state, encoded once when it enters the store: its
// version (updated_at and a content hash) makes comparing states cheap, and
// the bytes take a fraction of the memory of the decoded message. Raw nil:
// absent.
type state = events.Encoded

func present(s state) bool { return s.Raw != nil }

// entry is the state of one id: 160 bytes, filling the allocator's
// 160-byte size class (144 before rev, 152 before from; seen is 32 bits
// to make room for lost; TestEntryFitsItsSizeClass).
type entry struct {
	desired, published state
	// from tells when desired was read, to order it against a watch event
	// or a listed state (eventWins, listedWins).
	from origin
	// seq is the events-stream sequence of the object's last event: the
	// one that published the published state, or one adopted (Adopt); 0:
	// none, or unknown. A KV write of that state records it
	// (Object.event_seq), whoever writes it: a new leader reads the stream
	// from the entries' highest seq, and an entry without one pulls that
	// back, down to "unknown" when no entry of the resource has one. The
	// object's next event expects it as its subject's last (Change.Seq),
	// so the store must hold the right one for every object, also after a
	// load (KV's event_seq, the tail's sequence) and a relist (which keeps
	// it).
	seq uint64
	// rev is the revision of the object's objects-bucket entry this
	// leader knows (0: none, or unknown): from the load, then from each
	// write's ack. Every KV write of the object expects it as the key's
	// last (publish.Revs): a deposed leader's late write cannot land over
	// a newer one.
	rev uint64
	// listed is the number of the listing that last saw the id.
	listed uint64
	// ref is set while the object's last event tells no state but that
	// consumers have the object (LoadRef, AdoptRef): the version a
	// reference event named, or "" (unknown). Its next event is then a
	// MODIFIED, never an ADDED, without an old object (consumers' last
	// state is not published), or nothing when it is that version
	// (Change.Announced). nil: the published state is what consumers saw.
	ref *string
	// seen is the number of the listing in progress, once one of its pages
	// held the id (Listing.Unlisted), cut to 32 bits (seenIn): it is only
	// compared with the listing in progress, and two listings 2^32 apart
	// never meet.
	seen uint32
	// lost is set while published is a state consumers may hold from an
	// events stream lost since, which the current one never carried
	// (LoadLost): the object's next event is an ADDED of the desired
	// state, or, once the API no longer holds the object, a DELETED of
	// published, so that consumers of the old stream learn it is gone.
	lost bool
}

// seenIn is listing num as entry.seen holds it.
func seenIn(num uint64) uint32 { return uint32(num) } //nolint:gosec // wraps on purpose (entry.seen)

// origin tells when a desired state was read by the API, as far as the
// store can know it, in numbers of listings (Store.started): the listing
// that read it, or for a state from the watch the last listing started when
// it arrived, shifted left by one with the low bit set. The zero origin is
// listing 0: before any listing, like the states Load brings.
//
// Watch events are the API's reads in order: the real server sends the
// events of one stream in order, each with the object as read when it is
// sent, and a new stream (StreamOpened) sends only reads made after it was
// opened, after the last event of the stream before it arrived. A listed
// state and a watch event are ordered only when one of them arrived before
// the other's read began: a listing finished before the stream opened, an
// event arrived before the listing started. Otherwise the event may have
// been read before the page and arrive after it, or the other way round,
// and only updated_at (newer) can tell.
type origin uint64

func listedIn(listing uint64) origin  { return origin(listing << 1) }
func watchedAt(listing uint64) origin { return origin(listing<<1 | 1) }
func (o origin) watched() bool        { return o&1 == 1 }
func (o origin) listing() uint64      { return uint64(o >> 1) }

// dirty reports whether the id needs a change: desired differs from
// published, or the state of an object known only by a reference event
// is to be settled.
func (e *entry) dirty() bool {
	return !e.desired.SameVersion(e.published) || ((e.ref != nil || e.lost) && present(e.desired))
}

// Store is the cache of one resource: per id the desired state (newest seen
// in a list or on the watch) and the published state (acked by JetStream
// and stored in KV), both encoded.
//
// A Store is safe for concurrent use: the receive loop updates desired
// states while publish workers take changes and record what they published.
type Store[T events.APIObject] struct {
	mu       sync.Mutex
	entries  map[string]*entry   // guarded by mu
	size     int                 // guarded by mu; entries with a desired state
	started  uint64              // guarded by mu; listings started, numbering them
	projects map[string]interned // guarded by mu; interned project ids
	listing  *Listing[T]         // guarded by mu; the listing in progress, if any
	// opened is the number of listings started when the current watch
	// stream was opened (StreamOpened): all of them had ended by then.
	opened uint64 // guarded by mu
}

// NewStore returns an empty store.
func NewStore[T events.APIObject]() *Store[T] {
	return &Store[T]{entries: map[string]*entry{}, projects: map[string]interned{}}
}

// interned is one project id the store's states share, and the number of
// state slots (an entry's desired and published state) that hold it.
type interned struct {
	id   string
	refs int
}

// hold makes st's project id the copy every state of that project in the
// store shares (each decoded object brings its own, and a project has
// many sessions), and counts one more slot holding it: call it for a
// state about to be stored in a slot, and release for the one it
// replaces. Counting, rather than keeping every id seen, lets a term that
// lasts weeks forget the projects whose objects are all gone (sessions
// can name any project_id). It allocates only for a project's first
// state, and a state of the project its slot held already touches no map
// (swap).
func (s *Store[T]) hold(st state) state {
	if st.ProjectID == "" {
		return st
	}
	in, ok := s.projects[st.ProjectID]
	if !ok {
		in.id = st.ProjectID
	}
	in.refs++
	s.projects[in.id] = in
	st.ProjectID = in.id
	return st
}

// release counts one slot less holding st's project id (see hold), and
// forgets the id when none is left.
func (s *Store[T]) release(st state) {
	if st.ProjectID == "" {
		return
	}
	in, ok := s.projects[st.ProjectID]
	switch {
	case !ok:
	case in.refs <= 1:
		delete(s.projects, st.ProjectID)
	default:
		in.refs--
		s.projects[st.ProjectID] = in
	}
}

// swap returns st, to be stored in the slot that holds old, with its
// project id held and old's released (hold, release). A state of the
// same project as the one it replaces (most updates) changes no count:
// it takes the shared copy, no map is touched.
func (s *Store[T]) swap(old, st state) state {
	if st.ProjectID == old.ProjectID {
		st.ProjectID = old.ProjectID
		return st
	}
	st = s.hold(st)
	s.release(old)
	return st
}

// setPublished stores st as e's published state (swap).
func (s *Store[T]) setPublished(e *entry, st state) { e.published = s.swap(e.published, st) }

// newState encodes o. Encoding is the costly part of taking an object in,
// so callers do it before taking the lock.
func newState[T events.APIObject](o T) (state, error) { return events.Encode(o) }

// Load replaces the store's content with objects known to be published (the
// persisted KV cache); desired starts equal to published. Objects that do
// not encode are skipped and counted.
func (s *Store[T]) Load(published []T) (bad int) { return s.LoadSeqs(published, nil) }

// LoadSeqs is Load with the stream sequence of each object's event (seqs[i]
// for published[i]; nil or 0: unknown), see PublishedState.
func (s *Store[T]) LoadSeqs(published []T, seqs []uint64) (bad int) {
	return s.LoadKV(published, seqs, nil)
}

// LoadKV is LoadSeqs with the revision of each object's objects-bucket
// entry (revs[i] for published[i]; nil or 0: none, unknown), see KVRev.
func (s *Store[T]) LoadKV(published []T, seqs, revs []uint64) (bad int) {
	entries := make(map[string]*entry, len(published))
	for i, o := range published {
		st, err := newState(o)
		if err != nil {
			bad++
			continue
		}
		e := &entry{desired: st, published: st}
		if i < len(seqs) {
			e.seq = seqs[i]
		}
		if i < len(revs) {
			e.rev = revs[i]
		}
		entries[ID(o)] = e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The old entries go whole, and their counts with them.
	s.projects = make(map[string]interned, len(s.projects))
	for _, e := range entries {
		e.desired = s.hold(e.desired)
		e.published = s.hold(e.desired)
	}
	s.entries = entries
	s.size = len(entries)
	return bad
}

// LoadRef records that the last event of id, at stream sequence seq, is a
// reference event (over the payload limit) naming version, or a dead
// letter replayed for one consumer group (version ""): it tells no state,
// but consumers have the object. For an object KV never held (all its
// events were references) the store then has no published state, only
// this: its next event follows seq and is a MODIFIED, or nothing while the
// object is at version (Change.Announced), never a second ADDED. A replay
// of an object with a published state changes only the sequence (the
// state before it stands). Call it after LoadSeqs; an id no listing shows
// and that has no published state is dropped by the listing's end.
func (s *Store[T]) LoadRef(id, version string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entry(id).setRef(version, seq)
}

// LoadRev records rev as the revision of id's objects-bucket entry, an
// entry that tells no published state (an older stream's,
// publish.Loaded.Outdated), unless the store knows one: an id the store
// holds nothing of gets an entry with no state (its first event is an
// ADDED), one the stream's tail brought keeps its state. Either way the
// object's next KV write expects rev instead of being refused once. Call
// it after LoadKV; the listing's end drops an id the API does not hold.
func (s *Store[T]) LoadRev(id string, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entry(id); e.rev == 0 {
		e.rev = rev
	}
}

// LoadLost records o, at revision rev of its objects-bucket entry, as a
// state consumers may hold from an events stream lost since, which the
// current one never carried (publish.Loaded.Outdated): the published
// state, marked lost (entry.lost), with no event in this stream (seq 0).
// The next listing then publishes the object as ADDED when the API holds
// it, and its DELETED, from o, when the API deleted it while the stream
// was lost: consumers keep what the lost stream told them (runner
// processes, AgenticSessions) until told it is gone. An id the store
// holds a state of (the stream's tail brought it) only takes the
// revision, as LoadRev; one it holds only a reference of takes o as its
// published state, not marked lost (the new stream announced it). Call it after LoadKV and LoadRef; it
// reports false when o does not encode (the id then takes only rev).
func (s *Store[T]) LoadLost(o T, rev uint64) bool {
	st, err := newState(o)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(ID(o))
	if e.rev == 0 {
		e.rev = rev
	}
	if err != nil || present(e.desired) || present(e.published) {
		return err == nil
	}
	e.published = s.hold(st)
	if e.ref != nil {
		// The tail's reference event told this stream's consumers of the
		// object, without its state: o is the state a DELETED announces
		// if the API no longer has it (the reference's KV write was
		// skipped, so the entry is the lost stream's).
		return true
	}
	e.seq, e.lost = 0, true
	return true
}

// setRef is LoadRef and AdoptRef on e.
func (e *entry) setRef(version string, seq uint64) {
	e.seq, e.lost = seq, false
	if version != "" || !present(e.published) {
		e.ref = &version
	}
}

// StreamOpened records that a new watch stream is about to be opened: every
// event it delivers the server reads after this call, so it is newer than
// any state the listings started so far read, whatever the timestamps say
// (eventWins). Call it before opening the stream, with no listing running
// and after the previous stream's last event was applied or dropped.
func (s *Store[T]) StreamOpened() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opened = s.started
}

// Listing is one relist in progress: pages of listed objects are encoded
// as they come (the decoded page is garbage right after), and Finish makes
// the whole list the desired state, clears every id the listing did not
// see and applies the watch events buffered meanwhile, in one step. A
// listing holds the list encoded, a fraction of its decoded size; the
// list's states are not in the store before Finish, so a list never
// publishes a state already stale when the list ended.
//
// Live watch events may be applied (Apply) while the listing runs, so that
// a relist, which takes seconds at 100,000 objects and comes with every
// reconnect and resync, does not hold them back. The listing remembers the
// ids they touched: for those the watch knows at least as much as a page
// read before the event, so Finish keeps a state such an event brought
// unless the listed one is newer (listedWins), and neither clears an id the
// list missed (created after its page was read) nor brings back one deleted
// meanwhile. Only one listing of a store runs at a time.
type Listing[T events.APIObject] struct {
	s     *Store[T]
	ids   []string
	items []state
	// same lists ids listed in the state the store already wants: a relist
	// of an unchanged table holds no bytes.
	same []string
	bad  int
	// num numbers the listing among those the store started.
	num uint64
	// touched holds the ids live events changed since StartList; guarded by
	// s.mu.
	touched map[string]struct{}
}

// StartList starts a listing; it replaces one that was never finished (a
// list that failed changes nothing).
func (s *Store[T]) StartList() *Listing[T] {
	l := &Listing[T]{s: s, touched: map[string]struct{}{}}
	s.mu.Lock()
	s.started++
	l.num = s.started
	s.listing = l
	s.mu.Unlock()
	return l
}

// maxExpected bounds how many objects Expect sizes the listing's buffers
// for: a million (about 80 MB); a larger list grows them by doubling.
const maxExpected = 1 << 20

// Expect tells the listing how many objects the list holds (total, the
// first page's) and how many the first page brought (page), so its
// buffers are sized once instead of doubling: doubling leaves the old
// halves as garbage at the moment the informer holds the most (the initial
// sync's peak). total comes from the wire, an int32 a server bug can make
// absurd (2^31 objects would be 256 GiB of buffers before a second page),
// so it is believed up to maxExpected.
func (l *Listing[T]) Expect(total, page int) {
	if total <= 0 || l.ids != nil || l.same != nil {
		return
	}
	l.s.mu.Lock()
	cached := len(l.s.entries)
	l.s.mu.Unlock()
	if total < 2*cached {
		return // a relist: most objects are unchanged and need no bytes here
	}
	n := min(max(total, page), maxExpected)
	l.ids = make([]string, 0, n)
	l.items = make([]state, 0, n)
}

// Add encodes a page of listed objects into the listing.
func (l *Listing[T]) Add(objs []T) {
	states := make([]state, 0, len(objs))
	ids := make([]string, 0, len(objs))
	for _, o := range objs {
		st, err := newState(o)
		if err != nil {
			l.bad++
			continue
		}
		states = append(states, st)
		ids = append(ids, ID(o))
	}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	for i, st := range states {
		e, ok := l.s.entries[ids[i]]
		if ok {
			e.seen = seenIn(l.num)
		}
		if ok && present(e.desired) && e.desired.SameVersion(st) {
			l.same = append(l.same, ids[i])
			continue
		}
		l.ids = append(l.ids, ids[i])
		l.items = append(l.items, st)
	}
}

// Unlisted returns the ids of objects the store holds that no page of the
// listing showed and no live event touched since it started: what Finish
// would publish as deleted. Pages are offsets into the server's order,
// which changes under the list (see watch.Watcher.confirmUnlisted), so the
// caller reads each by id and Adds those that still exist.
func (l *Listing[T]) Unlisted() []string {
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, e := range s.entries {
		// A lost entry (LoadLost) has no desired state yet but would be
		// announced DELETED all the same: read it by id too.
		if _, live := l.touched[id]; !live && (present(e.desired) || e.lost) && e.seen != seenIn(l.num) {
			out = append(out, id)
		}
	}
	return out
}

// Finish ends the listing. The list is the truth at the time it was taken:
// its objects become the desired state (an object listed twice, by pages of
// a table that changes, by a second pass or by a read by id, keeps the copy
// read last: the one Added last) and ids it did not list are gone; then the
// watch events buffered while listing are applied in order (eventWins). It
// happens under one lock, so a worker never sees a state between the two.
// It returns every dirty id, including ones that were dirty before.
func (l *Listing[T]) Finish(buffered []Observed[T]) Result {
	states := make([]state, len(buffered))
	skip := make([]bool, len(buffered))
	r := Result{Bad: l.bad}
	for i, ob := range buffered {
		if ob.Deleted {
			continue
		}
		st, err := newState(ob.Object)
		if err != nil {
			r.Bad++
			skip[i] = true
			continue
		}
		states[i] = st
	}
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listing == l {
		s.listing = nil
	}
	num := l.num
	if n := len(l.items); n > 2*len(s.entries) {
		// The first list of an empty cache: make the map its final size.
		entries := make(map[string]*entry, n+n/8)
		maps.Copy(entries, s.entries)
		s.entries = entries
	}
	for _, id := range l.same {
		if e, ok := s.entries[id]; ok {
			e.listed = num
		}
	}
	for i, st := range l.items {
		id := l.ids[i]
		e := s.entry(id)
		e.listed = num
		if _, live := l.touched[id]; live && !listedWins(st, e, num) {
			continue // a live event during the list brought this or newer
		}
		s.setDesired(e, st, listedIn(num))
	}
	l.ids, l.items, l.same = nil, nil, nil
	for id, e := range s.entries {
		if _, live := l.touched[id]; e.listed != num && !live {
			s.clearDesired(e)
		}
	}
	for i, ob := range buffered {
		if !skip[i] {
			s.applyStateLocked(ob.ID, states[i], &r)
		}
	}
	r.Dirty = r.Dirty[:0]
	for id, e := range s.entries {
		switch {
		case e.dirty():
			r.Dirty = append(r.Dirty, id)
		case !present(e.desired):
			delete(s.entries, id) // absent and published as absent
		}
	}
	return r
}

// Sync is a listing of one page: listed is the whole list.
func (s *Store[T]) Sync(listed []T, buffered []Observed[T]) Result {
	l := s.StartList()
	l.Add(listed)
	return l.Finish(buffered)
}

// Apply records one live watch event; Result.Dirty holds the id when it now
// needs publishing.
func (s *Store[T]) Apply(ob Observed[T]) Result {
	var r Result
	var st state
	if !ob.Deleted {
		var err error
		if st, err = newState(ob.Object); err != nil {
			r.Bad++
			return r
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listing != nil {
		s.listing.touched[ob.ID] = struct{}{}
	}
	s.applyStateLocked(ob.ID, st, &r)
	return r
}

// newer reports whether st replaces cur by updated_at, where the order of
// their reads is unknown (eventWins, listedWins): cur is present, and st is
// neither older nor the very same state. Same time with other content is
// newer: losing a real change is worse than publishing a doubtful one. An
// absent cur (deleted) is never replaced by a listed state: ids are never
// reused.
func newer(st, cur state) bool {
	return present(cur) && st.Micros >= cur.Micros && !cur.SameVersion(st)
}

// eventWins reports whether the watch event st replaces e's present
// desired state. updated_at is stamped by the wall clock of the API replica
// that wrote the object: NTP steps it back, replicas disagree, so it does
// not order two states; the order of the reads does, where it is known
// (origin). An event replaces any other state from the watch (this stream's
// arrived before it; an earlier stream's before this one opened), and a
// listed or loaded state read before this stream opened: the server read
// the event later, and a state differing from one the object had before is
// a later one (versions never come back). A state a listing of this stream
// read meets the event where their order is unknown, and updated_at
// decides (newer).
//
// That is the residual case: a listing of the open stream read the object
// in a state the cache did not hold, and the clock that stamps its next
// writes is behind the one that stamped that state (stepped back in
// between, or another replica's). Their events are dropped as Stale,
// though newer, until one is stamped at or after the listed state, the
// stream is reopened (with a relist), or the next listing reads the object
// (its state wins over an earlier listing's: listedWins): at most
// RESYNC_PERIOD. Once an event is applied, the stream's later events
// follow it in stream order.
//
// The very same state is not a change: counted Stale, as a late duplicate.
func (s *Store[T]) eventWins(st state, e *entry) bool {
	switch {
	case e.desired.SameVersion(st):
		return false
	case e.from.watched(), e.from.listing() <= s.opened:
		return true
	default:
		return newer(st, e.desired)
	}
}

// listedWins reports whether st, read by listing num, replaces e's desired
// state, of an id live events touched during the listing. A state read
// before the listing began loses to it whatever the timestamps (a state of
// an earlier listing, loaded, from an event that arrived before the
// listing, or a copy this listing read earlier): a different state read
// later is a later one. A state an event brought during the listing meets
// the list where their order is unknown, and updated_at decides (newer; see
// eventWins for what a clock behind costs there). An absent state (deleted)
// stays absent.
func listedWins(st state, e *entry, num uint64) bool {
	switch {
	case !present(e.desired):
		return false
	case e.from.watched() && e.from.listing() == num:
		return newer(st, e.desired)
	default:
		return true
	}
}

// applyStateLocked applies one watch event; an absent st is a delete.
func (s *Store[T]) applyStateLocked(id string, st state, r *Result) {
	e, ok := s.entries[id]
	if !present(st) {
		if !ok || !present(e.desired) {
			r.Unknown++ // the real server sends DELETED even for unknown ids
			return
		}
		s.clearDesired(e)
	} else {
		if !ok {
			e = s.entry(id)
		}
		if present(e.desired) {
			if !s.eventWins(st, e) {
				r.Stale++
				return
			}
			if st.Micros < e.desired.Micros {
				r.Backward++
			}
		}
		s.setDesired(e, st, watchedAt(s.started))
	}
	if e.dirty() {
		r.Dirty = append(r.Dirty, id)
	}
}

func (s *Store[T]) entry(id string) *entry {
	e, ok := s.entries[id]
	if !ok {
		e = &entry{}
		s.entries[id] = e
	}
	return e
}

// setDesired makes st, read at from, the desired state of e. The very
// state e already wants keeps its origin: the earliest read known of a
// version is the one that orders it (eventWins).
func (s *Store[T]) setDesired(e *entry, st state, from origin) {
	if !present(e.desired) {
		s.size++
	}
	switch {
	case present(e.desired) && e.desired.SameVersion(st):
		return // keep the bytes already held; the new copy becomes garbage
	case present(e.published) && e.published.SameVersion(st):
		st = e.published // share the published bytes
	}
	e.desired = s.swap(e.desired, st)
	e.from = from
}

func (s *Store[T]) clearDesired(e *entry) {
	if present(e.desired) {
		s.size--
		if e.ref != nil && !present(e.published) {
			// Consumers have the object (a reference event) and the store
			// never held what they saw: the last state seen stands in for
			// it, so that the delete is announced.
			s.setPublished(e, e.desired)
		}
	}
	s.release(e.desired)
	e.desired = state{}
}

// Next returns the change id needs now, or false when desired and published
// agree (or the id is unknown).
func (s *Store[T]) Next(id string) (Change[T], bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok || !e.dirty() {
		return Change[T]{}, false
	}
	d, p := e.desired, e.published
	switch {
	case e.lost && present(d):
		// Consumers of this stream were never told of the object: an
		// ADDED, whatever the lost stream carried.
		return Change[T]{Type: eventsv1.EventType_EVENT_TYPE_ADDED, ID: id, New: d, Seq: e.seq}, true
	case e.ref != nil && present(d):
		// Consumers have the object, whose last event tells no state.
		return Change[T]{Type: eventsv1.EventType_EVENT_TYPE_MODIFIED, ID: id, New: d, Seq: e.seq, Announced: d.Version() == *e.ref}, true
	case !present(p):
		return Change[T]{Type: eventsv1.EventType_EVENT_TYPE_ADDED, ID: id, New: d, Seq: e.seq}, true
	case present(d):
		return Change[T]{Type: eventsv1.EventType_EVENT_TYPE_MODIFIED, ID: id, New: d, Old: p, Seq: e.seq}, true
	default:
		return Change[T]{Type: eventsv1.EventType_EVENT_TYPE_DELETED, ID: id, New: p, Seq: e.seq}, true
	}
}

// Adopt makes st (absent: deleted) the published state of id, published
// by the event at stream sequence seq: the object's last event in the
// stream, which someone else published (publish.ConflictError). The next
// change of id is diffed against what consumers saw last and follows that
// event. It reports whether id is dirty now.
func (s *Store[T]) Adopt(id string, st events.Encoded, seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		if !present(st) {
			return false
		}
		e = &entry{}
		s.entries[id] = e
	}
	if present(st) && e.desired.SameVersion(st) {
		st = e.desired // share the bytes
	}
	s.setPublished(e, st)
	e.seq, e.ref, e.lost = seq, nil, false
	if !present(e.desired) && !present(st) {
		delete(s.entries, id)
		return false
	}
	return e.dirty()
}

// AdoptSeq makes seq the sequence of id's last event and keeps its
// published state: the event tells no state (a message no informer
// published; for a reference event see AdoptRef), or the subject has none
// left (aged out, purged: seq 0).
func (s *Store[T]) AdoptSeq(id string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[id]; ok {
		e.seq = seq
	}
}

// AdoptRef is AdoptSeq for an event that tells no state but that
// consumers have the object: a reference event naming version, or a
// replayed dead letter (version ""), see LoadRef. It reports whether id
// is dirty now.
func (s *Store[T]) AdoptRef(id, version string, seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return false
	}
	e.setRef(version, seq)
	return e.dirty()
}

// Published records that c was published and stored, and reports whether
// the id is still dirty: it changed while c was in flight. The caller must
// then queue the id again: a change that made desired equal to what was
// published before c (a delete of an object whose ADDED was in flight) did
// not look dirty when it came, so nobody queued it.
func (s *Store[T]) Published(c Change[T]) bool { return s.PublishedAt(c, 0) }

// PublishedAt is Published for the event at stream sequence seq. seq 0
// (nothing reached the stream: a version that cannot be published) keeps
// the sequence of the object's last event.
func (s *Store[T]) PublishedAt(c Change[T], seq uint64) bool {
	var st state
	if c.Type != eventsv1.EventType_EVENT_TYPE_DELETED {
		st = c.New
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[c.ID]
	if !ok {
		if !present(st) {
			return false
		}
		// Dropped by a listing while c was in flight (absent in the list
		// and, then, in the published state too): consumers now know c, so
		// the entry comes back to be deleted.
		e = &entry{}
		s.entries[c.ID] = e
	}
	if present(st) && e.desired.SameVersion(st) {
		st = e.desired // share the bytes
	}
	s.setPublished(e, st)
	e.ref, e.lost = nil, false
	if seq > 0 {
		e.seq = seq
	}
	if !present(e.desired) && !present(st) {
		delete(s.entries, c.ID)
		return false
	}
	return e.dirty()
}

// Disagreeing returns the ids whose presence in the persisted cache
// (stored: the ids KV holds a live entry for) differs from their published
// state: an entry of an object whose delete was published, of an id the
// store does not know, or no entry for a published object. Ids with a
// change pending are left out: their publish writes KV anyway.
func (s *Store[T]) Disagreeing(stored map[string]bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, e := range s.entries {
		if !e.dirty() && present(e.published) != stored[id] {
			out = append(out, id)
		}
	}
	for id := range stored {
		if _, known := s.entries[id]; !known {
			out = append(out, id)
		}
	}
	return out
}

// Len returns the number of objects that currently exist (desired state).
func (s *Store[T]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Range calls fn with the encoded desired state of each object that
// currently exists, under the store's lock: fn must be quick, must not
// call the store and must not keep st.Raw past the call. Readers pick the
// fields they need out of the bytes (see controller.ObserveSessions)
// rather than decoding every object.
func (s *Store[T]) Range(fn func(st events.Encoded)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		if present(e.desired) {
			fn(e.desired)
		}
	}
}

// Get returns the desired state of id, decoded.
func (s *Store[T]) Get(id string) (T, bool) {
	s.mu.Lock()
	e, ok := s.entries[id]
	var enc events.Encoded
	if ok {
		enc = e.desired
	}
	s.mu.Unlock()
	var zero T
	if !present(enc) {
		return zero, false
	}
	o, err := events.DecodeObject[T](enc.Raw)
	if err != nil {
		return zero, false
	}
	return o, true
}

// PublishedState returns the published state of id and whether it exists.
func (s *Store[T]) PublishedState(id string) (events.Encoded, bool) {
	st, _, ok := s.PublishedSeq(id)
	return st, ok
}

// PublishedSeq is PublishedState with the stream sequence of the event
// that published the state (0: unknown), for a KV write of it.
func (s *Store[T]) PublishedSeq(id string) (events.Encoded, uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok || !present(e.published) {
		return events.Encoded{}, 0, false
	}
	return e.published, e.seq, true
}

// KVRev returns the revision of id's objects-bucket entry the store knows
// (0: none, unknown, or no such id): what the next KV write of id expects
// as the key's last (publish.Revisions).
func (s *Store[T]) KVRev(id string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[id]; ok {
		return e.rev
	}
	return 0
}

// SetKVRev records rev as the revision of id's objects-bucket entry,
// unless the store knows a newer one (revisions are the bucket stream's
// sequences: a late ack of an older write must not take it back). An id
// the store does not hold (published as deleted) keeps nothing.
func (s *Store[T]) SetKVRev(id string, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[id]; ok && rev > e.rev {
		e.rev = rev
	}
}
