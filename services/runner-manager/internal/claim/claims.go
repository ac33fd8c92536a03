package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
)

// ErrLost is returned by [Claims.Update] and [Claims.Reassert] when the
// record this replica held belongs to another owner now, or is gone.
var ErrLost = errors.New("claim lost")

// releaseTimeout bounds a release, which also runs after the caller's ctx
// ended (a runner reported during shutdown).
const releaseTimeout = 5 * time.Second

// updateTries bounds the compare-and-swap retries of Update; each retry
// follows a write by someone else (a stop request, a takeover).
const updateTries = 5

// probeParallel bounds the endpoint probes of one Scan in flight: the
// records of a dead pod may all time out.
const probeParallel = 8

// liveness tells whether a runner-manager replica is alive, and whether
// this replica can tell yet (see Members.Settled).
type liveness interface {
	Alive(ctx context.Context, member string) (bool, error)
	Settled() bool
}

var _ liveness = (*Members)(nil)

// Claims is this replica's side of the runner registry (see the package
// doc). Safe for concurrent use; per-session order is the caller's (one
// handler, supervisor or sweep at a time per session).
type Claims struct {
	kv     jetstream.KeyValue
	member string
	alive  liveness
	log    *slog.Logger
	opts   options
	http   *http.Client

	mu     sync.Mutex
	index  map[string]registry.Record // guarded by mu; live records by KV key (registry.Key), kept by Watch
	synced bool                       // guarded by mu; index holds a whole snapshot
	// everSynced is set once index held a whole snapshot; guarded by mu.
	everSynced bool
	markers    map[string]uint64 // guarded by mu; never-expiring delete markers seen by Watch: key -> revision
	// released holds, by key, the revision of each record this replica
	// deleted (Release) whose delete the watch has not delivered yet; the
	// index drops such a record at once, and the watch's older updates of
	// it are not indexed again. Guarded by mu.
	released map[string]uint64
	// sightings holds, by key, when this replica first saw each peer's
	// record whose runner may still be starting (startPending) at its
	// revision (startWaitOver). Scan drops the keys no such record has any
	// more. Guarded by mu.
	sightings map[string]sighting
	// answering holds the keys of the peers' records Scan last found with
	// an owner without heartbeat and a runner that answers (not taken
	// over), so that a scan logs only the records new to that state: a
	// peer cut off from NATS keeps its records there for as long as the
	// cut lasts, and a line per record per sweep said nothing new.
	// Guarded by mu.
	answering map[string]bool
}

// sighting is when this replica first saw a record at revision rev, on
// its monotonic clock.
type sighting struct {
	rev uint64
	at  time.Time
}

// New returns the claims of member in the registry bucket kv; alive
// answers whether other owners live. It returns ErrInvalidOption for a
// bad option.
func New(kv jetstream.KeyValue, member string, alive liveness, log *slog.Logger, opts ...Option) (*Claims, error) {
	if kv == nil || member == "" || alive == nil || log == nil {
		return nil, errors.New("claims: bucket, member, liveness and log are required")
	}
	o := options{probeTimeout: DefaultProbeTimeout, startWait: DefaultStartWait}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &Claims{
		kv: kv, member: member, alive: alive, log: log, opts: o,
		// No keep-alives: a probe is rare, and an idle connection must not
		// keep a runner's shutdown waiting.
		http:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		index: map[string]registry.Record{}, markers: map[string]uint64{}, sightings: map[string]sighting{}, answering: map[string]bool{},
	}, nil
}

// Member is this replica's id, the owner written on its claims.
func (c *Claims) Member() string { return c.member }

// fresh is a new claim record of this replica: owned, no runner yet.
func (c *Claims) fresh(id, projectID string) registry.Endpoint {
	return registry.Endpoint{SessionID: id, ProjectID: projectID, Owner: c.member, StartedAt: time.Now().UTC(), State: registry.StateClaimed}
}

// Claim claims session id for this replica. It returns the record as
// written, registry.ErrClaimed when the session already has a record
// (whoever owns it: see Get and OwnerGone), or the registry's error.
func (c *Claims) Claim(ctx context.Context, id, projectID string) (registry.Record, error) {
	ep := c.fresh(id, projectID)
	rev, err := registry.Claim(ctx, c.kv, ep)
	if err != nil {
		return registry.Record{}, err
	}
	return registry.Record{Endpoint: ep, Revision: rev}, nil
}

