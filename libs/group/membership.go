package group

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// pcgroupsConfigBucket is where pcgroups keeps elastic group configs under
// the key <stream>.<group>; pcgroups does not export the name.
const pcgroupsConfigBucket = "elastic-consumer-groups"

// streamWait is how long joining waits between looks for a missing events
// stream (the informer creates it).
const streamWait = 2 * time.Second

// WorkStreamName is the work-queue stream pcgroups creates for a group: it
// sources the events stream and prefixes each subject with its partition.
func WorkStreamName(stream, group string) string { return stream + "-" + group }

// MembersBucketName is the KV bucket holding the group's member heartbeats;
// its per-bucket TTL is the MemberTTL.
func MembersBucketName(stream, group string) string {
	return membersBucketPrefix + stream + "-" + group
}

// membersBucketPrefix starts the name of every group's members bucket.
const membersBucketPrefix = "ambient-members-"

// memberRecord is a member's heartbeat value.
type memberRecord struct {
	// Partitions is the member's pinned slice (empty = sharing).
	Partitions []int `json:"partitions,omitempty"`
	// Handoff is what the member applied and still runs (see handoff.go);
	// nil from a version without hand-offs.
	Handoff *handoffRecord `json:"handoff,omitempty"`
	// NotReady: the member's Config.Ready has failed for NotReadyAfter, so
	// it gives its shared partitions to a ready peer if there is one
	// (takers). Omitted when ready, so a version without readiness reads
	// as ready.
	NotReady bool `json:"not_ready,omitempty"`
	// Settling: the member is ready, but its Ready has not yet passed for
	// NotReadyAfter without a break (since it joined or last failed): it
	// takes its own share, yet does not count as the ready peer a
	// not-ready member's partitions go to. Omitted once settled.
	Settling bool `json:"settling,omitempty"`
}

// membership keeps this member's heartbeat alive and the pcgroups member
// mappings equal to the live members.
type membership struct {
	js      jetstream.JetStream
	cfg     Config
	log     *slog.Logger
	members jetstream.KeyValue // heartbeats, TTL = MemberTTL
	configs jetstream.KeyValue // pcgroups' config bucket
	// own is this member's partitions and running work, reported in each
	// heartbeat for hand-offs; nil until Run watches the config (the
	// first heartbeat then reports nothing applied yet).
	own *ownership

	// Fencing (issue 14): a NATS outage longer than MemberTTL expires
	// every heartbeat, so right after it the peers' keys are missing
	// exactly as if they had died. heartbeat (Run's beat goroutine) writes
	// these and reconcile (Run's loop) reads them.
	mu           sync.Mutex
	healthySince time.Time // guarded by mu; first heartbeat of the current unbroken run of them; zero after a failure
	reconnects   uint64    // guarded by mu; the connection's reconnect count at the last heartbeat

	// Readiness (Config.Ready, see readiness): only heartbeat touches
	// these, and heartbeats never overlap (start's, then beat's goroutine).
	failingSince time.Time // first failed Ready of the current run of failures; zero while it passes
	passingSince time.Time // first passed Ready of the current run of passes; zero while it fails
	notReady     bool      // reported in the heartbeat: failing for NotReadyAfter
}

// partitioningFilters hashes every event under the prefix on its id token
// (the 3rd '*' of <prefix>.*.*.*). It is one filter on purpose: with member
// mappings pcgroups gives each consumer "<partition>.>" once per
// partitioning filter, and the server rejects a consumer whose filters
// overlap, so several filters (one per resource) cannot work. Resources
// outside cfg.Resources are therefore filtered by the worker (acked
// without calling the handler).
func partitioningFilters(cfg Config) []pcgroups.PartitioningFilter {
	return []pcgroups.PartitioningFilter{{Filter: cfg.SubjectPrefix + ".*.*.*", PartitioningWildcards: []int{3}}}
}

