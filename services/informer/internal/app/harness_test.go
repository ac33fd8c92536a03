package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/tally"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(testenv.NATSServerLeaks(),
		// Process-wide OpenTelemetry and gRPC internals live for the process.
		goleak.IgnoreAnyFunction("go.opentelemetry.io/otel/sdk/trace.(*batchSpanProcessor).processQueue"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)...)
}

// env is the base environment of a test informer; tests override entries.
func (h *harness) env(instance string) map[string]string {
	return map[string]string{
		apiclient.EnvAPIToken:    testenv.APIToken,
		apiclient.EnvGRPCAddr:    h.api.GRPCAddr(),
		bus.EnvNATSURL:           h.nats.ClientURL(),
		service.EnvMetricsAddr:   "127.0.0.1:0",
		config.EnvLeaseTTL:       "5s", // TestFailover uses 1s
		config.EnvResyncPeriod:   "0",
		config.EnvBackoffInitial: "20ms",
		config.EnvBackoffMax:     "200ms",
		config.EnvInstanceID:     instance,
		service.EnvLogLevel:      "info",
	}
}

// harness is one test's API, NATS and client handles.
type harness struct {
	t    *testing.T
	api  *memapi.Server
	c    *apiclient.Client
	nats *natsserver.Server
	js   jetstream.JetStream
}

func newHarness(t *testing.T, apiOpts ...memapi.Option) *harness {
	t.Helper()
	return newHarnessOn(t, testenv.NATS(t), apiOpts...)
}

// newHarnessOn is newHarness on the NATS server srv (one started with
// options of its own, e.g. a storage limit).
func newHarnessOn(t *testing.T, srv *natsserver.Server, apiOpts ...memapi.Option) *harness {
	t.Helper()
	h := &harness{t: t, api: testenv.API(t, apiOpts...), nats: srv}
	h.c = testenv.APIClient(t, h.api)
	_, h.js = testenv.JetStream(t, h.nats)
	return h
}

// informer is one running app.Run.
type informer struct {
	name   string
	cancel context.CancelFunc
	done   chan error // Run's result, buffered 1
	addrMu sync.Mutex
	addr   string // guarded by addrMu; HTTP address
	once   sync.Once
	err    error
}

// testLogger logs warnings (INFORMER_TEST_LOG=debug: everything) to the
// test's output, or to stderr when t is nil (benchmarks).
func testLogger(t *testing.T, name string) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("INFORMER_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	var w io.Writer = os.Stderr
	if t != nil {
		w = t.Output()
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With(slog.String("test_instance", name))
}

// start runs an informer with the base env plus overrides.
func (h *harness) start(name string, overrides map[string]string, opts ...app.Option) *informer {
	h.t.Helper()
	env := h.env(name)
	for k, v := range overrides {
		env[k] = v
	}
	cfg, err := config.Load(envconfig.Map(env))
	if err != nil {
		h.t.Fatalf("config: %v", err)
	}
	// Replicas come back within 0.1 s of a NATS restart, well inside the
	// lease TTL (production: 5 s cap against a 10 s TTL).
	cfg.NATS.ReconnectMin, cfg.NATS.ReconnectMax = 20*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	inf := &informer{name: name, cancel: cancel, done: make(chan error, 1)}
	opts = append(opts, app.WithListening(func(addr string) {
		inf.addrMu.Lock()
		inf.addr = addr
		inf.addrMu.Unlock()
	}), app.WithHealthyAfter(time.Second))
	// Owned by the test: stop (also in Cleanup) cancels and waits.
	go func() { inf.done <- app.Run(ctx, cfg, testLogger(h.t, name), opts...) }()
	h.t.Cleanup(func() {
		if err := inf.stop(); err != nil && !errors.Is(err, errCrash) {
			h.t.Errorf("informer %s: %v", name, err)
		}
	})
	return inf
}

// stop cancels the informer and returns Run's result (once).
func (inf *informer) stop() error {
	inf.once.Do(func() {
		inf.cancel()
		select {
		case inf.err = <-inf.done:
		case <-time.After(20 * time.Second):
			inf.err = errors.New("informer did not stop within 20s")
		}
	})
	return inf.err
}

// wait returns Run's result once it returned by itself.
func (inf *informer) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	var err error
	inf.once.Do(func() {
		select {
		case inf.err = <-inf.done:
		case <-time.After(timeout):
			t.Fatalf("informer %s did not stop within %v", inf.name, timeout)
		}
		inf.cancel()
	})
	err = inf.err
	return err
}

