package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// BucketMembers is the TTL KV bucket of runner-manager heartbeats.
const BucketMembers = bus.BucketRunnerMembers

// BucketConfig returns the members bucket config: every key expires ttl after
// its last write.
func BucketConfig(replicas int, ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: BucketMembers, Description: "runner-manager replica heartbeats",
		TTL: ttl, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	}
}

// EnsureBucket creates the members bucket with ttl, or raises an existing
// bucket's TTL to ttl; it never lowers it, and returns the bucket's TTL
// after the call (as bus.EnsureLeasesBucket does for leader leases). The
// bucket's TTL is how long the server keeps a heartbeat after its last
// write, and every replica shares it: a replica starting with a lower
// MEMBER_TTL that set it (a rolling update, a canary) made the live
// replicas, beating every old TTL/3, look dead between beats, and its
// sweep took over sessions whose runner missed one probe: two runners for
// one session. Raising it is safe: live replicas only look alive longer
// than they beat. A caller whose ttl is below the returned one must beat
// and judge by the returned one (NewMembers), as the replicas already
// running do. Two replicas starting at the same moment with different
// TTLs can still race (read, then update); the next start settles it.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration) (jetstream.KeyValue, time.Duration, error) {
	return bus.EnsureKVKeepTTL(ctx, js, BucketConfig(replicas, ttl))
}

// Members writes this replica's heartbeat and answers liveness questions.
// Safe for concurrent use.
type Members struct {
	kv     jetstream.KeyValue
	nc     *nats.Conn
	member string
	ttl    time.Duration
	every  time.Duration
	log    *slog.Logger

	// Fencing (issue 14): a NATS outage longer than the TTL expires every
	// heartbeat, so right after it a live peer's key is missing exactly as
	// a dead one's. healthySince is the first beat of the current unbroken
	// run of beats (zero after a failed beat); a reconnect starts a new
	// run, read from the connection's reconnect count.
	//
	// A pause of the whole process longer than the TTL (SIGSTOP, a VM
	// stall) breaks the run too, although no beat failed and no reconnect
	// happened: this replica's own key expired meanwhile, and the world it
	// judged before the pause is gone. lastBeat (the last successful beat)
	// tells: a gap longer than the TTL starts a new run.
	mu           sync.Mutex
	healthySince time.Time // guarded by mu
	lastBeat     time.Time // guarded by mu; zero before the first beat
	reconnects   uint64    // guarded by mu; the connection's count at the last beat
	// now is the clock (time.Now; tests move it to stage a pause).
	now func() time.Time
}

// NewMembers returns a heartbeat writer for member on kv, renewing every
// ttl/3; nc is the connection kv uses (its reconnects restart the
// fencing period, see Settled).
func NewMembers(kv jetstream.KeyValue, nc *nats.Conn, member string, ttl time.Duration, log *slog.Logger) (*Members, error) {
	if member == "" {
		return nil, errors.New("member id is empty")
	}
	if kv == nil || nc == nil || log == nil {
		return nil, errors.New("members: bucket, connection and log are required")
	}
	if ttl < 300*time.Millisecond {
		return nil, fmt.Errorf("member ttl %v: want >= 300ms", ttl)
	}
	return &Members{kv: kv, nc: nc, member: member, ttl: ttl, every: ttl / 3, log: log, now: time.Now}, nil
}

// Member returns this replica's id.
func (m *Members) Member() string { return m.member }

// TTL is the heartbeat lifetime.
func (m *Members) TTL() time.Duration { return m.ttl }

