package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// env is one test world: an embedded NATS with the runner buckets and the
// in-memory API.
type env struct {
	t       *testing.T
	nats    *natsserver.Server
	nc      *nats.Conn
	api     *memapi.Server
	client  *apiclient.Client
	runners jetstream.KeyValue
	members jetstream.KeyValue
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := testenv.NATS(t)
	nc, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	runners, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ambient-runners", LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	members, err := js.CreateKeyValue(ctx, claim.BucketConfig(1, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	api := testenv.API(t)
	return &env{t: t, nats: srv, nc: nc, api: api, client: testenv.APIClient(t, api), runners: runners, members: members}
}

// replica is one in-process runner-manager (without the consumer group:
// tests call Handle).
type replica struct {
	rec    *Reconciler
	mgr    *runner.Manager
	root   string
	cancel context.CancelFunc
	done   chan error
}

type replicaOpts struct {
	member     string
	command    []string
	max        int
	perProject int // LOCAL_MAX_SESSIONS_PER_PROJECT (0: no cap)
	ports      int
	reuseDelay time.Duration // the pool's PORT_REUSE_DELAY (0: none)
	grace      time.Duration
	health     runner.HealthPolicy
	lost       string
	api        sessionAPI
	selector   session.Selector // zero: every session
	hostEnv    []string
	noCleanup  bool
	resync     time.Duration
	check      time.Duration
	// holdDelay delays the goroutine that holds the replica's membership
	// and runs its Reconciler.Run, as a loaded machine may.
	holdDelay time.Duration
	// noRun runs neither the record watch nor the sweep (Reconciler.Run):
	// the replica hears of registry changes only through what it reads
	// itself, as one just thawed whose watch has not delivered yet.
	noRun bool
	// nc, when set, is the replica's own NATS connection (e.g. through a
	// testenv.Link, to cut this replica alone off); nil shares the env's.
	nc *nats.Conn
	// logs, when set, takes the replica's log as JSON lines (jsonLog)
	// instead of the test writer's text.
	logs *jsonLog
}

