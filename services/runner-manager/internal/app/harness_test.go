package app_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// world is NATS + the in-memory API + a minimal informer publishing every
// session change to the events stream (so the service also sees the echo of
// its own writes).
type world struct {
	t       testing.TB
	nats    *natsserver.Server
	api     *memapi.Server
	client  *apiclient.Client
	js      jetstream.JetStream
	runners jetstream.KeyValue

	relayMu sync.Mutex
	// relayed is, by session id, the version (events.VersionOf) of the
	// object of the last event the relay published; guarded by relayMu.
	relayed map[string]string
}

func newWorld(t testing.TB, apiOpts ...memapi.Option) *world {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	if _, err := bus.EnsureEventsStream(ctx, js, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	runners, err := bus.EnsureKV(ctx, js, bus.RunnersBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	api := testenv.API(t, apiOpts...)
	w := &world{t: t, nats: srv, api: api, client: testenv.APIClient(t, api), js: js, runners: runners, relayed: map[string]string{}}
	w.startInformer()
	return w
}

// startInformer relays the API's session watch to the events stream.
func (w *world) startInformer() {
	t := w.t
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	stream, err := w.client.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	// Receive apart from publishing, like the real informer: the API drops
	// events for a reader that falls behind. The buffer is far larger than
	// any test's burst.
	recv := make(chan *ambientv1.SessionWatchEvent, 1<<16)
	go func() { // owned by the test; ends when the watch ends (cleanup cancels it)
		defer close(recv)
		for {
			we, err := stream.Recv()
			if err != nil {
				return
			}
			recv <- we
		}
	}()
	go func() { // owned by the test (cleanup above); ends when the watch ends
		defer close(done)
		last := map[string]*ambientv1.Session{}
		for we := range recv {
			var ev *eventsv1.ResourceEvent
			switch we.GetType() {
			case ambientv1.EventType_EVENT_TYPE_CREATED:
				ev = events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, we.GetSession(), nil, time.Now())
			case ambientv1.EventType_EVENT_TYPE_UPDATED:
				ev = events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, we.GetSession(), last[we.GetSession().GetMetadata().GetId()], time.Now())
			case ambientv1.EventType_EVENT_TYPE_DELETED:
				old := last[we.GetResourceId()]
				if old == nil {
					continue
				}
				ev = events.NewEvent(eventsv1.EventType_EVENT_TYPE_DELETED, old, nil, time.Now())
			default:
				continue
			}
			if s := we.GetSession(); s != nil {
				last[s.GetMetadata().GetId()] = s
			}
			msg, err := events.NewMsg(ctx, events.SubjectPrefix, ev)
			if err != nil {
				t.Errorf("event msg: %v", err)
				return
			}
			// Retried like the real informer's: a test may stop NATS.
			for {
				_, err := w.js.PublishMsg(ctx, msg)
				if err == nil {
					w.noteRelayed(we)
				}
				if err == nil || ctx.Err() != nil {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}()
	// The watch sends no headers until the first event; give the server a
	// moment to register the watcher before sessions are created.
	testenv.Eventually(t, 5*time.Second, func() error {
		if w.api.Watchers() == 0 {
			return errors.New("watch not registered")
		}
		return nil
	})
}

// noteRelayed records that the relay published we's event.
func (w *world) noteRelayed(we *ambientv1.SessionWatchEvent) {
	w.relayMu.Lock()
	defer w.relayMu.Unlock()
	if s := we.GetSession(); s != nil {
		w.relayed[s.GetMetadata().GetId()] = events.VersionOf(s)
		return
	}
	delete(w.relayed, we.GetResourceId())
}

// service is one runner-manager process.
type service struct {
	t      testing.TB
	cmd    *exec.Cmd
	member string
	root   string
	out    *testenv.Buffer
	done   chan error

	metricsAddr string
}

// start runs the service binary with a test configuration plus extra env.
func (w *world) start(member string, ports int, extra ...string) *service {
	w.t.Helper()
	return w.startWith(member, ports, startOpts{}, extra...)
}

// startOpts change how the service process runs.
type startOpts struct {
	// cred runs the service as another user; root is its workspace root
	// (owned by that user), and the API token comes from tokenFile.
	cred      *syscall.Credential
	root      string
	tokenFile string
}

// startWith is start with o.
func (w *world) startWith(member string, ports int, o startOpts, extra ...string) *service {
	t := w.t
	t.Helper()
	// One block, so the metrics port never lands among the runner ports:
	// the metrics port first, then the runner ports.
	metricsPort, high := testenv.FreePortRange(t, 1+ports)
	low := metricsPort + 1
	metricsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(metricsPort))
	root := o.root
	if root == "" {
		root = t.TempDir()
	}
	token := "AMBIENT_API_TOKEN=" + w.api.Token()
	if o.tokenFile != "" {
		token = "AMBIENT_API_TOKEN_FILE=" + o.tokenFile
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + root,
		token, "AMBIENT_GRPC_SERVER_ADDR=" + w.api.GRPCAddr(),
		"NATS_URL=" + w.nats.ClientURL(), "MEMBER_ID=" + member, "MEMBER_TTL=1s", "GROUP_ACK_WAIT=5s",
		"LOCAL_WORKSPACE_ROOT=" + root, "LOCAL_RUNNER_COMMAND=" + demoRunner,
		"LOCAL_PORT_RANGE=" + strconv.Itoa(low) + "-" + strconv.Itoa(high), "LOCAL_MAX_SESSIONS=" + strconv.Itoa(ports),
		"LOCAL_HEALTH_INTERVAL=100ms", "LOCAL_HEALTH_ATTEMPTS=100", "LOCAL_STOP_GRACE=2s",
		"RUNNER_SWEEP_INTERVAL=300ms", "METRICS_ADDR=" + metricsAddr, "LOG_LEVEL=debug",
		"ANTHROPIC_API_KEY=k", "NOT_ALLOWED=x",
	}
	cmd := exec.CommandContext(context.Background(), serviceBin)
	cmd.Env = append(env, extra...)
	if o.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &service{t: t, cmd: cmd, member: member, root: root, out: out, done: make(chan error, 1), metricsAddr: metricsAddr}
	go func() { s.done <- cmd.Wait() }() // owned by the service; ends when the process exits
	t.Cleanup(func() {
		if err := cmd.Process.Signal(syscall.SIGTERM); err == nil {
			select {
			case err := <-s.done:
				_ = err // tests that care about the exit status read it themselves
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill() // best effort; the test has failed anyway
				t.Errorf("%s did not stop", member)
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", member, tail(out.String(), 80))
		}
		if d := os.Getenv("TEST_LOG_DIR"); d != "" {
			// Whole logs for reading timelines (a benchmark's t.Logf is
			// cut short); best effort, the test's result does not depend on it.
			_ = os.WriteFile(filepath.Join(d, member+".log"), []byte(out.String()), 0o600)
		}
		if os.Getenv("TEST_LOG") != "" {
			t.Logf("%s output:\n%s", member, out.String())
		}
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := httpGet("http://" + metricsAddr + "/readyz")
		if err != nil {
			return err
		}
		if resp != 200 {
			return fmt.Errorf("readyz %d", resp)
		}
		return nil
	})
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (w *world) create(name string) string {
	w.t.Helper()
	s, err := w.client.CreateSession(w.t.Context(), &ambientv1.CreateSessionRequest{Name: name, ProjectId: proto.String("proj"), Prompt: proto.String("hi")})
	if err != nil {
		w.t.Fatal(err)
	}
	return s.GetMetadata().GetId()
}

func (w *world) phases(ids []string) map[string]string {
	w.t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		s, err := w.client.GetSession(w.t.Context(), id)
		if err != nil {
			w.t.Fatal(err)
		}
		out[id] = s.GetPhase()
	}
	return out
}

func (w *world) waitAll(ids []string, phase string, d time.Duration) {
	w.t.Helper()
	testenv.Eventually(w.t, d, func() error {
		n := 0
		for _, p := range w.phases(ids) {
			if p != phase {
				n++
			}
		}
		if n > 0 {
			return fmt.Errorf("%d of %d sessions not %s", n, len(ids), phase)
		}
		return nil
	})
}

func (w *world) record(id string) (registry.Record, error) {
	return registry.Get(w.t.Context(), w.runners, id)
}

// runnerPIDs lists live demo runner processes whose working directory is
// under root (a service's workspace root).
func runnerPIDs(root string) []int {
	var out []int
	for _, pids := range runnersBySession(root) {
		out = append(out, pids...)
	}
	return out
}

// runnersBySession lists live demo runner processes whose working
// directory is under one of roots, by session id (the workspace's name).
func runnersBySession(roots ...string) map[string][]int {
	out := map[string][]int{}
	entries, _ := os.ReadDir("/proc") // always readable on Linux
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(cmdline), demoRunner+"\x00") {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || !slices.ContainsFunc(roots, func(root string) bool { return strings.HasPrefix(cwd, root+"/") }) {
			continue
		}
		if pidAlive(pid) {
			id := filepath.Base(cwd)
			out[id] = append(out[id], pid)
		}
	}
	return out
}

func pidAlive(pid int) bool {
	_, state, ok := procInfo(pid)
	return ok && state != "Z"
}

// waitQueueDrained waits until every session's current state in the API
// was published to the events stream and every event published so far
// was handled and acked (the consumer group's work queue holds none), with
// no session changing meanwhile: nothing the tests caused is left to
// handle.
//
// How many events that takes is not fixed, so it is not counted: the
// API's watch sends the object as it is when the event is sent, so a
// write that lands before the previous change's event is sent makes two
// watch events with the same object, and the informer publishes the
// second not at all: it is the very state its cache holds already (a
// stale watch event; the Nats-Msg-Id, the object's version plus the
// subject sequence it expects, only makes the stream drop a publish of
// the same change retried). Under load the echo of a status write often
// arrives that way (seen: 4 events where 5 were counted, and a 30 s wait
// for the fifth that never came).
func (w *world) waitQueueDrained() {
	w.t.Helper()
	// A hang guard, not a bound: each event's handling may wait on
	// runner calls and status writes on a loaded machine.
	testenv.Eventually(w.t, 30*time.Second, func() error {
		before, err := w.relayedVersions()
		if err != nil {
			return err
		}
		if err := w.queueDrained(); err != nil {
			return err
		}
		// A handler writes before it acks: a session unchanged across the
		// check had no write from an event handled meanwhile.
		after, err := w.relayedVersions()
		if err != nil {
			return err
		}
		if !maps.Equal(before, after) {
			return errors.New("sessions changed while the work queue was read")
		}
		return nil
	})
}

// relayedVersions returns the version of every session in the API, or an
// error naming one whose current state the relay has not published yet.
func (w *world) relayedVersions() (map[string]string, error) {
	sessions, err := w.client.ListSessions(w.t.Context())
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(sessions))
	w.relayMu.Lock()
	defer w.relayMu.Unlock()
	for _, s := range sessions {
		id, v := s.GetMetadata().GetId(), events.VersionOf(s)
		if w.relayed[id] != v {
			return nil, fmt.Errorf("session %s: version %s not published yet (last published %q)", id, v, w.relayed[id])
		}
		out[id] = v
	}
	return out, nil
}

// queueDrained returns nil when the work queue of runner-manager's
// consumer group holds no message and has taken in every event of the
// events stream.
func (w *world) queueDrained() error {
	st, err := w.js.Stream(w.t.Context(), events.StreamName+"-runner-manager")
	if err != nil {
		return err
	}
	info, err := st.Info(w.t.Context())
	if err != nil {
		return err
	}
	src, err := w.js.Stream(w.t.Context(), events.StreamName)
	if err != nil {
		return err
	}
	srcInfo, err := src.Info(w.t.Context())
	if err != nil {
		return err
	}
	if info.State.Msgs != 0 || info.State.LastSeq < srcInfo.State.Msgs {
		return fmt.Errorf("work queue: %d pending, %d of %d sourced", info.State.Msgs, info.State.LastSeq, srcInfo.State.Msgs)
	}
	return nil
}

// eventsPublished is the number of events the informer put on the events
// stream so far.
func (w *world) eventsPublished() uint64 {
	w.t.Helper()
	src, err := w.js.Stream(w.t.Context(), events.StreamName)
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := src.Info(w.t.Context())
	if err != nil {
		w.t.Fatal(err)
	}
	return info.State.Msgs
}

// createRunning creates n sessions named prefix00, prefix01, ..., waits
// until all are Running and returns their ids and, by replica, the ids
// whose claim record that replica owns.
func (w *world) createRunning(prefix string, n int) ([]string, map[string][]string) {
	w.t.Helper()
	var ids []string
	for i := range n {
		ids = append(ids, w.create(fmt.Sprintf("%s%02d", prefix, i)))
	}
	w.waitAll(ids, "Running", 30*time.Second)
	owners := map[string][]string{}
	for _, id := range ids {
		rec, err := w.record(id)
		if err != nil {
			w.t.Fatal(err)
		}
		owners[rec.Owner] = append(owners[rec.Owner], id)
	}
	return ids, owners
}

// checkRefusedAtStart fails the test unless session id, refused before
// any runner was made (bad input), is Failed with its three runner
// conditions False with reason and the ProcessSpawned message holding
// msg, and has neither a runner record (the claim is released right after
// the phase is written) nor a runner process under root.
func (w *world) checkRefusedAtStart(id, root, reason, msg string) {
	w.t.Helper()
	w.waitAll([]string{id}, "Failed", 20*time.Second)
	s, err := w.client.GetSession(w.t.Context(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	conds, err := session.ParseConditions(s.GetConditions())
	if err != nil {
		w.t.Fatal(err)
	}
	for _, typ := range []string{"ProcessSpawned", "HealthCheckPassed", "RunnerStarted"} {
		if c, ok := conds.Get(typ); !ok || c.Status != session.StatusFalse || c.Reason != reason {
			w.t.Errorf("%s: %s = %+v, want False %s", id, typ, c, reason)
		}
	}
	if c, _ := conds.Get("ProcessSpawned"); !strings.Contains(c.Message, msg) {
		w.t.Errorf("%s: ProcessSpawned message %q, want %q in it", id, c.Message, msg)
	}
	testenv.Eventually(w.t, 10*time.Second, func() error {
		if rec, err := w.record(id); err == nil {
			return fmt.Errorf("a runner record for the refused session: %+v", rec)
		}
		return nil
	})
	if got := runnersBySession(root)[id]; len(got) > 0 {
		w.t.Errorf("runner processes %v for the refused session %s", got, id)
	}
}