// Beat writes the heartbeat once. It keeps the fencing period: a failed
// beat ends it, the first beat after a failure or a reconnect starts it.
func (m *Members) Beat(ctx context.Context) error {
	// A renewal later than the next one is worthless; a put issued during
	// an outage must not hold the loop for long.
	ctx, cancel := context.WithTimeout(ctx, max(m.every, time.Second))
	defer cancel()
	if _, err := m.kv.Put(ctx, events.EscapeToken(m.member), []byte(m.now().UTC().Format(time.RFC3339Nano))); err != nil {
		m.mu.Lock()
		m.healthySince = time.Time{}
		m.mu.Unlock()
		return fmt.Errorf("heartbeat %s: %w", m.member, err)
	}
	// Read after the put: a put buffered across a reconnect succeeds, and
	// the reconnect it went through must count.
	reconnects := m.nc.Stats().Reconnects
	now := m.now()
	m.mu.Lock()
	if m.healthySince.IsZero() || reconnects != m.reconnects || now.Sub(m.lastBeat) > m.ttl {
		m.healthySince, m.reconnects = now, reconnects
	}
	m.lastBeat = now
	m.mu.Unlock()
	return nil
}

// Settled reports whether this replica has reached NATS without a break
// (no failed beat, no reconnect, no gap between two beats longer than the
// TTL) for longer than the TTL, and beat within the last TTL. Only then
// is a peer's missing heartbeat evidence that the peer died: right after
// an outage every key has expired, and a live peer needs up to a TTL
// after its own reconnect to write its key again. The last condition
// covers the moment right after a pause, before the next beat: the
// sweep that resumes with the process must not count on a view older
// than the TTL.
func (m *Members) Settled() bool {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.healthySince.IsZero() && now.Sub(m.healthySince) > m.ttl && now.Sub(m.lastBeat) <= m.ttl
}

// Hold keeps this replica alive while fn runs: it writes the first beat
// (failing without calling fn when it cannot), beats every TTL/3 until fn
// returns, even after ctx ended (fn's shutdown, stopping and reporting its
// runners, runs while the replica still looks alive, or a peer would take
// the sessions over meanwhile), then deletes the heartbeat so peers take
// over at once instead of after the TTL. It returns fn's error joined with
// a failed leave.
func (m *Members) Hold(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := m.Beat(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // shut down before it began: nothing held, nothing failed
		}
		return err
	}
	bctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	beats := make(chan error, 1)         // Run's result, read below
	go func() { beats <- m.Run(bctx) }() // owned by Hold; ends on stop below
	err := fn(ctx)
	stop()
	return errors.Join(err, <-beats)
}

// Run beats until ctx ends, then deletes the heartbeat so peers take over
// at once instead of after the TTL. A reconnect beats at once instead of
// at the next tick: after an outage longer than the TTL every key has
// expired, and the peers wait for ours (Settled). Failed beats are logged
// and retried on the next tick; Run returns nil when ctx ends, or the
// failed leave.
func (m *Members) Run(ctx context.Context) error {
	t := time.NewTicker(m.every)
	defer t.Stop()
	reconnected := m.nc.StatusChanged(nats.CONNECTED)
	defer m.nc.RemoveStatusListener(reconnected)
	for {
		if err := m.Beat(ctx); err != nil && ctx.Err() == nil {
			// The member's id is its logger's (app.Run): logged again here
			// it made the key appear twice.
			m.log.Warn("heartbeat failed", slog.String(logkey.Err, err.Error()))
		}
		select {
		case <-ctx.Done():
			return m.leave(ctx)
		case <-reconnected:
			t.Reset(m.every)
		case <-t.C:
		}
	}
}

func (m *Members) leave(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := m.kv.Delete(ctx, events.EscapeToken(m.member)); err != nil {
		return fmt.Errorf("leave %s: %w", m.member, err)
	}
	return nil
}

// Alive reports whether member has a live heartbeat. This replica is alive
// by definition. A missing heartbeat proves a death only once Settled.
func (m *Members) Alive(ctx context.Context, member string) (bool, error) {
	if member == m.member {
		return true, nil
	}
	_, err := m.kv.Get(ctx, events.EscapeToken(member))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	default:
		return false, fmt.Errorf("liveness of %s: %w", member, err)
	}
}