// Reassert writes ep, this replica's record of a runner that runs here,
// again after it vanished from the registry (a NATS store that lost it,
// or a release this replica missed while it was cut off): KV create, so a
// record someone else wrote meanwhile wins. It returns the record as
// written (or as found, when it is this replica's), ErrLost when another
// owner holds the session now, or the registry's error.
func (c *Claims) Reassert(ctx context.Context, ep registry.Endpoint) (registry.Record, error) {
	ep.Owner = c.member
	rev, err := registry.Claim(ctx, c.kv, ep)
	if err == nil {
		return registry.Record{Endpoint: ep, Revision: rev}, nil
	}
	if !errors.Is(err, registry.ErrClaimed) {
		return registry.Record{}, err
	}
	rec, err := registry.Get(ctx, c.kv, ep.SessionID)
	if err != nil {
		return registry.Record{}, fmt.Errorf("reassert %s: %w", ep.SessionID, err)
	}
	if rec.Owner != c.member {
		return registry.Record{}, fmt.Errorf("claim of %s held by %s: %w", ep.SessionID, rec.Owner, ErrLost)
	}
	return rec, nil
}

// Get returns the session's record: registry.ErrNotFound when it has none,
// registry.ErrInvalid when the stored bytes are not a record.
func (c *Claims) Get(ctx context.Context, id string) (registry.Record, error) {
	return registry.Get(ctx, c.kv, id)
}

// OwnerGone reports whether rec's owner is gone, so that its claim may be
// taken over. This replica is gone for its own record when the session's
// runner does not run here (runsHere false: a previous incarnation's
// claim). A peer is gone only when all three hold:
//
//   - this replica is Settled (reached NATS without a break for longer
//     than the TTL): right after an outage every heartbeat has expired,
//     the live peers' too;
//   - the peer has no heartbeat;
//   - the runner registered in rec does not answer /health (a live runner
//     is not lost, whatever happened to its replica's NATS connection);
//     a record whose runner may still be starting (startPending: no
//     address yet, one not yet healthy, or a stop request that hides
//     which) counts only once this replica has seen it unchanged for the
//     start wait (WithStartWait), and then only if its runner, if any,
//     does not answer.
//
// An error means liveness could not be checked; the caller retries.
func (c *Claims) OwnerGone(ctx context.Context, rec registry.Record, runsHere bool) (bool, error) {
	if rec.Owner == c.member {
		return !runsHere, nil
	}
	if !c.alive.Settled() {
		return false, nil
	}
	alive, err := c.alive.Alive(ctx, rec.Owner)
	if err != nil {
		return false, fmt.Errorf("check owner of %s: %w", rec.SessionID, err)
	}
	if alive {
		return false, nil
	}
	if startPending(rec) && !c.startWaitOver(rec) {
		c.log.Debug(msgStartWait, slog.String(logkey.SessionID, rec.SessionID), slog.String(logkey.Owner, rec.Owner))
		return false, nil
	}
	if c.answers(ctx, rec.Endpoint) {
		c.log.Info(msgAnswers, slog.String(logkey.SessionID, rec.SessionID), slog.String(logkey.Owner, rec.Owner))
		return false, nil
	}
	return true, nil
}

// Logged for records left alone: while its start wait runs, and while
// its runner answers.
const (
	msgStartWait = "owner has no heartbeat and its runner may still be starting: not taken over before the start wait"
	msgAnswers   = "owner has no heartbeat but its runner answers: not taken over"
)

