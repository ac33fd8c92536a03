package app_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// errCrash is what the test hooks return to make an informer stop between
// publish and KV update.
var errCrash = errors.New("injected crash")

const (
	live   = events.StreamName
	bucket = bus.BucketObjects
)

func wantCounts(t *testing.T, evs []*eventsv1.ResourceEvent, want map[string]int) {
	t.Helper()
	got := counts(evs)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %d events, want %d (all: %v)", k, got[k], v, got)
		}
	}
	total := 0
	for _, v := range want {
		total += v
	}
	if len(evs) != total {
		t.Errorf("got %d events, want %d (all: %v)", len(evs), total, got)
	}
}

// Acceptance 1: everything that exists before start is ADDED exactly once,
// in the stream and in KV.
func TestInitialSync(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(1000, 100)
	h.start("a", nil)
	tl := h.runTally(events.StreamName, events.SubjectPrefix)
	evs := h.waitConverged(live, bucket, 60*time.Second)
	wantCounts(t, evs, map[string]int{"sessions/ADDED": 1000, "projects/ADDED": 100, "project_settings/ADDED": 100})
	for _, ev := range evs {
		if ev.GetEventId() != events.MsgID(ev) || ev.GetVersion() == "" {
			t.Fatalf("event %s: bad id or version %q", ev.GetEventId(), ev.GetVersion())
		}
	}
	// event-tally, consuming the stream as its own group, reports the same.
	testenv.Eventually(t, 60*time.Second, func() error {
		s := tl.Snapshot(false)
		want := map[string]int{"sessions": 1000, "projects": 100, "project_settings": 100}
		for res, n := range want {
			c := s.Resources[res]
			if c.Added != n || c.IDs != n || c.Modified != 0 || c.Deleted != 0 {
				return fmt.Errorf("tally %s = %+v, want %d added", res, c, n)
			}
		}
		return nil
	})
}

// Acceptance 2: objects created, updated and deleted while the initial list
// is in progress are published; nothing falls in the gap between list and
// watch, and a delete that shifts the pages hides nothing.
func TestNoGapDuringInitialList(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(1200, 1) // three pages of sessions
	ids := h.sessionIDs()
	var once sync.Once
	var hookErr error
	h.api.SetListHook(func(method string, page int32) {
		if method != ambientv1.SessionService_ListSessions_FullMethodName || page != 1 {
			return
		}
		once.Do(func() {
			ctx := context.Background()
			for i := range 3 {
				if _, err := h.c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("during-list-%d", i)}); err != nil {
					hookErr = err
				}
			}
			if _, err := h.c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: ids[10], Prompt: proto.String("changed during list")}); err != nil {
				hookErr = err
			}
			// Deleting from page 1 shifts page 2 by one: without a second
			// pass, one object would look deleted.
			if err := h.c.DeleteSession(ctx, ids[20]); err != nil {
				hookErr = err
			}
		})
	})
	h.start("a", nil)
	evs := h.waitConverged(live, bucket, 60*time.Second)
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	wantCounts(t, evs, map[string]int{"sessions/ADDED": 1200 - 1 + 3, "projects/ADDED": 1, "project_settings/ADDED": 1})
}

// TestRelistUnderUpdatesDeletesNothing: the API lists in database order,
// where an update moves a session to the end. Sessions updated while a
// relist reads page 1 make the first sessions of page 2 slip onto page 1,
// already read, so the pages the informer reads never show them. They
// exist: no DELETED may come of it (consumers would delete their custom
// resources and stop their runners), only the updates' MODIFIED.
func TestRelistUnderUpdatesDeletesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(1200, 1) // three pages of sessions
	h.start("a", nil)
	before := len(h.waitConverged(live, bucket, 60*time.Second))
	ids := h.sessionIDs()
	// Each of the first two reads of page 1 updates two sessions of it:
	// two slip at each page boundary, and a list that runs again after
	// updates slips two others.
	const perRead, reads = 2, 2
	var mu sync.Mutex
	updated := 0      // guarded by mu
	var hookErr error // guarded by mu
	h.api.SetListHook(func(method string, page int32) {
		if method != ambientv1.SessionService_ListSessions_FullMethodName || page != 1 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if updated == perRead*reads {
			return
		}
		for range perRead {
			if _, err := h.api.Sessions().UpdateSession(context.Background(), &ambientv1.UpdateSessionRequest{Id: ids[updated], Prompt: proto.String("changed during relist")}); err != nil {
				hookErr = err
			}
			updated++
		}
	})
	h.api.EndWatches() // the informer reconnects and relists
	evs := h.waitConverged(live, bucket, 60*time.Second)
	mu.Lock()
	n, err := updated, hookErr
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no relist read page 1 of the sessions")
	}
	wantCounts(t, evs[before:], map[string]int{"sessions/MODIFIED": n})
}

