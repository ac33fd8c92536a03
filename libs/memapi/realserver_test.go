package memapi_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/memapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The tests in this file pin facts of the real ambient-api-server
// (../shared/design/UPSTREAM-BEHAVIOUR.md) that the rest of memapi's tests
// leave loose: each fails when memapi drifts from the real server in a way
// our own clients would not notice.

// TestWatchSendsNoSnapshotNorHeartbeat: a new watch stream says nothing
// about the objects that exist, and nothing while nothing changes; the first
// event is the first change. (A client that relied on a snapshot or on a
// heartbeat would work against memapi and not against the real server.)
func TestWatchSendsNoSnapshotNorHeartbeat(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	for _, name := range []string{"old-1", "old-2", "old-3"} {
		if _, err := c.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	w := watchProjects(t, srv, c)
	got := make(chan string, 1) // the first event's project; the receiver never blocks
	go func() {
		ev, err := w.Recv()
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- ev.GetProject().GetName()
	}()
	// Negative check: a heartbeat or a late snapshot would arrive within
	// this window. Two seconds covers the one-second keep-alives that
	// streaming servers commonly send.
	select {
	case name := <-got:
		t.Fatalf("idle watch received %q before any change", name)
	case <-time.After(2 * time.Second):
	}
	if n := srv.WatchSent(); n != 0 {
		t.Fatalf("server sent %d events on an idle watch", n)
	}
	if _, err := c.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: "marker"}); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-got:
		if name != "marker" {
			t.Fatalf("first event is %q, want the change made after the watch opened (marker)", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event after a change")
	}
}