// startPending reports whether rec's runner may still be starting (and no
// final phase is recorded):
//   - no runner address (state claimed): its owner registers the address
//     right after the spawn, so a runner may be starting for it (or
//     running, when the registration failed) with nothing a probe could
//     reach;
//   - state starting: the address is registered but the runner has not
//     passed its health check, and may not even listen yet; a probe that
//     fails now proves nothing about a moment later, when it may be
//     serving for an owner cut off from NATS;
//   - state stopping: a stop request (RequestStop, a peer's write)
//     replaces the state the runner was in, so the record no longer
//     tells a starting runner from a running one; the owner's own
//     registration keeps the request too (Update), so an address may
//     have come after it. Judged as running, a stop request written over
//     a starting record ended its start wait at once: the probe found
//     nothing listening yet, the peer took the claim over and wrote
//     Stopped, while the cut-off owner's runner came up and lived until
//     its owner reconnected. A dead owner's stopping record of a runner
//     that did run therefore waits the start wait as well: it only
//     delays a Stopped, it starts nothing.
//
// Either way the owner kills the runner by its start deadline unless it
// is registered (claimed) or healthy (starting): see package supervise.
func startPending(rec registry.Record) bool {
	if rec.Final != nil || rec.State == registry.StateExited {
		return false
	}
	return !rec.Routable() || rec.State == registry.StateStarting || rec.State == registry.StateStopping
}

// startWaitOver reports whether this replica has seen rec, a peer's
// record whose runner may still be starting, unchanged for longer than
// the start wait, and notes the first sighting of each revision. Only
// this replica's own clock is read, so no clock skew between replicas
// counts: the first sighting is after the write, and its owner counts its
// deadline from before the write (the claim's StartedAt to register the
// runner, the spawn to see it healthy). A revision older than the one
// noted (a stale read) is not over; a newer one (the owner wrote again)
// starts the wait again. So does the registration (claimed, then
// starting), on purpose: the health deadline counts from the spawn, which
// may come up to the start deadline after the claim, so a wait counted
// from the claim's first sighting could end before it.
func (c *Claims) startWaitOver(rec registry.Record) bool {
	if c.opts.startWait == 0 {
		return true
	}
	now := time.Now()
	key := registry.Key(rec.SessionID)
	c.mu.Lock()
	defer c.mu.Unlock()
	seen, ok := c.sightings[key]
	switch {
	case !ok || rec.Revision > seen.rev:
		c.sightings[key] = sighting{rev: rec.Revision, at: now}
		return false
	case rec.Revision < seen.rev:
		return false
	}
	return now.Sub(seen.at) > c.opts.startWait
}

// records returns every live record: the watch's index once it holds a
// whole snapshot (no read of the bucket at all), else one read of the
// bucket's live keys (before Watch synced, or without Watch). With
// lastKnown, an index that once held a snapshot is used also while the
// watch is broken.
func (c *Claims) records(ctx context.Context, lastKnown bool) ([]registry.Record, error) {
	c.mu.Lock()
	if c.synced || lastKnown && c.everSynced {
		out := make([]registry.Record, 0, len(c.index))
		for _, rec := range c.index {
			out = append(out, rec)
		}
		c.mu.Unlock()
		return out, nil
	}
	c.mu.Unlock()
	return registry.List(ctx, c.kv)
}

// NamedPorts returns the ports that live records with runner host host
// name, whatever their owner and state: a dead peer's record routes
// agui-proxy to its host:port until it is taken over (which clears the
// endpoint), released, or expires. A port in the result must not go to
// another session's runner on host (runner.Pool, SkipNamed). Once the
// watch has held a snapshot its index is used, also while the watch is
// broken; before that the bucket is read.
func (c *Claims) NamedPorts(ctx context.Context, host string) (map[int]bool, error) {
	// Also while the watch is broken (a NATS outage): the records it last
	// held are what routes now, since nobody can write the bucket either,
	// and a runner must still start in an outage (its registration is
	// retried once NATS is back).
	recs, err := c.records(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("list records for their ports: %w", err)
	}
	named := map[int]bool{}
	for _, rec := range recs {
		if rec.Host == host && rec.Port > 0 {
			named[rec.Port] = true
		}
	}
	return named, nil
}