// Acceptance 3: after the watch streams end and changes happen while
// disconnected, exactly the matching events are published on reconnect.
func TestReconnectRelists(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(50, 5)
	inf := h.start("a", nil)
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	ids := h.sessionIDs()

	watches := []string{
		ambientv1.SessionService_WatchSessions_FullMethodName,
		ambientv1.ProjectService_WatchProjects_FullMethodName,
		ambientv1.ProjectSettingsService_WatchProjectSettings_FullMethodName,
	}
	for _, m := range watches {
		h.api.FailNext(m, 1_000_000, codes.Unavailable)
	}
	h.api.EndWatches()
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := h.api.Watchers(); n != 0 {
			return fmt.Errorf("%d watchers still open", n)
		}
		return nil
	})
	ctx := context.Background()
	for i := range 5 {
		h.createSession(fmt.Sprintf("offline-%d", i))
		h.updateSession(ids[i], "changed offline")
		h.deleteSession(ids[10+i])
	}
	if _, err := h.c.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "proj-0001", Description: proto.String("changed offline")}); err != nil {
		t.Fatal(err)
	}
	settings, err := h.c.ListProjectSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.c.DeleteProjectSettings(ctx, settings[0].GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	for _, m := range watches {
		h.api.FailNext(m, 0, codes.OK)
	}
	evs := h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs[before:], map[string]int{
		"sessions/ADDED": 5, "sessions/MODIFIED": 5, "sessions/DELETED": 5,
		"projects/MODIFIED": 1, "project_settings/DELETED": 1,
	})
	if got := inf.metric("informer_watch_reconnects_total"); got < 3 {
		t.Errorf("watch reconnects metric = %v, want >= 3", got)
	}
}

// Acceptance 4: a restart with KV intact and no API change publishes
// nothing; 10 changes while down give exactly 10 events.
func TestRestartPublishesOnlyChanges(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(30, 3)
	one := map[string]string{config.EnvWorkers: "1"} // strict FIFO: the sentinel is published last
	a := h.start("a", one)
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	// sentinel proves the restarted informer synced and published all it
	// had queued: with one worker, anything queued at sync goes first.
	sentinel := func(name string, at int) {
		t.Helper()
		h.createSession(name)
		h.waitStreamCount(live, uint64(at+1), 30*time.Second)
	}
	b := h.start("b", one)
	h.waitLeaderReady(b, 30*time.Second)
	sentinel("sentinel-1", before)
	evs := h.streamEvents(live)
	if got := evs[before]; got.GetObject().GetSession().GetName() != "sentinel-1" {
		t.Fatalf("first event after restart is %s %s, want the sentinel only", events.TypeName(got.GetType()), got.GetObjectId())
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}

	ids := h.sessionIDs()
	for i := range 4 {
		h.createSession(fmt.Sprintf("while-down-%d", i))
		h.updateSession(ids[i], "changed while down")
	}
	h.deleteSession(ids[10])
	h.deleteSession(ids[11])
	before++
	c := h.start("c", one)
	h.waitLeaderReady(c, 30*time.Second)
	sentinel("sentinel-2", before+10)
	evs = h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs[before:], map[string]int{"sessions/ADDED": 4 + 1, "sessions/MODIFIED": 4, "sessions/DELETED": 2})
}

// Acceptance 5: a crash between the ack and the KV write loses nothing and
// publishes nothing twice.
func TestCrashBetweenPublishAndKV(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(5, 1)
	target := h.sessionIDs()[2]
	crash := func(_ context.Context, ev *eventsv1.ResourceEvent) error {
		if ev.GetObjectId() == target && ev.GetType() == eventsv1.EventType_EVENT_TYPE_MODIFIED {
			return errCrash
		}
		return nil
	}
	a := h.start("a", nil, app.WithAfterPublish(crash))
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	h.updateSession(target, "crash on me")
	if err := a.wait(t, 30*time.Second); !errors.Is(err, errCrash) {
		t.Fatalf("Run = %v, want the injected crash", err)
	}
	h.waitStreamCount(live, uint64(before+1), 10*time.Second)
	kvOld := h.kvObjects(bucket)[events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, target)]
	if kvOld.GetSession().GetPrompt() == "crash on me" {
		t.Fatal("KV was updated although the informer crashed before the write")
	}

	// Same instance id: it takes its own unexpired lease back at once. It
	// reads the MODIFIED from the stream's tail (publish.Tail), so it writes
	// KV and publishes nothing: not even a duplicate for JetStream to drop.
	b := h.start("a", nil)
	evs := h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs[before:], map[string]int{"sessions/MODIFIED": 1})
	if got := b.metric("informer_events_published_total"); got != 0 {
		t.Fatalf("new leader published %v events, want 0", got)
	}
	if got := b.metric("informer_events_duplicates_total"); got != 0 {
		t.Fatalf("new leader published %v duplicates, want 0", got)
	}
}

