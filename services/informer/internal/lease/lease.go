// Package lease elects one leader among informer replicas with a TTL lease
// in a JetStream KV bucket.
//
// The lease is one key whose value is the holder's instance id. The bucket's
// TTL equals the lease TTL, so a key that is not rewritten within the TTL
// expires on the server. A candidate takes the lease with Create (exactly one
// wins); the leader renews it with Update at the revision it last wrote
// (compare-and-swap, so a lease taken over by someone else can never be
// renewed) every TTL/3. The first renewal that fails cancels the leader's
// context at once, at most 2*TTL/3 after the last good renewal, so the old
// leader has stopped before the key can expire and a standby take over.
// Standbys try again every RetryEvery and as soon as the key is deleted (a
// leader that shuts down releases the lease).
//
// A NATS outage longer than the TTL looks like a dead leader: the key is
// gone when the server comes back, and whichever replica reconnects first
// could take the lease. To tell the two apart (issue 14), a replica creates
// the lease at once only if it held it last, was woken by a release, or has
// not lost its connection since it started; after a reconnect it waits
// until it has been connected for a whole TTL. The old leader, reconnecting
// within that TTL, takes its lease back; a leader that died during the
// outage is replaced one TTL after the others reconnected.
//
// A leader that cannot do its work while it can renew (the informer cut
// off from the API alone) steps down: lead returns an error wrapping
// [ErrStepDown], the lease is released, and the replica campaigns again
// only a TTL later and once [Config.Eligible] agrees, so a standby takes
// over and the replica that stepped down does not take the lease back.
//
// A leader paused longer than the TTL (SIGSTOP, a VM stall) resumes still
// believing it leads, until its next renewal fails; meanwhile another
// replica may hold the lease. [Elector.Confirmed] tells its writers whether
// the lease is certainly still theirs (its last write, counted from when it
// was sent, younger than the TTL less a margin): they ask it before each
// write instead of IsLeader.
//
// A pause can still fall between that question and the write it guards.
// The informer's events carry the stream sequence of the object's last
// event, so the server refuses such a write when another leader published
// meanwhile; the writer then calls [Elector.Reconfirm], a synchronous
// renewal, to learn whether it still leads (see Reconfirm).
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/bus"
)

// ErrLost is the cause of the leader context's cancellation when a renewal
// failed (context.Cause tells it apart from shutdown).
var ErrLost = errors.New("lease lost")

// ErrUnconfirmed is returned by Elector.Confirmed when this replica is not
// the leader, or when its last write of the lease may have expired.
var ErrUnconfirmed = errors.New("lease not confirmed")

// ErrStepDown wrapped by the error lead returns makes Run give the lease
// up and stand by: it releases the lease, so a standby takes it at once,
// and campaigns again only a TTL later, once Config.Eligible agrees. A
// leader that cannot do its work (the informer: its watches stayed
// unsynced, its API unreachable from this replica alone) would otherwise
// keep the lease for ever while a healthy standby waits.
var ErrStepDown = errors.New("stepping down")

// ErrInvalidConfig is returned by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("invalid lease config")

// releaseTimeout bounds the release of the lease on shutdown.
const releaseTimeout = 2 * time.Second