// Scan sorts every claim (a sweep) into this replica's records (mine) and
// the claims whose owner is gone (stale, decided as OwnerGone does;
// runsHere tells whether a session's runner lives here). It reads the
// watch's index (see Watch), not the bucket. Each owner's liveness is
// asked once; an owner it cannot be asked about is logged and its records
// are left for the next scan. Records of owners without a heartbeat are
// probed in parallel. Every peer's record whose runner may still be
// starting is noted whatever its owner's liveness, so its start wait runs
// from the first sweep that saw it.
func (c *Claims) Scan(ctx context.Context, runsHere func(id string) bool) (mine, stale []registry.Record, err error) {
	recs, err := c.records(ctx, false)
	if err != nil {
		return nil, nil, fmt.Errorf("list claims: %w", err)
	}
	settled := c.alive.Settled()
	alive := map[string]bool{c.member: true}
	unknown := map[string]bool{} // owners whose liveness could not be read: logged once, their records left
	waiting := map[string]bool{} // by key: the peers' records of runners that may be starting, true while their start wait runs
	var suspects, starting []registry.Record
	for _, rec := range recs {
		if rec.Owner == c.member {
			mine = append(mine, rec)
			if !runsHere(rec.SessionID) {
				stale = append(stale, rec)
			}
			continue
		}
		if startPending(rec) {
			waiting[registry.Key(rec.SessionID)] = !c.startWaitOver(rec)
		}
		if !settled || unknown[rec.Owner] {
			// Fenced (a missing heartbeat proves nothing yet), or the
			// owner's liveness could not be read this scan: asked again
			// for each of its records, it was one warning per record.
			continue
		}
		live, ok := alive[rec.Owner]
		if !ok {
			if live, err = c.alive.Alive(ctx, rec.Owner); err != nil {
				c.log.Warn("sweep: liveness", slog.String(logkey.Owner, rec.Owner), slog.String(logkey.Err, err.Error()))
				unknown[rec.Owner] = true
				continue
			}
			alive[rec.Owner] = live
		}
		switch {
		case live:
		case waiting[registry.Key(rec.SessionID)]:
			starting = append(starting, rec)
		default:
			suspects = append(suspects, rec)
		}
	}
	if len(starting) > 0 {
		c.log.Debug(msgStartWait, slog.Int(logkey.Count, len(starting)),
			slog.String(logkey.SessionID, starting[0].SessionID), slog.String(logkey.Owner, starting[0].Owner))
	}
	c.mu.Lock()
	for key := range c.sightings {
		if _, ok := waiting[key]; !ok {
			delete(c.sightings, key) // running, released or taken over since
		}
	}
	c.mu.Unlock()
	answered := make([]bool, len(suspects))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(probeParallel)
	for i, rec := range suspects {
		g.Go(func() error {
			answered[i] = c.answers(gctx, rec.Endpoint)
			return nil
		})
	}
	_ = g.Wait() // the probes return no errors
	var answering []registry.Record
	for i, rec := range suspects {
		if answered[i] {
			answering = append(answering, rec)
			continue
		}
		stale = append(stale, rec)
	}
	c.logAnswering(answering)
	return mine, stale, nil
}

// logAnswering logs, in one line, the records of owners without
// heartbeat whose runners answer that the previous scan did not find so,
// and remembers them all for the next scan.
func (c *Claims) logAnswering(answering []registry.Record) {
	now := make(map[string]bool, len(answering))
	var fresh []registry.Record
	c.mu.Lock()
	for _, rec := range answering {
		key := registry.Key(rec.SessionID)
		now[key] = true
		if !c.answering[key] {
			fresh = append(fresh, rec)
		}
	}
	c.answering = now
	c.mu.Unlock()
	if len(fresh) == 0 {
		return
	}
	c.log.Info(msgAnswers+"; logged again only after its runner stops answering or its owner beats",
		slog.Int(logkey.Count, len(fresh)), slog.Int("answering", len(answering)),
		slog.String(logkey.SessionID, fresh[0].SessionID), slog.String(logkey.Owner, fresh[0].Owner))
}

// TakeOver replaces rec, whose owner is gone, with a fresh claim of this
// replica, compare-and-swap on rec's revision so that of all replicas
// trying, one wins. A record holding a final phase (state exited) keeps
// it: the taker writes that phase instead of starting the session again.
// It returns the record as written, or registry.ErrConflict when the
// record changed since it was read (another replica took it, or the owner
// moved on).
func (c *Claims) TakeOver(ctx context.Context, rec registry.Record) (registry.Record, error) {
	ep := c.fresh(rec.SessionID, rec.ProjectID)
	if rec.Final != nil {
		f := *rec.Final
		ep.State, ep.Final = registry.StateExited, &f
	}
	rev, err := registry.Register(ctx, c.kv, ep, rec.Revision)
	if err != nil {
		return registry.Record{}, err
	}
	return registry.Record{Endpoint: ep, Revision: rev}, nil
}