func (inf *informer) httpGet(path string) (int, string, error) {
	inf.addrMu.Lock()
	addr := inf.addr
	inf.addrMu.Unlock()
	if addr == "" {
		return 0, "", errors.New("not listening yet")
	}
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// ready waits until /readyz says ready and the replica leads.
func (h *harness) waitLeaderReady(inf *informer, timeout time.Duration) {
	h.t.Helper()
	testenv.Eventually(h.t, timeout, func() error {
		if !inf.isLeader() {
			return fmt.Errorf("%s is not leader", inf.name)
		}
		code, body, err := inf.httpGet("/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})
}

// metric returns the sum of the /metrics samples named name whose labels
// contain every filter (e.g. `resource="sessions"`); -1 when unreachable.
func (inf *informer) metric(name string, filters ...string) float64 {
	_, body, err := inf.httpGet("/metrics")
	if err != nil {
		return -1
	}
	total, _ := testenv.MetricSum(body, name, filters...)
	return total
}

func (inf *informer) isLeader() bool { return inf.metric("informer_lease_leader") == 1 }

// streamEvents returns every event in stream in order.
func (h *harness) streamEvents(stream string) []*eventsv1.ResourceEvent {
	h.t.Helper()
	evs, err := h.tryStreamEvents(stream)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

func (h *harness) tryStreamEvents(stream string) ([]*eventsv1.ResourceEvent, error) {
	raw, err := h.tryRawEvents(stream)
	if err != nil {
		return nil, err
	}
	out := make([]*eventsv1.ResourceEvent, len(raw))
	for i, r := range raw {
		out[i] = r.ev
	}
	return out, nil
}

// rawEvent is one stream message: the decoded event (a reference event too:
// no object) and what its sender left out.
type rawEvent struct {
	ev      *eventsv1.ResourceEvent
	omitted events.Omission
}

// rawEvents returns every message in stream in order.
func (h *harness) rawEvents(stream string) []rawEvent {
	h.t.Helper()
	evs, err := h.tryRawEvents(stream)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

func (h *harness) tryRawEvents(stream string) ([]rawEvent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	n := int(info.State.Msgs)
	out := make([]rawEvent, 0, n)
	if n == 0 {
		return out, nil
	}
	// An ephemeral consumer deleted right after: tests poll this many times
	// a second, and ordered consumers would linger for 5 minutes each.
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute})
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	defer func() { _ = s.DeleteConsumer(context.Background(), c.CachedInfo().Name) }() // best effort: it expires anyway
	for len(out) < n {
		batch, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			_, ev, err := events.Decode(ctx, m.Headers(), m.Data())
			if err != nil && !errors.Is(err, events.ErrObjectTooLarge) {
				return nil, fmt.Errorf("decode: %w", err)
			}
			out = append(out, rawEvent{ev: ev, omitted: events.Omitted(m.Headers())})
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if got == 0 {
			return nil, fmt.Errorf("fetched %d of %d messages", len(out), n)
		}
	}
	return out, nil
}

// kvKeyCount returns the number of live object keys in bucket.
func (h *harness) kvKeyCount(bucket string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, bucket)
	if err != nil {
		return 0, err
	}
	l, err := kv.ListKeys(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for k := range l.Keys() {
		if _, _, err := events.ParseObjectKey(k); err == nil {
			n++ // not the owed floor (publish.OwedKey)
		}
	}
	return n, nil
}

// streamCount returns the number of messages in stream.
func (h *harness) streamCount(stream string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// waitStreamCount waits until stream holds exactly n messages.
func (h *harness) waitStreamCount(stream string, n uint64, timeout time.Duration) {
	h.t.Helper()
	testenv.Eventually(h.t, timeout, func() error {
		got, err := h.streamCount(stream)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("stream %s has %d messages, want %d", stream, got, n)
		}
		return nil
	})
}

// kvObjects returns the objects bucket's content: key -> object.
func (h *harness) kvObjects(bucket string) map[string]*eventsv1.Object {
	h.t.Helper()
	out, err := h.tryKVObjects(bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) tryKVObjects(bucket string) (map[string]*eventsv1.Object, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch kv: %w", err)
	}
	defer func() { _ = w.Stop() }() // best effort in a test helper
	out := map[string]*eventsv1.Object{}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if _, _, err := events.ParseObjectKey(e.Key()); err != nil {
			continue // the owed floor (publish.OwedKey)
		}
		o := &eventsv1.Object{}
		if err := proto.Unmarshal(e.Value(), o); err != nil {
			return nil, fmt.Errorf("kv %s: %w", e.Key(), err)
		}
		o.EventSeq = 0 // the cache's position in the stream, not state
		out[e.Key()] = o
	}
	return out, nil
}

// apiState returns every object the API holds, by KV key.
func (h *harness) apiState() map[string]*eventsv1.Object {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]*eventsv1.Object{}
	// In-process lists: cheaper than gRPC, same data.
	ss, err := apiclient.ListAll(ctx, 500, func(ctx context.Context, page, size int32) (*ambientv1.ListSessionsResponse, error) {
		return h.api.Sessions().ListSessions(ctx, &ambientv1.ListSessionsRequest{Page: page, Size: size})
	})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, o := range ss {
		out[events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, o.GetMetadata().GetId())] = events.Wrap(o)
	}
	ps, err := apiclient.ListAll(ctx, 500, func(ctx context.Context, page, size int32) (*ambientv1.ListProjectsResponse, error) {
		return h.api.Projects().ListProjects(ctx, &ambientv1.ListProjectsRequest{Page: page, Size: size})
	})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, o := range ps {
		out[events.ObjectKey(eventsv1.Resource_RESOURCE_PROJECTS, o.GetMetadata().GetId())] = events.Wrap(o)
	}
	st, err := apiclient.ListAll(ctx, 500, func(ctx context.Context, page, size int32) (*ambientv1.ListProjectSettingsResponse, error) {
		return h.api.ProjectSettings().ListProjectSettings(ctx, &ambientv1.ListProjectSettingsRequest{Page: page, Size: size})
	})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, o := range st {
		out[events.ObjectKey(eventsv1.Resource_RESOURCE_PROJECT_SETTINGS, o.GetMetadata().GetId())] = events.Wrap(o)
	}
	return out
}

// replay folds events into the state a consumer would hold, and fails on
// events a correct informer never sends (ADDED of a present object,
// MODIFIED/DELETED of an absent one, MODIFIED whose old object is not the
// previous state, DELETED without the last known object). Events trimmed to
// the payload limit are checked for what they carry: a MODIFIED without
// old_object, a reference event (the state is then unknown: nil), a DELETED
// whose object lost fields but kept its metadata.
func replay(evs []*eventsv1.ResourceEvent) (map[string]*eventsv1.Object, error) {
	state := map[string]*eventsv1.Object{}
	for i, ev := range evs {
		key := events.ObjectKey(ev.GetResource(), ev.GetObjectId())
		cur, ok := state[key]
		switch ev.GetType() {
		case eventsv1.EventType_EVENT_TYPE_ADDED:
			if ok {
				return nil, fmt.Errorf("event %d: ADDED %s already present", i, key)
			}
			state[key] = ev.GetObject()
		case eventsv1.EventType_EVENT_TYPE_MODIFIED:
			if !ok {
				return nil, fmt.Errorf("event %d: MODIFIED %s not present", i, key)
			}
			if old := ev.GetOldObject(); old != nil && !proto.Equal(cur, old) {
				return nil, fmt.Errorf("event %d: MODIFIED %s old object differs from the previous state", i, key)
			}
			state[key] = ev.GetObject()
		case eventsv1.EventType_EVENT_TYPE_DELETED:
			if !ok {
				return nil, fmt.Errorf("event %d: DELETED %s not present", i, key)
			}
			if cur != nil && !proto.Equal(cur, ev.GetObject()) && !proto.Equal(metadataOf(cur), metadataOf(ev.GetObject())) {
				return nil, fmt.Errorf("event %d: DELETED %s does not carry the last known object", i, key)
			}
			delete(state, key)
		}
	}
	return state, nil
}

// metadataOf returns the metadata of the object in o.
func metadataOf(o *eventsv1.Object) proto.Message {
	if m := events.Message(o); m != nil {
		if wm, ok := m.(interface {
			GetMetadata() *ambientv1.ObjectReference
		}); ok {
			return wm.GetMetadata()
		}
	}
	return nil
}

// sameState compares two key -> object maps.
func sameState(got, want map[string]*eventsv1.Object) error {
	var missing, extra, differ []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case !proto.Equal(g, w):
			differ = append(differ, k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra)+len(differ) == 0 {
		return nil
	}
	sort.Strings(missing)
	sort.Strings(extra)
	sort.Strings(differ)
	clip := func(s []string) []string { return s[:min(len(s), 5)] }
	return fmt.Errorf("missing %d %v, extra %d %v, differ %d %v", len(missing), clip(missing), len(extra), clip(extra), len(differ), clip(differ))
}

// waitConverged waits until the stream, replayed, and the KV bucket both
// equal the API's state.
func (h *harness) waitConverged(stream, bucket string, timeout time.Duration) []*eventsv1.ResourceEvent {
	h.t.Helper()
	start := time.Now()
	defer func() { h.t.Logf("converged in %v", time.Since(start)) }()
	// Cheap first: wait until KV holds as many objects as the API and the
	// stream stopped growing; a full comparison per poll would starve the
	// informer on a loaded machine.
	var last uint64
	testenv.Eventually(h.t, timeout, func() error {
		ss, ps, st := h.api.Len()
		keys, err := h.kvKeyCount(bucket)
		if err != nil {
			return err
		}
		if keys != ss+ps+st {
			return fmt.Errorf("kv has %d keys, api %d objects", keys, ss+ps+st)
		}
		n, err := h.streamCount(stream)
		if err != nil {
			return err
		}
		if n != last {
			last = n
			return fmt.Errorf("stream %s still growing (%d)", stream, n)
		}
		return nil
	})
	var evs []*eventsv1.ResourceEvent
	testenv.Eventually(h.t, timeout, func() error {
		want := h.apiState()
		var err error
		if evs, err = h.tryStreamEvents(stream); err != nil {
			return err
		}
		got, err := replay(evs)
		if err != nil {
			return err
		}
		if err := sameState(got, want); err != nil {
			return fmt.Errorf("stream: %w", err)
		}
		kv, err := h.tryKVObjects(bucket)
		if err != nil {
			return err
		}
		if err := sameState(kv, want); err != nil {
			return fmt.Errorf("kv: %w", err)
		}
		return nil
	})
	return evs
}

// counts tallies events by resource token and type name.
func counts(evs []*eventsv1.ResourceEvent) map[string]int {
	out := map[string]int{}
	for _, ev := range evs {
		out[events.ResourceToken(ev.GetResource())+"/"+events.TypeName(ev.GetType())]++
	}
	return out
}

// runTally runs event-tally's counting as a consumer group member on
// stream until the test ends.
func (h *harness) runTally(stream, prefix string) *tally.Tally {
	h.t.Helper()
	tl := tally.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1) // group.Run's result
	cfg := group.Config{Stream: stream, SubjectPrefix: prefix, Group: "event-tally", Member: "tally-0"}
	// Owned by the test: cancelled and awaited in Cleanup.
	go func() {
		// The informer creates the stream; join once it exists.
		err := testenv.Poll(30*time.Second, func() error {
			_, err := h.js.Stream(ctx, stream)
			return err
		})
		if err == nil {
			err = group.Run(ctx, h.js, cfg, tl.Handle, testLogger(h.t, "tally"))
		}
		done <- err
	}()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("tally group: %v", err)
		}
	})
	return tl
}