// A leader that dies after an ADDED's ack but before its KV write leaves
// the object in the stream and not in KV; when the object is deleted before
// the next leader lists, that leader must still announce the delete (it
// reads the stream's tail over KV: publish.Tail). Found by the chaos run
// (issue 14): a runner outlived its session's delete.
func TestDeleteAfterLostKVWriteIsAnnounced(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(3, 1)
	crash := func(_ context.Context, ev *eventsv1.ResourceEvent) error {
		if ev.GetType() == eventsv1.EventType_EVENT_TYPE_ADDED && ev.GetObject().GetSession().GetName() == "short-lived" {
			return errCrash
		}
		return nil
	}
	a := h.start("a", nil, app.WithAfterPublish(crash))
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	s := h.createSession("short-lived")
	if err := a.wait(t, 30*time.Second); !errors.Is(err, errCrash) {
		t.Fatalf("Run = %v, want the injected crash", err)
	}
	h.waitStreamCount(live, uint64(before+1), 10*time.Second)
	h.deleteSession(s.GetMetadata().GetId())

	b := h.start("a", nil)
	evs := h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs[before:], map[string]int{"sessions/ADDED": 1, "sessions/DELETED": 1})
	if got := b.metric("informer_events_published_total", `type="DELETED"`); got != 1 {
		t.Fatalf("DELETED published by the new leader = %v, want 1", got)
	}
}

// Acceptance 6: of two replicas only the leader publishes; when it dies the
// standby takes over within about the lease TTL and every change made
// during the failover is published exactly once.
func TestFailover(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(20, 2)
	var crashWho atomic.Value // instance name that crashes on its next publish
	crashWho.Store("")
	hook := func(name string) app.Option {
		return app.WithAfterPublish(func(context.Context, *eventsv1.ResourceEvent) error {
			if crashWho.Load() == name {
				return errCrash
			}
			return nil
		})
	}
	short := map[string]string{config.EnvLeaseTTL: "1s"}
	a := h.start("a", short, hook("a"))
	b := h.start("b", short, hook("b"))
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	// A 1 s lease can change hands during start-up on a loaded machine (a
	// renewal that does not land within TTL/3 drops it, by design), so
	// the first events may come from either replica: each exactly once.
	testenv.Eventually(t, 30*time.Second, func() error {
		if a.isLeader() == b.isLeader() {
			return fmt.Errorf("leaders: a=%v b=%v, want exactly one", a.isLeader(), b.isLeader())
		}
		return nil
	})
	leader, standby := a, b
	if !a.isLeader() {
		leader, standby = b, a
	}
	if got := a.metric("informer_events_published_total") + b.metric("informer_events_published_total"); got != float64(before) {
		t.Fatalf("the replicas published %v events, want %d (each change once)", got, before)
	}

	ids := h.sessionIDs()
	crashWho.Store(leader.name)
	h.updateSession(ids[0], "the leader dies publishing this")
	if err := leader.wait(t, 30*time.Second); !errors.Is(err, errCrash) {
		t.Fatalf("leader Run = %v, want the injected crash", err)
	}
	died := time.Now()
	for i := range 3 {
		h.createSession(fmt.Sprintf("failover-%d", i))
		h.updateSession(ids[1+i], "changed during failover")
	}
	h.deleteSession(ids[5])
	h.deleteSession(ids[6])
	// Lease TTL 1s (the key expires at most 1s after the last renewal);
	// standbys retry every TTL/4; plus the metrics poll. That a crashed
	// leader's lease passes on at its expiry is package lease's test
	// (TestCrashedLeaderExpires); here the wait only guards against a
	// hang: a loaded machine (load average 15 on two cores) took 4.5 s,
	// so 30 s.
	testenv.Eventually(t, 30*time.Second, func() error {
		if !standby.isLeader() {
			return errors.New("standby has not taken over")
		}
		return nil
	})
	t.Logf("standby took over %v after the leader died (lease TTL 1s)", time.Since(died))
	evs := h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs[before:], map[string]int{"sessions/ADDED": 3, "sessions/MODIFIED": 1 + 3, "sessions/DELETED": 2})
}