// RequestStop asks rec's owner, a live peer, to stop the session's runner:
// it writes state "stopping" into the record, which the owner's record
// watch (or sweep) forwards to the runner. A record already stopping, or
// whose runner has exited, is left alone. It returns registry.ErrConflict
// when the record changed meanwhile (retry), or the registry's error.
func (c *Claims) RequestStop(ctx context.Context, rec registry.Record) error {
	if rec.State == registry.StateStopping || rec.State == registry.StateExited {
		return nil
	}
	ep := rec.Endpoint
	ep.State = registry.StateStopping
	if _, err := registry.Register(ctx, c.kv, ep, rec.Revision); err != nil {
		return fmt.Errorf("request stop of %s: %w", rec.SessionID, err)
	}
	return nil
}

// Release drops this replica's claim on session id (an undecodable record
// is purged too), with an expiring marker under WithMarkerTTL. It is best
// effort and logs what fails: a claim left behind is one of this
// replica's without a runner, which the next sweep recovers. A claim that
// moved to another owner is theirs and left alone. It also runs after ctx
// ended (bounded by releaseTimeout).
func (c *Claims) Release(ctx context.Context, log *slog.Logger, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	var opts []registry.Option
	if c.opts.markerTTL > 0 {
		opts = append(opts, registry.WithMarkerTTL(c.opts.markerTTL))
	}
	rev, err := registry.Release(ctx, c.kv, id, c.member, opts...)
	if err != nil {
		if !errors.Is(err, registry.ErrNotOwner) {
			log.Warn("release claim", slog.String(logkey.Err, err.Error()))
		}
		return
	}
	c.forgetReleased(registry.Key(id), rev)
}