// Config says which lease to hold, as whom, for how long.
type Config struct {
	// Key is the lease key in the bucket (e.g. "informer").
	Key string
	// Holder identifies this replica; it must be unique among replicas.
	Holder string
	// TTL is the lease lifetime; it must equal the bucket's TTL. Should
	// the bucket's TTL be lower (somebody lowered it under this replica),
	// Confirmed trusts a write only for the bucket's TTL, which the
	// elector reads after each of its lease writes.
	TTL time.Duration
	// RenewEvery defaults to TTL/3.
	RenewEvery time.Duration
	// RetryEvery is how often a standby tries to take the lease; default TTL/4.
	RetryEvery time.Duration
	// Now is the clock of Confirmed and of the lease writes it counts
	// from; nil: time.Now. Tests move it.
	Now func() time.Time
	// Conn, when set, is the connection of the bucket: its reconnects make
	// a replica that did not hold the lease wait a TTL before taking it (see
	// the package doc). Nil: no such wait.
	Conn Conn
	// Eligible, when set, is asked before a replica that stepped down
	// (ErrStepDown) campaigns again, after its hold-back TTL: it campaigns
	// only once Eligible returns nil, so a replica still cut off from what
	// made it step down does not take the lease back from nobody and step
	// down again. Nil: it campaigns after the TTL.
	Eligible func(ctx context.Context) error
	// Repair, when set, is called when an attempt to take the lease failed
	// because the bucket is gone (deleted, or lost with a NATS server
	// restarted without its store: see bucketGone); it recreates the
	// bucket (the informer: its start-up set-up), returning nil once it
	// did or an error when ctx ended. Nil: the attempts go on failing
	// until somebody else recreates it.
	Repair func(ctx context.Context) error
}

// Conn is what the elector reads of its NATS connection (*nats.Conn
// satisfies it).
type Conn interface {
	IsConnected() bool
	Stats() nats.Statistics
}

var _ Conn = (*nats.Conn)(nil)

// Elector campaigns for one lease. Its methods are safe for concurrent use.
type Elector struct {
	kv     jetstream.KeyValue
	cfg    Config
	log    *slog.Logger
	leader atomic.Bool
	terms  atomic.Int64
	tries  atomic.Int64 // attempts to take the lease (tests wait on it)
	// confirmedUntil is when the lease written last may expire, as
	// nanoseconds since base (monotonic): the time its write was sent
	// plus the TTL (the server counts the TTL from when it stores the
	// write, later). 0 while not leading. See Confirmed.
	confirmedUntil atomic.Int64
	base           time.Time
	// bucketTTL is the bucket's TTL as last read after a lease write
	// (refreshTTL), in nanoseconds; 0: not read yet.
	bucketTTL atomic.Int64

	// wmu serializes the lease writes of a term (renewals and Reconfirm),
	// which compare-and-swap on rev.
	wmu sync.Mutex
	// rev is the revision of the term's last lease write; guarded by wmu.
	rev uint64
	// lose ends the current term with a cause wrapping ErrLost; nil while
	// not leading and once the term is lost. Guarded by wmu.
	lose context.CancelCauseFunc

	// Read and written by Run's goroutine only.
	held       bool      // this replica held the lease last (nobody else seen since)
	reconnects uint64    // Conn's reconnect count when last looked at
	stable     time.Time // since when connected without a reconnect; zero: disconnected
	holdUntil  time.Time // stepped down: no campaign before this
	stepped    bool      // stepped down: campaign only once Eligible agrees
}

