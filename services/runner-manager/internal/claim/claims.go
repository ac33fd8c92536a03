package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
)

// ErrLost is returned by [Claims.Update] when the record this replica held
// belongs to another owner now, or is gone.
var ErrLost = errors.New("claim lost")

// releaseTimeout bounds a release, which also runs after the caller's ctx
// ended (a runner reported during shutdown).
const releaseTimeout = 5 * time.Second

// updateTries bounds the compare-and-swap retries of Update; each retry
// follows a write by someone else (a stop request, a takeover).
const updateTries = 5

// liveness tells whether a runner-manager replica is alive.
type liveness interface {
	Alive(ctx context.Context, member string) (bool, error)
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
}

// New returns the claims of member in the registry bucket kv; alive
// answers whether other owners live.
func New(kv jetstream.KeyValue, member string, alive liveness, log *slog.Logger) (*Claims, error) {
	if kv == nil || member == "" || alive == nil || log == nil {
		return nil, errors.New("claims: bucket, member, liveness and log are required")
	}
	return &Claims{kv: kv, member: member, alive: alive, log: log}, nil
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

// Get returns the session's record: registry.ErrNotFound when it has none,
// registry.ErrInvalid when the stored bytes are not a record.
func (c *Claims) Get(ctx context.Context, id string) (registry.Record, error) {
	return registry.Get(ctx, c.kv, id)
}

// OwnerGone reports whether rec's owner is gone: a peer without a
// heartbeat, or this replica itself when the session's runner does not run
// here (runsHere false: a previous incarnation's claim). An error means
// liveness could not be checked; the caller retries.
func (c *Claims) OwnerGone(ctx context.Context, rec registry.Record, runsHere bool) (bool, error) {
	if rec.Owner == c.member {
		return !runsHere, nil
	}
	alive, err := c.alive.Alive(ctx, rec.Owner)
	if err != nil {
		return false, fmt.Errorf("check owner of %s: %w", rec.SessionID, err)
	}
	return !alive, nil
}

// Scan reads every claim (a sweep) and returns this replica's records
// (mine) and the claims whose owner is gone (stale, decided as OwnerGone
// does; runsHere tells whether a session's runner lives here). Each owner's
// liveness is asked once; an owner it cannot be asked about is logged and
// its records are left for the next scan.
func (c *Claims) Scan(ctx context.Context, runsHere func(id string) bool) (mine, stale []registry.Record, err error) {
	recs, err := registry.List(ctx, c.kv)
	if err != nil {
		return nil, nil, fmt.Errorf("list claims: %w", err)
	}
	alive := map[string]bool{c.member: true}
	for _, rec := range recs {
		if rec.Owner == c.member {
			mine = append(mine, rec)
			if !runsHere(rec.SessionID) {
				stale = append(stale, rec)
			}
			continue
		}
		live, ok := alive[rec.Owner]
		if !ok {
			if live, err = c.alive.Alive(ctx, rec.Owner); err != nil {
				c.log.Warn("sweep: liveness", slog.String(logkey.Member, rec.Owner), slog.String(logkey.Err, err.Error()))
				continue
			}
			alive[rec.Owner] = live
		}
		if !live {
			stale = append(stale, rec)
		}
	}
	return mine, stale, nil
}

// TakeOver replaces rec, whose owner is gone, with a fresh claim of this
// replica, compare-and-swap on rec's revision so that of all replicas
// trying, one wins. It returns the record as written, or
// registry.ErrConflict when the record changed since it was read (another
// replica took it, or the owner moved on).
func (c *Claims) TakeOver(ctx context.Context, rec registry.Record) (registry.Record, error) {
	ep := c.fresh(rec.SessionID, rec.ProjectID)
	rev, err := registry.Register(ctx, c.kv, ep, rec.Revision)
	if err != nil {
		return registry.Record{}, err
	}
	return registry.Record{Endpoint: ep, Revision: rev}, nil
}

// RequestStop asks rec's owner, a live peer, to stop the session's runner:
// it writes state "stopping" into the record, which the owner's record
// watch (or sweep) forwards to the runner. A record already stopping is
// left alone. It returns registry.ErrConflict when the record changed
// meanwhile (retry), or the registry's error.
func (c *Claims) RequestStop(ctx context.Context, rec registry.Record) error {
	if rec.State == registry.StateStopping {
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
// is purged too). It is best effort and logs what fails: a claim left
// behind is one of this replica's without a runner, which the next sweep
// recovers. A claim that moved to another owner is theirs and left alone.
// It also runs after ctx ended (bounded by releaseTimeout).
func (c *Claims) Release(ctx context.Context, log *slog.Logger, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := registry.Release(ctx, c.kv, id, c.member); err != nil && !errors.Is(err, registry.ErrNotOwner) {
		log.Warn("release claim", slog.String(logkey.Err, err.Error()))
	}
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
		if stopping {
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

// Watch calls fn with every record in the registry, the current ones
// whenever the watch opens (again after it broke) and then each change,
// until ctx ends; then it returns nil. Deletes and undecodable records are
// skipped. fn runs on Watch's goroutine and must not block for long.
func (c *Claims) Watch(ctx context.Context, fn func(registry.Endpoint)) error {
	each := func(e jetstream.KeyValueEntry) {
		if ep, err := registry.Decode(e.Value()); err == nil {
			fn(ep)
		}
	}
	return bus.WatchKV(ctx, c.kv, bus.KVWatch{
		Initial: func(es []jetstream.KeyValueEntry) {
			for _, e := range es {
				each(e)
			}
		},
		Update: each,
		Broken: func(err error, reopen time.Duration) {
			c.log.Warn("watch claims", slog.String(logkey.Err, err.Error()), slog.Duration(logkey.Duration, reopen))
		},
	}, jetstream.IgnoreDeletes())
}
