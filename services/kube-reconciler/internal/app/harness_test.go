package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// kube is the package's kube-apiserver with the chart's (the operator's)
// AgenticSession CRD; kube.Env(t) skips a test when the binaries are not built.
var kube kubetest.Shared

func TestMain(m *testing.M) { os.Exit(kube.Main(m)) }

const updateStatusMethod = "/ambient.v1.SessionService/UpdateSessionStatus"

// reconcilerUser is the identity every harness reconciler runs as: bound to
// exactly the chart's ClusterRole (see TestMain's setup in restricted).
const reconcilerUser = "system:serviceaccount:ambient-code:kube-reconciler"

var (
	rolesMu sync.Mutex
	roles   = map[*kubetest.Env]error{} // guarded by rolesMu: API servers whose reconciler role is bound
	seq     atomic.Int64
)

// restricted returns a client config for reconcilerUser on env, bound once
// per API server to the chart's ClusterRole rules.
func restricted(t testing.TB, env *kubetest.Env) *rest.Config {
	t.Helper()
	rolesMu.Lock()
	err, done := roles[env]
	if !done {
		err = env.BindReconcilerRole(context.Background(), "ambient-kube-reconciler", reconcilerUser)
		roles[env] = err
	}
	rolesMu.Unlock()
	if err != nil {
		t.Fatalf("bind reconciler role: %v", err)
	}
	return env.User(t, reconcilerUser)
}

// unique returns a lower-case name unique in this test process (namespaces
// are shared by all tests on the one API server).
func unique(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

type harness struct {
	// instance is CONTROL_PLANE_INSTANCE of this harness's replicas: tests
	// share the API server, and each harness's resync must see only its own
	// objects, as installations sharing a cluster do.
	instance string
	env      *kubetest.Env
	nats     *natsserver.Server
	js       jetstream.JetStream
	api      *memapi.Server
	cl       *apiclient.Client
	// creator is a user's client: the API makes a session's creator
	// (created_by_user_id, spec.userContext) the user who created it, and
	// the service token (cl) is none.
	creator *apiclient.Client
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	stats   map[string]*group.Stats
	feed    feedCounts // the three feeds' counts together
}

// newHarness runs on the package's kube-apiserver.
func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessOn(t, kube.Env(t))
}

// newHarnessOn runs on env: tests that change the AgenticSession CRD start
// an API server of their own (kubetest.StartT).
// The user whose client is harness.creator.
const (
	creatorName  = "u-1"
	creatorToken = "creator-token-0123456789"
)