// New validates cfg and returns an Elector; it starts nothing. It returns
// ErrInvalidConfig for an empty key or holder, or a TTL under 30 ms.
func New(kv jetstream.KeyValue, cfg Config, log *slog.Logger) (*Elector, error) {
	if cfg.Key == "" || cfg.Holder == "" {
		return nil, fmt.Errorf("key and holder are required: %w", ErrInvalidConfig)
	}
	if cfg.TTL < 30*time.Millisecond {
		return nil, fmt.Errorf("ttl %s too short: %w", cfg.TTL, ErrInvalidConfig)
	}
	if cfg.RenewEvery <= 0 {
		cfg.RenewEvery = cfg.TTL / 3
	}
	if cfg.RenewEvery > cfg.TTL/2 {
		return nil, fmt.Errorf("renew interval %s must be at most half the ttl %s: %w", cfg.RenewEvery, cfg.TTL, ErrInvalidConfig)
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = cfg.TTL / 4
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Elector{kv: kv, cfg: cfg, log: log.With(slog.String("lease", cfg.Key), slog.String("holder", cfg.Holder)),
		base: cfg.Now()}, nil
}

// confirmMargin is how long before the lease could expire Confirmed stops
// vouching for it (a share of the TTL: clock rates of this host and the
// NATS server differ a little).
const confirmMargin = 10 // TTL/confirmMargin

// Confirmed returns nil when this replica leads and its last write of the
// lease (the take-over or a renewal), counted from when it was sent, is
// younger than the TTL less a margin: no other replica can hold the lease
// yet. Otherwise it returns an error wrapping ErrUnconfirmed. Writers that
// act as the leader ask it just before each write (the informer before
// each publish): IsLeader alone stays true after a pause of the process
// (SIGSTOP, a VM stall) until the renewal that follows the pause fails,
// and a write made in between, after another replica took the lease over,
// would come from a second leader.
func (e *Elector) Confirmed() error {
	until := e.confirmedUntil.Load()
	if !e.leader.Load() || until == 0 {
		return fmt.Errorf("%w: not the leader", ErrUnconfirmed)
	}
	ttl := e.ttl()
	left := time.Duration(until) - e.cfg.Now().Sub(e.base)
	if left < ttl/confirmMargin {
		return fmt.Errorf("%w: last written %v ago (ttl %v), renewal pending", ErrUnconfirmed, ttl-left, ttl)
	}
	return nil
}

// ttl is how long a lease write is trusted to live: the configured TTL, or
// the bucket's when that is lower (the server expires the key by the
// bucket's).
func (e *Elector) ttl() time.Duration {
	if b := time.Duration(e.bucketTTL.Load()); b > 0 && b < e.cfg.TTL {
		return b
	}
	return e.cfg.TTL
}

// confirm records a lease write sent at sent.
func (e *Elector) confirm(sent time.Time) {
	e.confirmedUntil.Store(int64(sent.Sub(e.base) + e.ttl()))
}

// refreshTTL reads the bucket's TTL after a lease write, so the write is
// confirmed (confirm) for no longer than the server keeps the key: a
// bucket whose TTL somebody lowered under a running leader (an informer of
// an older version with a lower LEASE_TTL, an operator) would otherwise
// leave Confirmed vouching for a lease that has expired. Read after the
// write, it is at least as low as the TTL the write lives by, unless the
// TTL is lowered again meanwhile; the next write reads it again. A failed
// read keeps the last value.
func (e *Elector) refreshTTL(ctx context.Context) {
	st, err := e.kv.Status(ctx)
	if err != nil {
		e.log.Debug("lease bucket status unavailable, keeping its last known ttl", slog.Any("err", err))
		return
	}
	b := st.TTL()
	if old := time.Duration(e.bucketTTL.Swap(int64(b))); b != old && b > 0 && b < e.cfg.TTL {
		e.log.Warn("the lease bucket's ttl is below the lease ttl: trusting each lease write for the bucket's only",
			slog.Duration("bucket_ttl", b), slog.Duration("ttl", e.cfg.TTL))
	}
}

// IsLeader reports whether this replica holds the lease right now.
func (e *Elector) IsLeader() bool { return e.leader.Load() }

// Terms returns how many times this replica has become leader.
func (e *Elector) Terms() int64 { return e.terms.Load() }

// Run campaigns until ctx is done. Each time it wins the lease it calls lead
// with a context that is cancelled when the lease is lost (cause ErrLost) or
// ctx ends, waits for lead to return, and campaigns again. On shutdown the
// lease is released so a standby takes over at once. An error returned by
// lead while the lease was held ends Run with that error (the lease is left
// to expire, as after a crash). Run returns nil when ctx ends.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	if e.cfg.Conn != nil {
		// The connection made at start is no outage: no wait before the
		// first campaign.
		e.reconnects = e.cfg.Conn.Stats().Reconnects
		e.stable = time.Now().Add(-e.cfg.TTL)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wake, wdone := e.watchReleases(wctx)
	defer func() {
		wcancel()
		<-wdone
	}()
	for {
		rev, err := e.acquire(ctx, wake)
		if err != nil {
			return nil //nolint:nilerr // acquire only fails when ctx ends
		}
		e.leader.Store(true)
		e.held = true
		e.terms.Add(1)
		e.log.Info("lease acquired")
		leadErr, lost := e.hold(ctx, rev, lead)
		e.leader.Store(false)
		e.confirmedUntil.Store(0)
		switch {
		case ctx.Err() != nil:
			e.release(ctx)
			e.log.Info("lease released")
			return nil
		case lost:
			e.log.Warn("lease lost, standing by")
		case errors.Is(leadErr, ErrStepDown):
			e.release(ctx)
			e.stepDown(time.Now())
			e.log.Warn("stepped down: lease released, not campaigning for a ttl", slog.Any("err", leadErr), slog.Duration("ttl", e.cfg.TTL))
		case leadErr != nil:
			return leadErr
		default:
			// lead returned on its own without error: give the lease up so
			// another replica can lead.
			e.release(ctx)
		}
	}
}