// join creates the elastic group if needed (waiting for the events stream
// to exist), the dead-letter stream and the heartbeat bucket, and gives
// every stream and bucket the group uses its configured replicas. It
// fails when the group exists with other group-wide settings (partitions,
// resources).
func join(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*membership, error) {
	replicas, err := waitForStream(ctx, js, cfg, log)
	if err != nil {
		return nil, err
	}
	if cfg.Replicas > 0 {
		replicas = cfg.Replicas
	}
	// After the wait, not before: a DLQ created before the events stream
	// existed used to get one replica whatever the cluster (issue 14).
	if err := ensureDLQStream(ctx, js, cfg, replicas, log); err != nil {
		return nil, err
	}
	_, err = pcgroups.CreateElastic(ctx, js, cfg.Stream, cfg.Group, uint(cfg.Partitions), partitioningFilters(cfg), 0, 0)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// pcgroups creates the work stream with the events stream's
		// replicas and refuses one whose count we changed; the group
		// config was checked before that, so the group is usable.
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("create consumer group %s on %s: %w", cfg.Group, cfg.Stream, err)
	}
	if err := ensureReplicas(ctx, js, WorkStreamName(cfg.Stream, cfg.Group), replicas, exactly, log); err != nil {
		return nil, err
	}
	if err := ensureReplicas(ctx, js, kvStream(pcgroupsConfigBucket), replicas, atLeast, log); err != nil {
		return nil, err
	}
	configs, err := js.KeyValue(ctx, pcgroupsConfigBucket)
	if err != nil {
		return nil, fmt.Errorf("consumer group config bucket: %w", err)
	}
	// The TTL is how long the server keeps a member's heartbeat, shared by
	// every member: one starting with a lower MemberTTL (a rolling update,
	// a canary) that lowered it made the live members, beating every old
	// TTL/3, expire between beats, and the partitions flapped. So it is
	// raised, never lowered (bus.EnsureKVKeepTTL).
	members, ttl, err := bus.EnsureKVKeepTTL(ctx, js, jetstream.KeyValueConfig{
		Bucket:      MembersBucketName(cfg.Stream, cfg.Group),
		Description: "member heartbeats of consumer group " + cfg.Group,
		TTL:         cfg.MemberTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("member bucket of %s: %w", cfg.Group, err)
	}
	if ttl != cfg.MemberTTL {
		// Beating (every TTL/3) and fencing by our own, lower TTL would
		// be harmless for us but is not what the bucket expires by.
		log.Warn("member ttl below the members bucket's: heartbeats and fencing use the bucket's",
			slog.Duration("member_ttl", cfg.MemberTTL), slog.Duration("bucket_ttl", ttl))
		cfg.MemberTTL = ttl
	}
	return &membership{js: js, cfg: cfg, log: log, members: members, configs: configs}, nil
}

// waitForStream waits until the events stream exists and returns its
// replica count.
func waitForStream(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (int, error) {
	for {
		s, err := js.Stream(ctx, cfg.Stream)
		if err == nil {
			return max(1, s.CachedInfo().Config.Replicas), nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return 0, fmt.Errorf("stream %s: %w", cfg.Stream, err)
		}
		log.Warn("events stream missing, waiting", slog.String(logkey.Stream, cfg.Stream))
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for stream %s: %w", cfg.Stream, ctx.Err())
		case <-time.After(streamWait):
		}
	}
}

// heartbeat renews this member's liveness key and keeps healthySince: the
// time from which this member has reached JetStream without a break (a
// failed heartbeat or a reconnect starts a new run).
func (m *membership) heartbeat(ctx context.Context) error {
	// A put issued during an outage must not hold the loop for the
	// client's 5 s default, but a slow one that still lands within the
	// TTL keeps the member alive: allow what is left of the TTL after the
	// previous renewal's interval.
	ctx, cancel := context.WithTimeout(ctx, m.cfg.MemberTTL-m.cfg.heartbeat())
	defer cancel()
	rec := memberRecord{Partitions: m.cfg.MemberPartitions, Handoff: &handoffRecord{}}
	rec.NotReady, rec.Settling = m.readiness(time.Now())
	if m.own != nil {
		rec.Handoff.Seen, rec.Handoff.Holding = m.own.holding(m.cfg.StopGrace)
	}
	record, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode member record: %w", err)
	}
	_, err = m.members.Put(ctx, m.cfg.Member, record)
	// Read after the put: a put buffered across a reconnect succeeds,
	// and the reconnect it went through must count.
	reconnects := m.js.Conn().Stats().Reconnects
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err != nil:
		m.healthySince = time.Time{}
		return fmt.Errorf("heartbeat %s: %w", m.cfg.Member, err)
	case m.healthySince.IsZero() || reconnects != m.reconnects:
		m.healthySince = time.Now()
		m.reconnects = reconnects
	}
	return nil
}