// seed creates n sessions, p projects and p project settings.
func (h *harness) seed(n, p int) {
	h.t.Helper()
	start := time.Now()
	defer func() { h.t.Logf("seeded in %v", time.Since(start)) }()
	ctx := context.Background()
	// In-process calls: seeding over gRPC would dominate the test time.
	for i := range p {
		name := fmt.Sprintf("proj-%04d", i)
		if _, err := h.api.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: name}); err != nil {
			h.t.Fatal(err)
		}
		if _, err := h.api.ProjectSettings().CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: name, GroupAccess: proto.String(`[{"group":"devs","role":"edit"}]`)}); err != nil {
			h.t.Fatal(err)
		}
	}
	for i := range n {
		if _, err := h.api.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("seed-%05d", i), ProjectId: proto.String("proj-0000"), Prompt: proto.String("hello")}); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) createSession(name string) *ambientv1.Session {
	h.t.Helper()
	s, err := h.c.CreateSession(context.Background(), &ambientv1.CreateSessionRequest{Name: name, ProjectId: proto.String("proj-0000"), Prompt: proto.String("hello")})
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) updateSession(id, prompt string) {
	h.t.Helper()
	if _, err := h.c.UpdateSession(context.Background(), &ambientv1.UpdateSessionRequest{Id: id, Prompt: proto.String(prompt)}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) deleteSession(id string) {
	h.t.Helper()
	if err := h.c.DeleteSession(context.Background(), id); err != nil {
		h.t.Fatal(err)
	}
}

// sessionIDs lists the API's session ids in list order: creation order
// until an update moves a session to the end (database order).
func (h *harness) sessionIDs() []string {
	h.t.Helper()
	ss, err := h.c.ListSessions(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.GetMetadata().GetId()
	}
	return ids
}