func (e *env) replica(o replicaOpts) *replica {
	t := e.t
	t.Helper()
	if o.member == "" {
		o.member = "rm-0"
	}
	if len(o.command) == 0 {
		o.command = []string{demoRunner}
	}
	if o.max == 0 {
		o.max = 10
	}
	if o.ports == 0 {
		o.ports = o.max
	}
	if o.grace == 0 {
		o.grace = 2 * time.Second
	}
	if o.health.Interval == 0 {
		o.health = runner.HealthPolicy{Host: "127.0.0.1", Interval: 100 * time.Millisecond, Attempts: 50, FirstDelay: 10 * time.Millisecond}
	}
	if o.lost == "" {
		o.lost = LostRestart
	}
	if o.api == nil {
		o.api = e.client
	}
	if o.hostEnv == nil {
		o.hostEnv = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "SECRET_TOKEN=s3cret", "GITHUB_TOKEN=gh", "LD_PRELOAD=x"}
	}
	low, high := testenv.FreePortRange(t, o.ports)
	pool, err := runner.NewPool(low, high, "", runner.WithReuseDelay(o.reuseDelay))
	if err != nil {
		t.Fatal(err)
	}
	var h slog.Handler = slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug})
	if o.logs != nil {
		h = o.logs.handler(t)
	}
	log := slog.New(h).With("member", o.member)
	root := t.TempDir()
	mgr, err := runner.New(runner.Config{Command: o.command, WorkspaceRoot: root, HostEnv: o.hostEnv, BossSpace: "default",
		MaxSessions: o.max, MaxPerProject: o.perProject, StopGrace: o.grace}, pool, log)
	if err != nil {
		t.Fatal(err)
	}
	nc, membersKV, runnersKV := e.nc, e.members, e.runners
	if o.nc != nil {
		nc = o.nc
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if membersKV, err = js.KeyValue(t.Context(), claim.BucketMembers); err != nil {
			t.Fatal(err)
		}
		if runnersKV, err = js.KeyValue(t.Context(), e.runners.Bucket()); err != nil {
			t.Fatal(err)
		}
	}
	members, err := claim.NewMembers(membersKV, nc, o.member, 2*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := New(Config{Member: o.member, AdvertiseHost: "127.0.0.1", Selector: o.selector, Health: o.health,
		StopGrace: o.grace, SweepInterval: 200 * time.Millisecond, LostPolicy: o.lost, ResyncInterval: o.resync, CheckInterval: o.check, MarkerTTL: time.Second},
		Deps{API: o.api, Runners: runnersKV, Members: members, Manager: mgr, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	run := rec.Run
	if o.noRun {
		run = func(ctx context.Context) error {
			<-ctx.Done()
			rec.starts.Wait()
			return rec.sup.Shutdown(ctx)
		}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)    // Hold's result
	running := make(chan struct{}) // closed when Hold calls Run
	go func() {                    // owned by the replica; ends on cancel
		select {
		case <-time.After(o.holdDelay):
		case <-ctx.Done():
		}
		done <- members.Hold(ctx, func(ctx context.Context) error {
			close(running)
			return run(ctx)
		})
	}()
	// Handle needs Run running (the sweep retries what fails, the watch
	// sees stop requests). Hold calls Run only after its first beat, and
	// gives up when that beat fails: a replica handed over before it, to
	// a test that stops NATS at once, could lose its Run altogether
	// (TestFailedRegistrationRetried under load: nothing retried the
	// registration, the record stayed "starting").
	select {
	case <-running:
	case err := <-done:
		cancel()
		t.Fatalf("replica %s did not start: %v", o.member, err)
	}
	rp := &replica{rec: rec, mgr: mgr, root: root, cancel: cancel, done: done}
	if !o.noCleanup {
		t.Cleanup(func() { rp.stop(t) })
	}
	return rp
}

// stop shuts the replica down and waits for it.
func (rp *replica) stop(t *testing.T) {
	t.Helper()
	rp.cancel()
	select {
	case err := <-rp.done:
		if err != nil {
			t.Errorf("replica stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("replica did not stop")
	}
	rp.done = make(chan error, 1) // stop is idempotent for cleanup
	rp.done <- nil
}

// testWriter takes a replica's log: with TEST_LOG set it goes to the
// test's log as it comes; otherwise its last lines are kept and shown only
// if the test fails, so a failure seen once in CI comes with the
// replica's side of it.
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	tail []string // the last testLogTail lines; guarded by mu
}

// testLogTail bounds the lines a failed test shows per replica.
const testLogTail = 300

func newTestWriter(t *testing.T) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Logf("replica log, last %d lines:\n%s", len(w.tail), strings.Join(w.tail, "\n"))
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	if os.Getenv("TEST_LOG") != "" {
		w.t.Log(line)
		return len(p), nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.tail) == testLogTail {
		w.tail = w.tail[1:]
	}
	w.tail = append(w.tail, line)
	return len(p), nil
}

type sessionOpt func(*ambientv1.CreateSessionRequest)

func (e *env) create(name string, opts ...sessionOpt) *ambientv1.Session {
	e.t.Helper()
	req := &ambientv1.CreateSessionRequest{Name: name, ProjectId: proto.String("proj"), Prompt: proto.String("hello world")}
	for _, o := range opts {
		o(req)
	}
	s, err := e.client.CreateSession(e.t.Context(), req)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) get(id string) *ambientv1.Session {
	e.t.Helper()
	s, err := e.client.GetSession(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) setPhase(id string, phase session.Phase) *ambientv1.Session {
	e.t.Helper()
	s, err := e.client.UpdateSessionStatus(e.t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: phase.Ptr()})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// event builds the event the informer would publish for the session's
// current state.
func (e *env) event(typ eventsv1.EventType, s *ambientv1.Session) *eventsv1.ResourceEvent {
	return events.NewEvent(typ, s, nil, time.Now())
}

func (e *env) handle(rp *replica, typ eventsv1.EventType, s *ambientv1.Session) {
	e.t.Helper()
	if err := rp.rec.Handle(e.t.Context(), group.Message{Event: e.event(typ, s), Attempt: 1}); err != nil {
		e.t.Fatalf("handle %v %s: %v", typ, s.GetMetadata().GetId(), err)
	}
}

// handleRedelivered is handle with the group's redelivery: a retryable
// error (e.g. a claim released while the event was handled) is tried again
// as the next attempt, as libs/group would; a terminal one fails the test.
func (e *env) handleRedelivered(rp *replica, typ eventsv1.EventType, s *ambientv1.Session) {
	e.t.Helper()
	const attempts = 5
	var err error
	for attempt := uint64(1); attempt <= attempts; attempt++ {
		if err = rp.rec.Handle(e.t.Context(), group.Message{Event: e.event(typ, s), Attempt: attempt}); err == nil {
			return
		}
		if group.IsTerminal(err) {
			break
		}
	}
	e.t.Fatalf("handle %v %s: %v", typ, s.GetMetadata().GetId(), err)
}

func (e *env) waitPhase(id string, phase session.Phase, d time.Duration) *ambientv1.Session {
	e.t.Helper()
	var s *ambientv1.Session
	testenv.Eventually(e.t, d, func() error {
		var err error
		s, err = e.client.GetSession(e.t.Context(), id)
		if err != nil {
			return err
		}
		if session.PhaseOf(s) != phase {
			return fmt.Errorf("session %s phase %q, want %q (conditions %s)", id, s.GetPhase(), phase, s.GetConditions())
		}
		return nil
	})
	return s
}

// startRunning hands rp the ADDED event of s, waits for Running and
// returns the runner's registry record.
func (e *env) startRunning(rp *replica, s *ambientv1.Session) registry.Record {
	e.t.Helper()
	id := s.GetMetadata().GetId()
	e.handle(rp, added, s)
	e.waitPhase(id, session.PhaseRunning, 10*time.Second)
	rec, err := registry.Get(e.t.Context(), e.runners, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

// startedRecord returns the session's registry record once it names a
// running runner.
func (e *env) startedRecord(id string) registry.Record {
	e.t.Helper()
	var rec registry.Record
	testenv.Eventually(e.t, 5*time.Second, func() error {
		var err error
		if rec, err = registry.Get(e.t.Context(), e.runners, id); err != nil {
			return err
		}
		if rec.State != registry.StateRunning || !rec.Routable() {
			return fmt.Errorf("record %+v not running", rec)
		}
		return nil
	})
	return rec
}

func (e *env) waitNoClaim(id string) {
	e.t.Helper()
	testenv.Eventually(e.t, 5*time.Second, func() error {
		rec, err := registry.Get(e.t.Context(), e.runners, id)
		if errors.Is(err, registry.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("claim still present: %+v (%v)", rec, err)
	})
}

func condition(t *testing.T, s *ambientv1.Session, typ string) session.Condition {
	t.Helper()
	c, ok := status.Conditions(s).Get(typ)
	if !ok {
		t.Fatalf("no %s condition in %s", typ, s.GetConditions())
	}
	return c
}

func pidAlive(pid int) bool {
	// /proc/<pid> disappears once the process is reaped; a zombie counts as
	// gone for our purposes (its "State:" is Z).
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	return !strings.Contains(string(b), "State:\tZ")
}