func newHarnessOn(t testing.TB, env *kubetest.Env) *harness {
	t.Helper()
	ctx := t.Context()
	api := testenv.API(t, memapi.WithUsers([]memapi.User{{Token: creatorToken, Name: creatorName, Projects: []string{memapi.AllProjects}}}))
	h := &harness{instance: unique("inst"), env: env, nats: testenv.NATS(t), api: api, stats: map[string]*group.Stats{}}
	_, h.js = testenv.JetStream(t, h.nats)
	h.cl = testenv.APIClient(t, h.api)
	h.creator = testenv.APIClient(t, h.api, func(c *apiclient.Config) { c.Token = creatorToken })
	if _, err := bus.EnsureEventsStream(ctx, h.js, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	kv, err := bus.EnsureKV(ctx, h.js, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	if h.kube, err = kubernetes.NewForConfig(env.Config); err != nil {
		t.Fatal(err)
	}
	if h.dyn, err = dynamic.NewForConfig(env.Config); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// The feeders are owned by the harness: cancelled and awaited in cleanup.
	wg.Go(func() {
		feed(fctx, t, h.js, kv, &h.feed, func(ctx context.Context) (grpc.ServerStreamingClient[ambientv1.SessionWatchEvent], error) {
			return h.cl.WatchSessions(ctx)
		}, h.cl.ListSessions, (*ambientv1.SessionWatchEvent).GetSession)
	})
	wg.Go(func() {
		feed(fctx, t, h.js, kv, &h.feed, func(ctx context.Context) (grpc.ServerStreamingClient[ambientv1.ProjectWatchEvent], error) {
			return h.cl.WatchProjects(ctx)
		}, h.cl.ListProjects, (*ambientv1.ProjectWatchEvent).GetProject)
	})
	wg.Go(func() {
		feed(fctx, t, h.js, kv, &h.feed, func(ctx context.Context) (grpc.ServerStreamingClient[ambientv1.ProjectSettingsWatchEvent], error) {
			return h.cl.WatchProjectSettings(ctx)
		}, h.cl.ListProjectSettings, (*ambientv1.ProjectSettingsWatchEvent).GetProjectSettings)
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	// The feeders' watches must be open before the test mutates anything.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := h.api.Watchers(); n < 3 {
			return fmt.Errorf("%d watchers", n)
		}
		return nil
	})
	return h
}

// replica is one running kube-reconciler.
type replica struct {
	stop  func()
	crash func() // closes its NATS connection without leaving the group, then stops it
	addr  net.Addr
	stats *group.Stats
	logs  *kubetest.Logs // everything it logged
}

// start runs a kube-reconciler as member, with restCfg (nil: the chart-bound
// restricted user) and extra env.
func (h *harness) start(t testing.TB, member string, restCfg *rest.Config, env map[string]string) *replica {
	t.Helper()
	return h.startTuned(t, member, restCfg, env, nil)
}

// startTuned is start with tune (when not nil) applied to the loaded
// config: for what no environment variable sets, such as the group's retry
// Backoff.
func (h *harness) startTuned(t testing.TB, member string, restCfg *rest.Config, env map[string]string, tune func(cfg *config.Config)) *replica {
	t.Helper()
	if restCfg == nil {
		restCfg = restricted(t, h.env)
	}
	vars := map[string]string{
		apiclient.EnvAPIToken:  testenv.APIToken,
		apiclient.EnvGRPCAddr:  h.api.GRPCAddr(),
		bus.EnvNATSURL:         h.nats.ClientURL(),
		service.EnvMetricsAddr: "127.0.0.1:0",
		group.EnvMemberID:      member,
		group.EnvPartitions:    "4",
		config.EnvStatusResync: "1m",
		service.EnvLogLevel:    "debug",
		config.EnvInstance:     h.instance,
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(envconfig.Map(vars))
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(&cfg)
	}
	logs, log := kubetest.NewLogs()
	log = log.With("member", member)
	r := &replica{stats: &group.Stats{}, logs: logs}
	conns := make(chan *nats.Conn, 1)   // one send
	listening := make(chan net.Addr, 1) // one send
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1) // one send
	// Owned by the replica: stop cancels it and waits.
	go func() {
		done <- Run(ctx, cfg, log, WithRESTConfig(restCfg), WithStats(r.stats), WithListening(func(a net.Addr) { listening <- a }),
			WithConnected(func(nc *nats.Conn) { conns <- nc }))
	}()
	var (
		once    sync.Once
		crashed atomic.Bool
	)
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) && !crashed.Load() {
					t.Errorf("replica %s: %v", member, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("replica %s did not stop", member)
			}
		})
	}
	t.Cleanup(r.stop)
	r.crash = func() {
		crashed.Store(true)
		select {
		case nc := <-conns:
			nc.Close() // no drain, no group leave: the member just disappears
		default:
			t.Errorf("replica %s has no connection", member)
		}
		r.stop()
	}
	select {
	case r.addr = <-listening:
	case err := <-done:
		t.Fatalf("replica %s: %v", member, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s did not listen", member)
	}
	return r
}

// quiesce waits until the API, the feed and the replicas are all done with
// every change made so far: the API has no watch event left to send, the
// feed received every one sent and has them (and what it listed) acked in
// JetStream, and every event in the stream was handled by the replicas. The
// API's counts are read first and last and must not move in between, so a
// write the replicas made while it looked (a status write-back) is waited
// for too.
//
// A change the replicas will make later on their own (a write-back caused by
// a Kubernetes watch event, a resync) is not in any of these counts: a test
// that needs one waits for it by what it writes.
func (h *harness) quiesce(t testing.TB, replicas ...*replica) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() error {
		sent := h.api.WatchSent()
		if n := h.api.WatchPending(); n > 0 {
			return fmt.Errorf("the API has %d watch events to send", n)
		}
		if n := h.feed.received.Load(); n != sent {
			return fmt.Errorf("the feed received %d of the %d watch events sent", n, sent)
		}
		if n := h.feed.unsettled.Load(); n > 0 {
			return fmt.Errorf("%d of the feed's events are not in JetStream yet", n)
		}
		s, err := h.js.Stream(t.Context(), events.StreamName)
		if err != nil {
			return err
		}
		info, err := s.Info(t.Context())
		if err != nil {
			return err
		}
		var done uint64
		for _, r := range replicas {
			snap := r.stats.Snapshot()
			done += snap.Acked + snap.DeadLettered
		}
		if done < info.State.Msgs {
			return fmt.Errorf("%d of %d events handled", done, info.State.Msgs)
		}
		if h.api.WatchPending() > 0 || h.api.WatchSent() != sent {
			return errors.New("the API changed while quiesce looked")
		}
		return nil
	})
}

func ptr[T any](v T) *T { return &v }

func lower(s string) string { return strings.ToLower(s) }