// hold runs lead while renewing the lease. It reports lead's error and
// whether the lease was lost.
func (e *Elector) hold(ctx context.Context, rev uint64, lead func(ctx context.Context) error) (error, bool) {
	leaderCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	e.wmu.Lock()
	e.rev, e.lose = rev, cancel
	e.wmu.Unlock()
	defer func() {
		e.wmu.Lock()
		e.rev, e.lose = 0, nil
		e.wmu.Unlock()
	}()
	var leadErr error
	g := new(errgroup.Group)
	g.Go(func() error {
		e.renew(leaderCtx)
		return nil
	})
	g.Go(func() error {
		leadErr = lead(leaderCtx)
		cancel(nil)
		return nil
	})
	_ = g.Wait() // both functions return nil; results travel in leadErr and the cause
	lost := errors.Is(context.Cause(leaderCtx), ErrLost)
	if lost {
		return nil, true
	}
	return leadErr, false
}

// renew rewrites the lease every RenewEvery until ctx (the term's) ends;
// the first failure ends the term with ErrLost.
func (e *Elector) renew(ctx context.Context) {
	t := time.NewTicker(e.cfg.RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.wmu.Lock()
		err := e.writeLocked(ctx)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("lease renewal failed", slog.Any("err", err))
			_ = e.loseLocked(err) // the term's cause; nobody else to tell
		}
		e.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

// writeLocked rewrites the lease at the term's revision (compare-and-swap:
// it fails once anybody else wrote the key, or the key expired) and
// records the write. It must be answered within RenewEvery, so a failed
// renewal is known at most 2*RenewEvery <= 2*TTL/3 after the last good
// write, before the key can expire. The caller holds wmu.
func (e *Elector) writeLocked(ctx context.Context) error {
	if e.lose == nil {
		return fmt.Errorf("%w: not the leader", ErrLost)
	}
	rctx, cancel := context.WithTimeout(ctx, e.cfg.RenewEvery)
	defer cancel()
	sent := e.cfg.Now()
	next, err := e.kv.Update(rctx, e.cfg.Key, []byte(e.cfg.Holder), e.rev)
	if err != nil {
		return err
	}
	e.rev = next
	e.refreshTTL(rctx)
	e.confirm(sent)
	return nil
}

// loseLocked ends the term after the failed lease write err, and returns
// the error it ends it with (wrapping ErrLost). The caller holds wmu.
func (e *Elector) loseLocked(err error) error {
	e.confirmedUntil.Store(0)
	err = fmt.Errorf("renew lease %s: %w: %w", e.cfg.Key, ErrLost, err)
	if e.lose != nil {
		e.lose(err)
		e.lose = nil
	}
	return err
}

// Reconfirm proves with a synchronous lease write that this replica still
// holds the lease, for a writer that just saw a sign that it may not: the
// informer calls it when the events stream refused an event because the
// object's last event is not the one it expected (publish.Config.Reconfirm).
//
// The write is the renewal's compare-and-swap at the revision of the
// term's last write. It succeeds only if nobody else wrote the key since
// then, and the key did not expire meanwhile (an expired key fails it
// too), so by induction over the term's writes: no other replica has held
// the lease at any moment of this term, up to the write. Whatever the
// writer saw before calling was then not the doing of a replica that took
// the lease over from this one. The write also confirms the lease like a
// renewal (Confirmed).
//
// It returns nil when the write succeeded, or when another write of the
// lease sent after Reconfirm was called (a renewal, another caller's
// Reconfirm) succeeded: that proves the same, so concurrent callers share
// one write. A failed write ends the term at once, like a failed renewal
// (the leader's context is cancelled with ErrLost), and the error wraps
// ErrLost; so does the error when this replica does not lead. An error
// that wraps neither comes from ctx, which ended before anything was
// written.
func (e *Elector) Reconfirm(ctx context.Context) error {
	asked := e.cfg.Now().Sub(e.base)
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if e.lose == nil {
		return fmt.Errorf("reconfirm lease %s: %w: not the leader", e.cfg.Key, ErrLost)
	}
	if until := e.confirmedUntil.Load(); until != 0 && time.Duration(until)-e.cfg.TTL >= asked {
		return nil // written since the caller asked
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reconfirm lease %s: %w", e.cfg.Key, err)
	}
	if err := e.writeLocked(ctx); err != nil {
		e.log.Warn("lease reconfirmation failed", slog.Any("err", err))
		return e.loseLocked(err)
	}
	return nil
}

// acquire tries to take the lease until it succeeds or ctx ends.
func (e *Elector) acquire(ctx context.Context, wake <-chan struct{}) (uint64, error) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		released := false
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		case <-wake:
			released = true
		}
		if !e.mayCampaign(ctx, time.Now()) {
			t.Reset(e.cfg.RetryEvery)
			continue
		}
		e.tries.Add(1)
		sent := e.cfg.Now()
		rev, err := e.tryAcquire(ctx, released || e.mayTakeOver(time.Now()))
		if err == nil {
			rctx, cancel := context.WithTimeout(ctx, e.cfg.RetryEvery)
			e.refreshTTL(rctx)
			cancel()
			e.confirm(sent)
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, errWaiting) && ctx.Err() == nil {
			// Not the common "somebody leads": the bucket is unreachable
			// or gone, and nobody may be leading.
			e.log.Warn("lease not acquired", slog.Any("err", err))
		}
		if e.cfg.Repair != nil && ctx.Err() == nil && e.bucketGone(ctx, err) {
			e.log.Warn("lease bucket gone, recreating it", slog.Any("err", err))
			if e.cfg.Repair(ctx) == nil {
				t.Reset(0) // the bucket is back: try again at once
				continue
			}
		}
		t.Reset(e.cfg.RetryEvery)
	}
}