// readiness asks Config.Ready and returns what the heartbeat reports:
// notReady once Ready has failed for NotReadyAfter without a break (cleared
// by the first pass), settling while the member is ready but Ready has not
// yet passed for NotReadyAfter without a break. Without Ready the member
// is always ready and settled, as before readiness existed.
func (m *membership) readiness(now time.Time) (notReady, settling bool) {
	if m.cfg.Ready == nil {
		return false, false
	}
	err := m.cfg.Ready()
	if err != nil {
		m.passingSince = time.Time{}
		if m.failingSince.IsZero() {
			m.failingSince = now
		}
		if !m.notReady && now.Sub(m.failingSince) >= m.cfg.NotReadyAfter {
			m.notReady = true
			m.log.Warn("member not ready, its shared partitions go to a ready member",
				slog.Any(logkey.Err, err), slog.Duration(logkey.Duration, now.Sub(m.failingSince)))
		}
	} else {
		m.failingSince = time.Time{}
		if m.passingSince.IsZero() {
			m.passingSince = now
		}
		if m.notReady {
			m.notReady = false
			m.log.Info("member ready again, takes its share of the partitions")
		}
	}
	m.cfg.Stats.notReady.Store(m.notReady)
	return m.notReady, !m.notReady && (err != nil || now.Sub(m.passingSince) < m.cfg.NotReadyAfter)
}

// fenced reports whether this member has not yet been reachable for a
// whole MemberTTL: a peer's missing key then proves nothing (it expired
// while NATS, not the peer, was down, or before we could see its renewals),
// so no peer may be counted dead yet.
func (m *membership) fenced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.healthySince.IsZero() || time.Since(m.healthySince) < m.cfg.MemberTTL
}

// leave deletes this member's key and hands its partitions to the others
// at once instead of after MemberTTL.
func (m *membership) leave(ctx context.Context) error {
	if err := m.members.Delete(ctx, m.cfg.Member); err != nil {
		return fmt.Errorf("leave %s: %w", m.cfg.Member, err)
	}
	_, err := m.reconcile(ctx, m.cfg.Member)
	return err
}

// live returns the records of the members with an unexpired heartbeat,
// minus exclude. A record that does not decode counts as sharing, without
// hand-off state.
func (m *membership) live(ctx context.Context, exclude string) (map[string]memberRecord, error) {
	es, err := bus.ReadKV(ctx, m.members)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	live := map[string]memberRecord{}
	for _, e := range es {
		var rec memberRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			rec = memberRecord{}
		}
		live[e.Key()] = rec
	}
	delete(live, exclude)
	return live, nil
}

