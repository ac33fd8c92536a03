package group_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
)

const testGroup = "svc"

// testConfig is fast: failover in about MemberTTL plus one heartbeat.
func testConfig(member string) group.Config {
	return group.Config{
		Group:      testGroup,
		Member:     member,
		Partitions: 8,
		MaxDeliver: 3,
		Backoff:    []time.Duration{20 * time.Millisecond, 40 * time.Millisecond},
		AckWait:    2 * time.Second,
		MemberTTL:  time.Second,
		StopGrace:  2 * time.Second,
		Stats:      &group.Stats{},
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("GROUP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// setup starts NATS with the events stream. The DLQ stream is left to
// group.Run, which must create it so dead letters are kept.
func setup(t testing.TB) (*natsserver.Server, jetstream.JetStream) {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	if _, err := bus.EnsureEventsStream(t.Context(), js, 1, 0); err != nil {
		t.Fatalf("events stream: %v", err)
	}
	return srv, js
}

// member is one running group.Run on its own connection.
type member struct {
	name   string
	cancel context.CancelFunc
	done   chan error // receives Run's result once
	nc     interface{ Close() }
}

// startMember runs group.Run on its own connection to srv; see runMember.
func startMember(t testing.TB, srv *natsserver.Server, cfg group.Config, h group.Handler) *member {
	t.Helper()
	nc, js := testenv.JetStream(t, srv)
	return runMember(t, nc, js, cfg, h, testLogger())
}

// runMember runs group.Run on js (whose connection is nc) in a goroutine
// owned by the test; Cleanup cancels and waits for it.
func runMember(t testing.TB, nc interface{ Close() }, js jetstream.JetStream, cfg group.Config, h group.Handler, log *slog.Logger) *member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{name: cfg.Member, cancel: cancel, done: make(chan error, 1), nc: nc}
	go func() { m.done <- group.Run(ctx, js, cfg, h, log.With("test_member", cfg.Member)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-m.done:
			if err != nil {
				t.Logf("member %s stopped: %v", cfg.Member, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("member %s did not stop", cfg.Member)
		}
	})
	return m
}

// stop cancels the member and returns Run's error.
func (m *member) stop(t *testing.T) error {
	t.Helper()
	m.cancel()
	select {
	case err := <-m.done:
		m.done <- err // let Cleanup see it too
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("member %s did not stop", m.name)
		return nil
	}
}

// waitMembers waits until the group's mapping holds exactly names and each
// named member's consumer exists, so no rebalance is in progress.
func waitMembers(t testing.TB, js jetstream.JetStream, names ...string) []pcgroups.MemberMapping {
	t.Helper()
	var got []pcgroups.MemberMapping
	testenv.Eventually(t, 15*time.Second, func() error {
		cfg, err := pcgroups.GetElasticConsumerGroupConfig(t.Context(), js, events.StreamName, testGroup)
		if err != nil {
			return err
		}
		var have []string
		for _, mm := range cfg.MemberMappings {
			have = append(have, mm.Member)
		}
		if !slices.Equal(have, names) {
			return fmt.Errorf("members %v, want %v", have, names)
		}
		for _, n := range names {
			c, err := js.Consumer(t.Context(), group.WorkStreamName(events.StreamName, testGroup), n)
			if err != nil {
				return fmt.Errorf("consumer %s: %w", n, err)
			}
			// The consumer must carry the member's current partitions.
			info := c.CachedInfo()
			if len(info.Config.FilterSubjects) != len(partitionsIn(cfg.MemberMappings, n)) {
				return fmt.Errorf("consumer %s filters %v not yet updated", n, info.Config.FilterSubjects)
			}
		}
		got = cfg.MemberMappings
		return nil
	})
	return got
}

func partitionsIn(m []pcgroups.MemberMapping, name string) []int {
	for _, mm := range m {
		if mm.Member == name {
			return mm.Partitions
		}
	}
	return nil
}

// publish sends version v of session id; the version travels in Name.
func publish(t testing.TB, js jetstream.JetStream, id string, v int) {
	t.Helper()
	publishCtx(t, t.Context(), js, id, v)
}

// publishCtx is publish with the trace context of ctx.
func publishCtx(t testing.TB, ctx context.Context, js jetstream.JetStream, id string, v int) {
	t.Helper()
	if _, err := js.PublishMsg(t.Context(), eventMsg(t, ctx, id, v)); err != nil {
		t.Fatalf("publish %s v%d: %v", id, v, err)
	}
}

// eventMsg is the event of version v of session id (the version travels
// in Name), with the trace context of ctx.
func eventMsg(t testing.TB, ctx context.Context, id string, v int) *nats.Msg {
	t.Helper()
	s := &ambientv1.Session{
		Metadata:  &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(time.Unix(int64(1_700_000_000+v), 0)), Kind: "Session"},
		Name:      strconv.Itoa(v),
		ProjectId: proto.String("p1"),
	}
	typ := eventsv1.EventType_EVENT_TYPE_MODIFIED
	if v == 1 {
		typ = eventsv1.EventType_EVENT_TYPE_ADDED
	}
	msg, err := events.NewMsg(ctx, events.SubjectPrefix, events.NewEvent(typ, s, nil, time.Now()))
	if err != nil {
		t.Fatalf("new msg: %v", err)
	}
	return msg
}

// call is one handler invocation.
type call struct {
	member  string
	object  string
	version int
	attempt uint64
	ok      bool
	at      time.Time
}

// journal records handler calls in the order they start.
type journal struct {
	mu    sync.Mutex
	calls []call // guarded by mu
}

func (j *journal) add(c call) {
	j.mu.Lock()
	defer j.mu.Unlock()
	c.at = time.Now()
	j.calls = append(j.calls, c)
}

func (j *journal) snapshot() []call {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.calls)
}

// successes counts successful calls.
func (j *journal) successes() int {
	n := 0
	for _, c := range j.snapshot() {
		if c.ok {
			n++
		}
	}
	return n
}

func version(m group.Message) int {
	s, _ := events.Unwrap[*ambientv1.Session](m.Event.GetObject())
	v, _ := strconv.Atoi(s.GetName())
	return v
}

// checkOrder fails if any object's successful versions go backwards in
// call order, and returns the versions seen per object.
func checkOrder(t *testing.T, calls []call) map[string][]int {
	t.Helper()
	seen := map[string][]int{}
	for _, c := range calls {
		if !c.ok {
			continue
		}
		vs := seen[c.object]
		if len(vs) > 0 && c.version < vs[len(vs)-1] {
			t.Errorf("object %s: version %d handled after %d", c.object, c.version, vs[len(vs)-1])
		}
		seen[c.object] = append(vs, c.version)
	}
	return seen
}

func dlqMessages(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(t.Context(), bus.DLQStreamName)
	if err != nil {
		t.Fatalf("dlq stream: %v", err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("dlq info: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("dlq get %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// tracedCtx carries a fixed sampled span context.
func tracedCtx(t *testing.T) context.Context {
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(t.Context(), sc)
}

// queueBehindFirst publishes v1 of object x, waits until its handler has
// started (it signals started and then blocks), publishes queued more
// versions and waits until the member holds all of them: v1 running, the
// rest waiting in x's lane.
func queueBehindFirst(t *testing.T, js jetstream.JetStream, cfg group.Config, started <-chan struct{}, queued int) {
	t.Helper()
	publish(t, js, "x", 1)
	waitSignal(t, started, "first call never started")
	for v := 2; v <= queued+1; v++ {
		publish(t, js, "x", v)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().InFlight; n != uint64(queued+1) {
			return fmt.Errorf("%d held, want %d", n, queued+1)
		}
		return nil
	})
}

// waitSignal waits up to 15 s for a value on ch (a handler saying it
// started), failing with msg otherwise.
func waitSignal(t testing.TB, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(15 * time.Second):
		t.Fatal(msg)
	}
}

// stallBackoff is the backoff of the failing objects of a stallProbe:
// longer than its wait for the healthy object, so that the wait cannot be
// met by a backoff ending.
const stallBackoff = 20 * time.Second

// stallProbe is the handler of a member whose objects bad fail (while
// fails says so for the call's version) beside a healthy object "ok". It
// journals every call and notes, for each call of ok, whether every bad
// object was still at its first try.
type stallProbe struct {
	bad   []string
	fails func(version int) bool
	calls journal

	mu                 sync.Mutex
	okDuringFirstTries []bool // guarded by mu
}

func (p *stallProbe) handle(_ context.Context, m group.Message) error {
	c := call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true}
	if slices.Contains(p.bad, c.object) && p.fails(c.version) {
		c.ok = false
		p.calls.add(c)
		return errors.New("dependency down for this tenant")
	}
	if c.object == "ok" {
		p.noteHealthy()
	}
	p.calls.add(c)
	return nil
}

// noteHealthy notes whether every bad object has had exactly one call.
func (p *stallProbe) noteHealthy() {
	calls := p.calls.snapshot()
	first := true
	for _, b := range p.bad {
		n := 0
		for _, c := range calls {
			if c.object == b {
				n++
			}
		}
		first = first && n == 1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.okDuringFirstTries = append(p.okDuringFirstTries, first)
}

// handledBesideBackoffs publishes v1 of every bad object and, once each
// has failed and waits out its backoff (stallBackoff), versions 1 to
// versions of ok; it fails the test unless all of ok's are handled while
// every bad object is still at its first try.
func (p *stallProbe) handledBesideBackoffs(t *testing.T, js jetstream.JetStream, stats *group.Stats, versions int) {
	t.Helper()
	for _, b := range p.bad {
		publish(t, js, b, 1)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := stats.Snapshot(); st.Retried != uint64(len(p.bad)) {
			return fmt.Errorf("%d of %d failing objects in backoff", st.Retried, len(p.bad))
		}
		return nil
	})
	for v := 1; v <= versions; v++ {
		publish(t, js, "ok", v)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := stats.Snapshot().Acked; n != uint64(versions) {
			return fmt.Errorf("healthy object: %d of %d events handled while %v wait out a %s backoff", n, versions, p.bad, stallBackoff)
		}
		return nil
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Contains(p.okDuringFirstTries, false) {
		t.Errorf("healthy object handled only after a failing object's backoff (per call, failing ones at first try: %v)", p.okDuringFirstTries)
	}
}

// attempts lists the attempts of object's calls of the given versions
// (of every version when none is given), in call order.
func (p *stallProbe) attempts(object string, versions ...int) string {
	var out []uint64
	for _, c := range p.calls.snapshot() {
		if c.object == object && (len(versions) == 0 || slices.Contains(versions, c.version)) {
			out = append(out, c.attempt)
		}
	}
	return fmt.Sprint(out)
}

// fillDLQ makes the DLQ stream (created by a member's Run) refuse every
// further letter: full, DiscardNew.
func fillDLQ(ctx context.Context, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, bus.DLQStreamName)
	if err != nil {
		return fmt.Errorf("dlq stream: %w", err)
	}
	sc := s.CachedInfo().Config
	sc.MaxMsgs, sc.Discard = 1, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("limit dlq stream: %w", err)
	}
	if _, err := js.Publish(ctx, events.DLQPrefix+".filler", []byte("x")); err != nil {
		return fmt.Errorf("fill dlq stream: %w", err)
	}
	return nil
}