// bucketGone reports whether the failed attempt to take the lease (err)
// failed because the bucket is gone: the server said "not found"
// (bus.StoreGone), or a look-up of the bucket's status says so. Any other
// error is checked with that look-up: a write into a gone bucket gets no
// responders (bus.StoreMaybeGone), which a normal NATS restart answers
// for a moment too, or ends on its deadline (the client retries "no
// responders" for longer than a short TTL's RetryEvery).
func (e *Elector) bucketGone(ctx context.Context, err error) bool {
	switch {
	case bus.StoreGone(err):
		return true
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, errWaiting):
		return false
	}
	sctx, cancel := context.WithTimeout(ctx, e.cfg.RetryEvery)
	defer cancel()
	_, serr := e.kv.Status(sctx)
	return bus.StoreGone(serr)
}

// stepDown starts the hold-back of a replica that stepped down at now: it
// released the lease, and leaves it to the others for a TTL (a standby
// retries every TTL/4 and at once on the release), so it is no longer the
// replica that held it last.
func (e *Elector) stepDown(now time.Time) {
	e.held = false
	e.holdUntil = now.Add(e.cfg.TTL)
	e.stepped = true
}

// mayCampaign reports whether this replica may try to take the lease at
// now: not while it holds back after a step-down, and after that only
// once Eligible agrees.
func (e *Elector) mayCampaign(ctx context.Context, now time.Time) bool {
	if !e.stepped {
		return true
	}
	if now.Before(e.holdUntil) {
		return false
	}
	if e.cfg.Eligible != nil {
		cctx, cancel := context.WithTimeout(ctx, e.cfg.RetryEvery)
		err := e.cfg.Eligible(cctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				e.log.Debug("stepped down and still not eligible, not campaigning", slog.Any("err", err))
			}
			return false
		}
	}
	e.stepped = false
	e.log.Info("eligible again after stepping down, campaigning")
	return true
}