// reconcile makes the pcgroups mappings match the live members (minus
// exclude, and minus the not-ready ones while a settled member is ready:
// takers) and returns the mapping in force. Members that lost their
// heartbeat have their JetStream consumer deleted before the new mapping is
// written: a dead member cannot delete it itself, and the work-queue
// stream refuses an overlapping consumer for the new owner until it is gone
// (pcgroups would otherwise wait for the consumer's idle timeout). Every
// member runs this; the write is a compare-and-swap on the config's
// revision and the result is deterministic, so concurrent reconcilers agree.
// A partition moving between live members is revoked in one write and
// granted in a later one, once its old owner released it (handoff.go).
func (m *membership) reconcile(ctx context.Context, exclude string) ([]pcgroups.MemberMapping, error) {
	live, err := m.live(ctx, exclude)
	if err != nil {
		return nil, err
	}
	key := m.cfg.Stream + "." + m.cfg.Group
	entry, err := m.configs.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get group config %s: %w", key, err)
	}
	var cur pcgroups.ElasticConsumerGroupConfig
	if err := json.Unmarshal(entry.Value(), &cur); err != nil {
		return nil, fmt.Errorf("decode group config %s: %w", key, err)
	}
	want := handoff(m.cfg.Partitions, cur.MemberMappings, assign(m.cfg.Partitions, takers(live)), live, entry.Revision())
	if len(cur.Members) == 0 && mappingsEqual(cur.MemberMappings, want) {
		return want, nil
	}
	gone := departed(cur, live)
	if dead := slices.DeleteFunc(slices.Clone(gone), func(n string) bool { return n == exclude }); len(dead) > 0 && m.fenced() {
		// Keep the mapping (joins included) until we have been reachable
		// for a TTL; a peer that is really dead is removed then.
		m.log.Debug("peer heartbeat missing, not counted dead before a member ttl of our own",
			slog.Any(logkey.Consumer, dead), slog.Duration(logkey.Duration, m.cfg.MemberTTL))
		return cur.MemberMappings, nil
	}
	inForce := cur.MemberMappings
	workStream := WorkStreamName(m.cfg.Stream, m.cfg.Group)
	for _, name := range gone {
		err := m.js.DeleteConsumer(ctx, workStream, name)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("delete consumer of departed member %s: %w", name, err)
		}
		m.log.Info("member left the group", slog.String(logkey.Consumer, name))
	}
	cur.Members = nil
	cur.MemberMappings = want
	data, err := json.Marshal(cur)
	if err != nil {
		return nil, fmt.Errorf("encode group config: %w", err)
	}
	if _, err := m.configs.Update(ctx, key, data, entry.Revision()); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Another member wrote first; the next heartbeat re-checks.
			return inForce, nil
		}
		return nil, fmt.Errorf("update group config %s: %w", key, err)
	}
	m.log.Info("group membership changed", slog.Int(logkey.Count, len(live)),
		slog.Any(keyPartitions, partitionsOf(want, m.cfg.Member)))
	return want, nil
}

// departed lists members of cur without a live heartbeat.
func departed(cur pcgroups.ElasticConsumerGroupConfig, live map[string]memberRecord) []string {
	var out []string
	add := func(n string) {
		if _, ok := live[n]; !ok && n != unassignedMember && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	for _, n := range cur.Members {
		add(n)
	}
	for _, mm := range cur.MemberMappings {
		add(mm.Member)
	}
	return out
}

// consumerPending reports whether this member's JetStream consumer exists
// and, if so, how many messages wait in it.
func (m *membership) consumerPending(ctx context.Context) (pending uint64, exists bool, err error) {
	c, err := m.js.Consumer(ctx, WorkStreamName(m.cfg.Stream, m.cfg.Group), m.cfg.Member)
	switch {
	case err == nil:
		return c.CachedInfo().NumPending, true, nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return 0, false, nil
	default:
		return 0, false, fmt.Errorf("consumer %s: %w", m.cfg.Member, err)
	}
}

// backlog counts, for each partition in owned, its messages in the
// group's work-queue stream (waiting or delivered and not yet acked): the
// stream's per-subject counts under "<partition>.>", the subjects pcgroups
// gives the work queue. The answer holds one count per object with
// messages waiting, so it grows with the backlog, not with the group.
func (m *membership) backlog(ctx context.Context, owned []int) (map[int]uint64, error) {
	name := WorkStreamName(m.cfg.Stream, m.cfg.Group)
	s, err := m.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	out := make(map[int]uint64, len(owned))
	for _, p := range owned {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(fmt.Sprintf("%d.>", p)))
		if err != nil {
			return nil, fmt.Errorf("backlog of partition %d: %w", p, err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		out[p] = n
	}
	return out, nil
}

// keyPartitions is the log key of a member's partition list.
const keyPartitions = logkey.Partitions
