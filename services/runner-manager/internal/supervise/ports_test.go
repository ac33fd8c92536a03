package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// The tests of this file run one supervisor (the part of runner-manager
// that gives a runner's port back) with real parts: demo runner
// processes, an embedded NATS with the registry bucket, the in-memory
// API.

const testHost = "127.0.0.1"

// world is one replica's supervisor and what it runs on.
type world struct {
	t       *testing.T
	sup     *Supervisor
	mgr     *runner.Manager
	claims  *claim.Claims
	runners jetstream.KeyValue
	client  sessionAPI
	low     int // the first port of the pool's range
	log     *slog.Logger
}

// sessionAPI is what the tests and the status writer need from the API.
type sessionAPI interface {
	GetSession(ctx context.Context, id string) (*ambientv1.Session, error)
	UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
	CreateSession(ctx context.Context, req *ambientv1.CreateSessionRequest) (*ambientv1.Session, error)
}

// newWorld starts a supervisor of member rm-0 advertising testHost with
// ports ports and room for max runners; wrap, when set, wraps the API the
// status writer uses.
func newWorld(t *testing.T, ports, maxRunners int, wrap func(sessionAPI) sessionAPI) *world {
	t.Helper()
	nc, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	runners, err := bus.EnsureKV(ctx, js, bus.RunnersBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	membersKV, err := bus.EnsureKV(ctx, js, claim.BucketConfig(1, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	members, err := claim.NewMembers(membersKV, nc, "rm-0", 2*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := claim.New(runners, "rm-0", members, log)
	if err != nil {
		t.Fatal(err)
	}
	var api sessionAPI = testenv.APIClient(t, testenv.API(t))
	client := api
	if wrap != nil {
		api = wrap(api)
	}
	st, err := status.New(api, nil)
	if err != nil {
		t.Fatal(err)
	}
	low, high := testenv.FreePortRange(t, ports)
	pool, err := runner.NewPool(low, high, "")
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := runner.New(runner.Config{Command: []string{demoRunner}, WorkspaceRoot: t.TempDir(), MaxSessions: maxRunners, StopGrace: 2 * time.Second,
		HostEnv: []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"}}, pool, log)
	if err != nil {
		t.Fatal(err)
	}
	sup, err := New(Config{AdvertiseHost: testHost, StopGrace: 2 * time.Second,
		Health: runner.HealthPolicy{Host: testHost, Interval: 100 * time.Millisecond, Attempts: 50, FirstDelay: 10 * time.Millisecond}},
		Deps{Manager: mgr, Claims: claims, Status: st, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// The record watch, as the reconciler runs it: it keeps the index
	// NamedPorts reads.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	watched := make(chan error, 1)
	go func() { watched <- claims.Watch(wctx, func(registry.Endpoint) {}) }() // owned by the test; ends on cancel
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer scancel()
		if err := sup.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		cancel()
		if err := <-watched; err != nil {
			t.Errorf("watch: %v", err)
		}
	})
	return &world{t: t, sup: sup, mgr: mgr, claims: claims, runners: runners, client: client, low: low, log: log}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// create makes a Pending session.
func (w *world) create(name string) *ambientv1.Session {
	w.t.Helper()
	s, err := w.client.CreateSession(w.t.Context(), &ambientv1.CreateSessionRequest{Name: name, ProjectId: proto.String("proj"), Prompt: proto.String("hi")})
	if err != nil {
		w.t.Fatal(err)
	}
	s, err = w.client.UpdateSessionStatus(w.t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: s.GetMetadata().GetId(), Phase: session.PhasePending.Ptr()})
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// start claims s and starts its runner as the reconciler does (session
// lock, claim, Supervisor.Start), returning Start's error.
func (w *world) start(s *ambientv1.Session) error {
	w.t.Helper()
	id := s.GetMetadata().GetId()
	unlock := w.sup.Lock(id)
	defer unlock()
	held, err := w.claims.Claim(w.t.Context(), id, s.GetProjectId())
	if err != nil {
		w.t.Fatalf("claim %s: %v", id, err)
	}
	return w.sup.Start(w.t.Context(), w.log, s, Start{Claim: held})
}

// running waits until the record of session id names its running runner.
func (w *world) running(id string) registry.Record {
	w.t.Helper()
	var rec registry.Record
	testenv.Eventually(w.t, 10*time.Second, func() error {
		var err error
		if rec, err = registry.Get(w.t.Context(), w.runners, id); err != nil {
			return err
		}
		if rec.State != registry.StateRunning || !rec.Routable() {
			return fmt.Errorf("record %+v not running", rec.Endpoint)
		}
		return nil
	})
	return rec
}

// named waits until NamedPorts (the watch's index) says whether port is
// named.
func (w *world) named(port int, want bool) {
	w.t.Helper()
	testenv.Eventually(w.t, 5*time.Second, func() error {
		named, err := w.claims.NamedPorts(w.t.Context(), testHost)
		if err != nil {
			return err
		}
		if named[port] != want {
			return fmt.Errorf("port %d named %v, want %v (%v)", port, named[port], want, named)
		}
		return nil
	})
}

// finalGate holds the final-phase write of one session (an API that
// answers slowly) until opened: the runner has exited, its record still
// names its endpoint.
type finalGate struct {
	sessionAPI
	id      string
	entered chan struct{} // closed when the final write arrived
	open    chan struct{}
	once    sync.Once
	enter   sync.Once
}

func (g *finalGate) UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	if req.GetId() == g.id && session.Phase(req.GetPhase()).Terminal() {
		g.enter.Do(func() { close(g.entered) })
		<-g.open // not ctx: the write is slow, not cancelled
	}
	return g.sessionAPI.UpdateSessionStatus(ctx, req)
}

func (g *finalGate) release() { g.once.Do(func() { close(g.open) }) }

// TestExitedRunnerPortHeldWhileRecordRoutes: session X's runner exits and
// its record still names host:P (its final phase is being written, which
// may take up to finalWriteTimeout; a failed release or a dead owner keep
// it longer). Session Y, started meanwhile, must not get P: agui-proxy
// would send X's clients, authorized for X, to Y's runner. Before the fix
// the process manager gave P back at the exit, P was free to bind, and Y
// got it. Once X's record is gone, Y gets P.
func TestExitedRunnerPortHeldWhileRecordRoutes(t *testing.T) {
	gate := &finalGate{entered: make(chan struct{}), open: make(chan struct{})}
	w := newWorld(t, 1, 2, func(a sessionAPI) sessionAPI { gate.sessionAPI = a; return gate })
	t.Cleanup(gate.release) // before the world's cleanup: Shutdown waits for X's report
	x, y := w.create("x"), w.create("y")
	xid, yid := x.GetMetadata().GetId(), y.GetMetadata().GetId()
	gate.id = xid
	if err := w.start(x); err != nil {
		t.Fatal(err)
	}
	xrec := w.running(xid)
	p := xrec.Port

	w.sup.Get(xid).RequestStop(t.Context(), false)
	select {
	case <-gate.entered: // exited, reported from here on
	case <-time.After(10 * time.Second):
		t.Fatal("x's final phase was never written")
	}
	if rec, err := registry.Get(t.Context(), w.runners, xid); err != nil || !rec.Routable() || rec.Port != p {
		t.Fatalf("x's record while its final phase is written: %+v %v; want it routable to port %d", rec.Endpoint, err, p)
	}
	if err := w.start(y); !errors.Is(err, runner.ErrNoPorts) {
		got := "no runner"
		if proc, ok := w.mgr.Get(yid); ok {
			got = fmt.Sprintf("port %d", proc.Port)
		}
		t.Fatalf("y started while x's record names %s:%d: %v (%s); want ErrNoPorts", testHost, p, err, got)
	}
	if _, err := registry.Get(t.Context(), w.runners, yid); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("y's claim after ErrNoPorts: %v, want it released", err)
	}

	gate.release()
	testenv.Eventually(t, 10*time.Second, func() error {
		rec, err := registry.Get(t.Context(), w.runners, xid)
		if errors.Is(err, registry.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("x's record %+v %v still there", rec.Endpoint, err)
	})
	w.named(p, false)
	if err := w.start(y); err != nil {
		t.Fatalf("start y once x's record is gone: %v", err)
	}
	if rec := w.running(yid); rec.Port != p {
		t.Fatalf("y on port %d, want %d", rec.Port, p)
	}
}

// TestDeadPeerRecordPortSkipped: a peer on the same host (an overlapping
// LOCAL_PORT_RANGE), or this replica's previous incarnation, died and
// left session Y's record naming host:P; its runner died with it, so P
// is free to bind. Until the record is taken over, this replica must not
// give P to another session's runner: agui-proxy routes Y's clients to
// host:P. Before the fix Acquire only probed the port and handed P out.
// A record of another host naming a port does not keep it.
func TestDeadPeerRecordPortSkipped(t *testing.T) {
	w := newWorld(t, 2, 3, nil)
	p, q := w.low, w.low+1
	dead := registry.Endpoint{SessionID: "y-of-dead-peer", ProjectID: "proj", Owner: "rm-dead", Host: testHost, Port: p,
		PID: 999999, StartedAt: time.Now(), State: registry.StateRunning}
	if _, err := registry.Claim(t.Context(), w.runners, dead); err != nil {
		t.Fatal(err)
	}
	elsewhere := registry.Endpoint{SessionID: "z-elsewhere", ProjectID: "proj", Owner: "rm-other-host", Host: "192.0.2.7", Port: q,
		StartedAt: time.Now(), State: registry.StateRunning}
	if _, err := registry.Claim(t.Context(), w.runners, elsewhere); err != nil {
		t.Fatal(err)
	}
	w.named(p, true)

	x := w.create("x")
	xid := x.GetMetadata().GetId()
	if err := w.start(x); err != nil {
		t.Fatal(err)
	}
	if rec := w.running(xid); rec.Port != q {
		t.Fatalf("x on port %d, want %d: %d is named by the dead peer's record of session %s", rec.Port, q, p, dead.SessionID)
	}
	v := w.create("v")
	if err := w.start(v); !errors.Is(err, runner.ErrNoPorts) {
		t.Fatalf("second start: %v, want ErrNoPorts (%d named by a dead peer's record, %d taken)", err, p, q)
	}

	// Taken over (the endpoint is cleared): P is free again.
	rec, err := registry.Get(t.Context(), w.runners, dead.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.claims.TakeOver(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	w.named(p, false)
	if err := w.start(v); err != nil {
		t.Fatalf("start once the dead peer's record was taken over: %v", err)
	}
	if rec := w.running(v.GetMetadata().GetId()); rec.Port != p {
		t.Fatalf("v on port %d, want %d", rec.Port, p)
	}
}