// errWaiting: the lease is free, but this replica reconnected less than a
// TTL ago and did not hold it last (see the package doc).
var errWaiting = errors.New("reconnected recently, waiting before taking over")

// mayTakeOver reports whether this replica may create a lease that another
// replica may have held: it held it last, or has no connection to watch, or
// has been connected without a reconnect for a TTL.
func (e *Elector) mayTakeOver(now time.Time) bool {
	if e.held || e.cfg.Conn == nil {
		return true
	}
	if !e.cfg.Conn.IsConnected() {
		e.stable = time.Time{}
		return false
	}
	if n := e.cfg.Conn.Stats().Reconnects; n != e.reconnects || e.stable.IsZero() {
		if n != e.reconnects {
			e.log.Info("nats reconnected, waiting a lease ttl before taking over", slog.Duration("ttl", e.cfg.TTL))
		}
		e.reconnects, e.stable = n, now
	}
	return now.Sub(e.stable) >= e.cfg.TTL
}

// tryAcquire creates the lease (when create allows it), or takes back a
// lease that still names this holder (left from before a NATS outage:
// nobody else has taken it).
func (e *Elector) tryAcquire(ctx context.Context, create bool) (uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, e.cfg.RetryEvery)
	defer cancel()
	err := errWaiting
	if create {
		var rev uint64
		rev, err = e.kv.Create(cctx, e.cfg.Key, []byte(e.cfg.Holder))
		if err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
			return rev, err
		}
	}
	entry, gerr := e.kv.Get(cctx, e.cfg.Key)
	switch {
	case gerr != nil:
		return 0, err
	case string(entry.Value()) != e.cfg.Holder:
		e.held = false // someone else leads now: this replica is a plain standby
		return 0, jetstream.ErrKeyExists
	}
	return e.kv.Update(cctx, e.cfg.Key, []byte(e.cfg.Holder), entry.Revision())
}

// release deletes the lease if this replica still holds it.
func (e *Elector) release(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	entry, err := e.kv.Get(rctx, e.cfg.Key)
	if err != nil || string(entry.Value()) != e.cfg.Holder {
		return
	}
	if err := e.kv.Delete(rctx, e.cfg.Key, jetstream.LastRevision(entry.Revision())); err != nil {
		e.log.Warn("lease release failed", slog.Any("err", err))
	}
}

// watchReleases returns a channel that receives when the lease key is
// deleted or purged, so a standby need not wait for its next retry, and a
// channel closed when the watching goroutine has exited (after ctx ends). If
// the watch cannot be started, only polling remains.
func (e *Elector) watchReleases(ctx context.Context) (<-chan struct{}, <-chan struct{}) {
	wake := make(chan struct{}, 1) // one pending wake-up is enough
	done := make(chan struct{})
	w, err := e.kv.Watch(ctx, e.cfg.Key, jetstream.UpdatesOnly())
	if err != nil {
		e.log.Debug("lease watch unavailable, polling only", slog.Any("err", err))
		close(done)
		return wake, done
	}
	// Owned by Run, which cancels ctx and waits for done.
	go func() {
		defer close(done)
		defer func() { _ = w.Stop() }() // best effort: the subscription also ends with ctx
		for {
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				if entry == nil || entry.Operation() == jetstream.KeyValuePut {
					continue
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	}()
	return wake, done
}