// TestWatchBufferIs256: the real server buffers 256 events per watcher and
// drops the rest silently. With every send held, 300 changes leave 256
// queued, plus the one event the stream's sender may already have taken and
// holds; the others are dropped.
func TestWatchBufferIs256(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	watchProjects(t, srv, c)
	srv.SetSendDelay(time.Hour)
	const n = 300
	for i := range n {
		if _, err := srv.Projects().CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: fmt.Sprintf("p-%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	kept, dropped := srv.WatchPending(), srv.Dropped()
	if kept+dropped != n {
		t.Fatalf("kept %d + dropped %d != %d changes", kept, dropped, n)
	}
	if kept != 256 && kept != 257 {
		t.Fatalf("watcher kept %d events (dropped %d), want 256 buffered (+1 held by the sender)", kept, dropped)
	}
}

// TestWatchBufferIsSharedByResources: the real server has one buffer per
// watch stream, fed by every resource; a stream skips the other resources'
// changes only as it takes them off (rh-trex's EventBroker). A session
// watcher held on a send therefore loses a session change once a burst of
// project changes has filled its buffer, and the next event it sends is the
// change after.
func TestWatchBufferIsSharedByResources(t *testing.T) {
	t.Parallel()
	const buffer = 16
	srv := start(t, memapi.WithWatchBuffer(buffer))
	c := client(t, srv, testToken)
	w, err := c.WatchSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	ctx := t.Context()
	create := func(name string) {
		t.Helper()
		if _, err := srv.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	srv.SetSendDelay(time.Hour)
	create("first")
	for i := range buffer + 1 {
		if _, err := srv.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: fmt.Sprintf("p-%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	create("lost")
	if srv.Dropped() < 2 {
		t.Fatalf("dropped %d changes; the project changes should have filled the session watcher's buffer", srv.Dropped())
	}
	srv.SetSendDelay(0)
	eventually(t, 10*time.Second, func() error {
		if n := srv.WatchPending(); n != 0 {
			return fmt.Errorf("%d changes still queued", n)
		}
		return nil
	})
	create("after")
	var names []string
	for range 2 {
		ev, err := recv(t, w, 5*time.Second)
		if err != nil {
			t.Fatalf("after %v: %v", names, err)
		}
		names = append(names, ev.GetSession().GetName())
	}
	if !slices.Equal(names, []string{"first", "after"}) {
		t.Fatalf("session watcher got %v, want [first after]: the session change made while project changes filled its buffer must be lost", names)
	}
}

// TestReflectionListsTheServices: the real server serves gRPC reflection on
// its gRPC port (grpcurl and similar tools depend on it).
func TestReflectionListsTheServices(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	st, err := reflectionpb.NewServerReflectionClient(c.Conn()).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"ambient.v1.SessionService", "ambient.v1.ProjectService", "ambient.v1.ProjectSettingsService", "ambient.v1.UserService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}

// TestAcceptsWhatTheRealServerAccepts: the real server answers 201 to data
// every consumer must then cope with (a project that does not exist, a name
// like a path, a negative timeout, JSON fields that are not JSON, projects
// named after Kubernetes' own namespaces) and stores it as sent. memapi must
// too, over REST and gRPC, or the consumers' handling of it goes untested.
func TestAcceptsWhatTheRealServerAccepts(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	gc := client(t, srv, testToken)
	const body = `{"name":"../../etc","project_id":"nowhere","timeout":-5,"repos":"not json",` +
		`"labels":"{not a map","annotations":"[1,2","environment_variables":"{\"A\":"}`
	want := map[string]string{
		"name": "../../etc", "project_id": "nowhere", "timeout": "-5", "repos": "not json",
		"labels": "{not a map", "annotations": "[1,2", "environment_variables": `{"A":`,
	}
	check := func(how string, s *ambientv1.Session) {
		t.Helper()
		got := map[string]string{
			"name": s.GetName(), "project_id": s.GetProjectId(), "timeout": fmt.Sprint(s.GetTimeout()), "repos": s.GetRepos(),
			"labels": s.GetLabels(), "annotations": s.GetAnnotations(), "environment_variables": s.GetEnvironmentVariables(),
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q as sent", how, k, got[k], v)
			}
		}
	}
	code, b := rc.do("POST", "/sessions", body)
	if code != http.StatusCreated {
		t.Fatalf("REST create: %d %s, want 201", code, b)
	}
	created := decodeSession(t, b)
	check("REST create", created)
	stored, err := gc.GetSession(t.Context(), created.GetMetadata().GetId())
	if err != nil {
		t.Fatal(err)
	}
	check("gRPC get of the REST create", stored)
	viaGRPC, err := gc.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{
		Name: "../../etc", ProjectId: proto.String("nowhere"), Timeout: proto.Int32(-5), Repos: proto.String("not json"),
		Labels: proto.String("{not a map"), Annotations: proto.String("[1,2"), EnvironmentVariables: proto.String(`{"A":`),
	})
	if err != nil {
		t.Fatalf("gRPC create: %v", err)
	}
	check("gRPC create", viaGRPC)
	for _, name := range []string{"kube-system", "default"} {
		if code, b := rc.do("POST", "/projects", `{"name":"`+name+`"}`); code != http.StatusCreated {
			t.Errorf("REST create project %s: %d %s, want 201", name, code, b)
		}
	}
}

// TestListsAreInDatabaseOrder: the real server lists without ORDER BY, so an
// updated row's new version (written at the end of a full PostgreSQL table)
// comes last, whichever call updated it; a client paging by offset while
// objects change can miss one. A memapi that kept creation order would hide
// that from every client test.
func TestListsAreInDatabaseOrder(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ss := seedSessions(t, srv, 6) // s-00000 .. s-00005
	id := func(i int) string { return ss[i].GetMetadata().GetId() }
	names := func(size int32) []string {
		t.Helper()
		resp, err := c.Sessions().ListSessions(t.Context(), &ambientv1.ListSessionsRequest{Page: 1, Size: size})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range resp.GetItems() {
			out = append(out, s.GetName())
		}
		return out
	}
	if _, err := c.Sessions().UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id(1), Prompt: proto.String("moved")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id(0), Phase: proto.String("Running")}); err != nil {
		t.Fatal(err)
	}
	want := []string{"s-00002", "s-00003", "s-00004", "s-00005", "s-00001", "s-00000"}
	if got := names(100); !slices.Equal(got, want) {
		t.Fatalf("after two updates: %v, want %v", got, want)
	}
	// The pages a client reads before and after one update: page 2 of 3
	// (size 2) shifts by one, and s-00004 is on neither page the client
	// asked for.
	pageOne := names(2)
	if _, err := c.Sessions().UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id(2), Prompt: proto.String("moved")}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Sessions().ListSessions(t.Context(), &ambientv1.ListSessionsRequest{Page: 2, Size: 2})
	if err != nil {
		t.Fatal(err)
	}
	var pageTwo []string
	for _, s := range resp.GetItems() {
		pageTwo = append(pageTwo, s.GetName())
	}
	if !slices.Equal(pageOne, []string{"s-00002", "s-00003"}) || !slices.Equal(pageTwo, []string{"s-00005", "s-00001"}) {
		t.Fatalf("pages %v then %v, want [s-00002 s-00003] then [s-00005 s-00001]", pageOne, pageTwo)
	}
}