// Acceptance 7: NATS restarts mid-run; the informer reconnects and nothing
// is lost.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(100, 2)
	h.start("a", nil)
	h.waitConverged(live, bucket, 30*time.Second)
	ids := h.sessionIDs()
	var wg sync.WaitGroup
	errc := make(chan error, 1) // first error of the writer
	wg.Add(1)
	// Owned by this test: writes 60 changes while NATS restarts, then exits.
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for i := range 30 {
			if _, err := h.c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: ids[i], Prompt: proto.String("during restart")}); err != nil {
				select {
				case errc <- err:
				default:
				}
				return
			}
			if _, err := h.c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("restart-%d", i)}); err != nil {
				select {
				case errc <- err:
				default:
				}
				return
			}
		}
	}()
	if err := h.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	evs := h.waitConverged(live, bucket, 60*time.Second)
	if got := counts(evs)["sessions/ADDED"]; got != 130 {
		t.Errorf("sessions ADDED = %d, want 130", got)
	}
}

// Acceptance 8: a slow downstream does not make the API drop watch events:
// the receive loop keeps reading while publishing is stuck.
func TestSlowDownstreamDropsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(10, 1)
	gate := make(chan struct{})
	var blocking atomic.Bool
	slow := app.WithAfterPublish(func(ctx context.Context, _ *eventsv1.ResourceEvent) error {
		if blocking.Load() {
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
		return nil
	})
	inf := h.start("a", nil, slow)
	h.waitConverged(live, bucket, 30*time.Second)
	blocking.Store(true)

	// 8 writers, 800 creates and 200 updates: far more than the server's
	// 256-event watch buffer, while no publish can finish.
	const writers, perWriter = 8, 100
	var wg sync.WaitGroup
	errc := make(chan error, writers) // one error per writer at most
	for w := range writers {
		wg.Add(1)
		// Owned by this test; exits after its batch.
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := range perWriter {
				s, err := h.c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("burst-%d-%d", w, i)})
				if err == nil && i%4 == 0 {
					_, err = h.c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: s.GetMetadata().GetId(), Prompt: proto.String("burst")})
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// Every event reached the informer's cache although nothing was stored.
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := inf.metric("informer_cache_objects", `resource="sessions"`); got != 10+writers*perWriter {
			return fmt.Errorf("cached sessions = %v, want %d", got, 10+writers*perWriter)
		}
		return nil
	})
	if d := h.api.Dropped(); d != 0 {
		t.Fatalf("API dropped %d watch events for the slow informer", d)
	}
	close(gate)
	evs := h.waitConverged(live, bucket, 60*time.Second)
	if got := counts(evs)["sessions/ADDED"]; got != 10+writers*perWriter {
		t.Errorf("sessions ADDED = %d, want %d", got, 10+writers*perWriter)
	}
}

// A shadow (canary) informer publishes into its own stream and bucket and
// never into the live stream, next to a live informer.
func TestShadowModeNeverTouchesLiveStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(20, 2)
	h.start("live", nil)
	h.start("shadow", map[string]string{
		config.EnvSubjectPrefix: events.ShadowSubjectPrefix,
		config.EnvEventsStream:  events.ShadowStreamName,
	})
	liveEvs := h.waitConverged(live, bucket, 30*time.Second)
	shadowEvs := h.waitConverged(events.ShadowStreamName, "ambient-objects-ambient-events-shadow", 30*time.Second)
	if len(liveEvs) != 24 || len(shadowEvs) != 24 {
		t.Fatalf("live %d events, shadow %d events, want 24 each", len(liveEvs), len(shadowEvs))
	}
	h.createSession("both-see-this")
	h.waitStreamCount(live, 25, 10*time.Second)
	h.waitStreamCount(events.ShadowStreamName, 25, 10*time.Second)
}

// Periodic resync publishes nothing while nothing changed, and heals what
// the watch missed (here: a watch that delivers nothing at all).
func TestResyncHealsMissedEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(20, 2)
	inf := h.start("a", map[string]string{config.EnvResyncPeriod: "300ms"})
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	relists := inf.metric("informer_relists_total")
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := inf.metric("informer_relists_total"); got < relists+6 {
			return fmt.Errorf("relists %v, want two more per resource", got)
		}
		return nil
	})
	if n, err := h.streamCount(live); err != nil || n != uint64(before) {
		t.Fatalf("resyncs without changes published: stream has %d, want %d (%v)", n, before, err)
	}
	// The watch stalls: no event reaches the informer any more.
	h.api.SetSendDelay(time.Hour)
	ids := h.sessionIDs()
	h.createSession("missed-by-watch")
	h.updateSession(ids[0], "missed by watch")
	h.deleteSession(ids[1])
	evs := h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs[before:], map[string]int{"sessions/ADDED": 1, "sessions/MODIFIED": 1, "sessions/DELETED": 1})
	h.api.SetSendDelay(0)
}