// forgetReleased drops the record of key this replica deleted at revision
// rev from the index now, instead of when the watch delivers the delete:
// the index names the ports that runners may not take (NamedPorts), and a
// session that waits for a port is started right after this release frees
// one (the reconciler's startWaiting), well before the watch catches up.
func (c *Claims) forgetReleased(key string, rev uint64) {
	if rev == 0 {
		return // nothing was deleted
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if rec, ok := c.index[key]; ok && rec.Revision <= rev {
		delete(c.index, key)
	}
	if c.everSynced { // else no watch runs to deliver the delete
		if c.released == nil {
			c.released = map[string]uint64{}
		}
		c.released[key] = rev
	}
}

// staleLocked reports whether a watched entry of key at revision rev
// predates a delete this replica made (see released), and forgets that
// delete once the watch is past it. c.mu is held.
func (c *Claims) staleLocked(key string, rev uint64) bool {
	gone, ok := c.released[key]
	if !ok {
		return false
	}
	if rev <= gone {
		return true
	}
	delete(c.released, key)
	return false
}

// Update rewrites held, a record of this replica as last written, with
// mutate, compare-and-swap on its revision (held.Revision 0 reads the
// record first). A record changed meanwhile is read again and mutate
// applied to it. A stop request a peer wrote meanwhile (state "stopping")
// is kept, and reported as stopRequested. It returns the record as
// written, ErrLost when the record belongs to another owner now or is
// gone, registry.ErrConflict after updateTries lost races, or the
// registry's error.
func (c *Claims) Update(ctx context.Context, held registry.Record, mutate func(*registry.Endpoint)) (rec registry.Record, stopRequested bool, err error) {
	cur := held
	if cur.Revision == 0 {
		if cur, err = registry.Get(ctx, c.kv, held.SessionID); err != nil {
			return registry.Record{}, false, fmt.Errorf("read claim: %w", err)
		}
	}
	for range updateTries {
		if cur.Owner != c.member {
			return registry.Record{}, false, fmt.Errorf("claim of %s taken over by %s: %w", held.SessionID, cur.Owner, ErrLost)
		}
		next := cur.Endpoint
		mutate(&next)
		stopping := cur.State == registry.StateStopping
		if stopping && next.State != registry.StateExited {
			next.State = registry.StateStopping
		}
		rev, err := registry.Register(ctx, c.kv, next, cur.Revision)
		if err == nil {
			return registry.Record{Endpoint: next, Revision: rev}, stopping, nil
		}
		if !errors.Is(err, registry.ErrConflict) {
			return registry.Record{}, false, err
		}
		cur, err = registry.Get(ctx, c.kv, held.SessionID)
		if errors.Is(err, registry.ErrNotFound) {
			return registry.Record{}, false, fmt.Errorf("claim of %s vanished: %w", held.SessionID, ErrLost)
		}
		if err != nil {
			return registry.Record{}, false, err
		}
	}
	return registry.Record{}, false, fmt.Errorf("register %s: %w", held.SessionID, registry.ErrConflict)
}

// Watch keeps the index Scan reads (every live record, deletes applied)
// and calls fn with every live record: the current ones whenever the
// watch opens (again after it broke, rebuilding the index) and then each
// change, until ctx ends; then it returns nil. Undecodable records are
// skipped. fn runs on Watch's goroutine and must not block for long.
func (c *Claims) Watch(ctx context.Context, fn func(registry.Endpoint)) error {
	return bus.WatchKV(ctx, c.kv, bus.KVWatch{
		Initial: func(es []jetstream.KeyValueEntry) {
			index, markers := map[string]registry.Record{}, map[string]uint64{}
			var live []registry.Endpoint
			for _, e := range es {
				if e.Operation() == jetstream.KeyValueDelete {
					// A release before marker TTLs: a marker that never
					// expires (ExpireMarkers).
					markers[e.Key()] = e.Revision()
					continue
				}
				if rec, ok := decode(e); ok {
					index[e.Key()] = rec
					live = append(live, rec.Endpoint)
				}
			}
			c.mu.Lock()
			for key, gone := range c.released {
				if rec, ok := index[key]; ok && rec.Revision <= gone {
					delete(index, key) // its delete follows as an update
					continue
				}
				delete(c.released, key) // the snapshot is past the delete
			}
			c.index, c.markers, c.synced, c.everSynced = index, markers, true, true
			c.mu.Unlock()
			for _, ep := range live {
				fn(ep)
			}
		},
		Update: func(e jetstream.KeyValueEntry) {
			rec, ok := decode(e)
			c.mu.Lock()
			switch {
			case c.staleLocked(e.Key(), e.Revision()):
				// A record this replica deleted since; the index dropped it.
			case ok:
				c.index[e.Key()] = rec
			default:
				delete(c.index, e.Key())
			}
			c.mu.Unlock()
			if ok {
				fn(rec.Endpoint)
			}
		},
		Broken: func(err error, reopen time.Duration) {
			c.mu.Lock()
			c.synced = false
			c.mu.Unlock()
			c.log.Warn("watch claims", slog.String(logkey.Err, err.Error()), slog.Duration(logkey.Duration, reopen))
		},
		Reopen:      c.opts.reopen,
		ReopenEvery: c.opts.reopenEvery,
	})
}

// decode is a watched entry as a live record of its own key: false for
// deletes, purges, garbage and records filed under another session's key.
func decode(e jetstream.KeyValueEntry) (registry.Record, bool) {
	if e.Operation() != jetstream.KeyValuePut {
		return registry.Record{}, false
	}
	ep, err := registry.Decode(e.Value())
	if err != nil || registry.Key(ep.SessionID) != e.Key() {
		return registry.Record{}, false
	}
	return registry.Record{Endpoint: ep, Revision: e.Revision()}, true
}

// ExpireMarkers gives up to limit of the never-expiring delete markers
// the watch found (releases made before WithMarkerTTL) the marker TTL, so
// a bucket upgraded in place shrinks too; the sweep calls it. Without
// WithMarkerTTL it does nothing. A marker rewritten meanwhile (a new
// claim of the session) is skipped (compare-and-swap on its revision).
func (c *Claims) ExpireMarkers(ctx context.Context, limit int) {
	if c.opts.markerTTL <= 0 {
		return
	}
	c.mu.Lock()
	batch := make(map[string]uint64, min(limit, len(c.markers)))
	for k, rev := range c.markers {
		if len(batch) == limit {
			break
		}
		batch[k] = rev
		delete(c.markers, k)
	}
	c.mu.Unlock()
	for k, rev := range batch {
		err := c.kv.Purge(ctx, k, jetstream.LastRevision(rev), jetstream.PurgeTTL(c.opts.markerTTL))
		if err != nil && !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			c.log.Debug("expire old marker", slog.String("key", k), slog.String(logkey.Err, err.Error()))
		}
	}
}
