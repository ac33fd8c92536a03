package memapi_test

// Facts read from the real server's code (ambient-api-server's
// plugins/sessions, plugins/projects, plugins/projectSettings and
// rh-trex-ai's services), not measured on a deployed server; see
// docs/architecture.md, "Read from the real server's code".

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/google/go-cmp/cmp"

	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestRESTSessionListProjectIDParam: the real sessions list reads a
// project_id query parameter of its own (plugins/sessions/handler.go; its
// integration tests TestSessionListFilterByProjectId's search and
// TestSessionListRejectsProjectIdInjection): it narrows items and total to
// that project, together with a search and before paging; a value that
// is not letters, digits, '_' and '-' is 400 id 8 "invalid project_id
// format", checked before the search is parsed. Empty, it narrows nothing.
func TestRESTSessionListProjectIDParam(t *testing.T) {
	t.Parallel()
	srv := start(t)
	gc := client(t, srv, testToken)
	for _, s := range []struct{ name, project string }{{"a1", "pa"}, {"a2", "pa"}, {"b1", "pb"}, {"none", ""}, {"dash", "p_a-1"}} {
		req := &ambientv1.CreateSessionRequest{Name: s.name}
		if s.project != "" {
			req.ProjectId = proto.String(s.project)
		}
		if _, err := gc.CreateSession(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	for _, tc := range []struct {
		query map[string]string
		names []string
		total int32
	}{
		{map[string]string{"project_id": "pa"}, []string{"a1", "a2"}, 2},
		{map[string]string{"project_id": "p_a-1"}, []string{"dash"}, 1},
		{map[string]string{"project_id": "pa", "search": "name = 'a2'"}, []string{"a2"}, 1},
		{map[string]string{"project_id": "pa", "search": "name = 'b1'"}, []string{}, 0},
		{map[string]string{"project_id": "pa", "search": "name = 'a1' or name = 'b1'"}, []string{"a1"}, 1},
		{map[string]string{"project_id": "pa", "page": "2", "size": "1"}, []string{"a2"}, 2},
		{map[string]string{"project_id": "nobody"}, []string{}, 0},
		{map[string]string{"project_id": ""}, []string{"a1", "a2", "b1", "none", "dash"}, 5},
	} {
		q := url.Values{}
		for k, v := range tc.query {
			q.Set(k, v)
		}
		code, body := rc.do("GET", "/sessions?"+q.Encode(), "")
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", q.Encode(), code, body)
		}
		var l restapi.List
		if err := json.Unmarshal(body, &l); err != nil {
			t.Fatal(err)
		}
		names := []string{}
		for _, it := range l.Items {
			names = append(names, decodeSession(t, it).GetName())
		}
		if l.Total != tc.total || strings.Join(names, ",") != strings.Join(tc.names, ",") {
			t.Errorf("%s: total %d %v, want total %d %v", q.Encode(), l.Total, names, tc.total, tc.names)
		}
	}
	// The upstream test's payloads, and one with a search that does not
	// parse: the parameter is refused first.
	for _, bad := range []string{"x' OR 1=1--", "x'; DROP TABLE sessions;--", "x' UNION SELECT * FROM users--", "test project", "test'quote", "p.a"} {
		for _, search := range []string{"", "name = "} {
			q := url.Values{"project_id": {bad}}
			if search != "" {
				q.Set("search", search)
			}
			code, body := rc.do("GET", "/sessions?"+q.Encode(), "")
			if code != http.StatusBadRequest {
				t.Errorf("%s: %d %s, want 400", q.Encode(), code, body)
				continue
			}
			if e := decodeError(t, body); e.ID != "8" || e.Reason != "invalid project_id format" {
				t.Errorf("%s: error id %s %q, want id 8 %q", q.Encode(), e.ID, e.Reason, "invalid project_id format")
			}
		}
	}
}

// TestProjectDeleteLeavesItsSessionsAndSettings: deleting a project
// touches nothing else. The real project service deletes only its own
// row (a soft delete: rh-trex's gorm DeletedAt), so the foreign key
// from project_settings (ON DELETE CASCADE) never fires, and sessions
// have no key to projects at all: the project's sessions and settings
// stay, readable and listed, and no watch sends a DELETED for them.
// kube-reconciler and runner-manager rely on it (a deleted project keeps
// its namespace, its sessions keep running until they are deleted).
func TestProjectDeleteLeavesItsSessionsAndSettings(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	sess, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: proto.String("p1")})
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "p1", GroupAccess: proto.String(`[]`)})
	if err != nil {
		t.Fatal(err)
	}
	sid, setID := sess.GetMetadata().GetId(), set.GetMetadata().GetId()
	ws, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wset, err := c.WatchProjectSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if srv.Watchers() != 2 {
			return errors.New("watches not registered")
		}
		return nil
	})

	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	if code, body := rc.do("DELETE", "/projects/p1", ""); code != http.StatusNoContent {
		t.Fatalf("delete project: %d %s", code, body)
	}
	if _, err := c.GetProject(ctx, "p1"); err == nil {
		t.Fatal("the project is still there")
	}

	// Markers: the next event of each watch is the marker's, so the
	// delete sent none of its own to them.
	if _, err := c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: sid, Prompt: proto.String("marker")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: setID, Repositories: proto.String("marker")}); err != nil {
		t.Fatal(err)
	}
	ev, err := recv(t, ws, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED || ev.GetResourceId() != sid || ev.GetSession().GetPrompt() != "marker" {
		t.Errorf("first session event after the project's delete: %v, want the marker's UPDATED", ev)
	}
	evs, err := recv(t, wset, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if evs.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED || evs.GetResourceId() != setID || evs.GetProjectSettings().GetRepositories() != "marker" {
		t.Errorf("first settings event after the project's delete: %v, want the marker's UPDATED", evs)
	}

	if got, err := c.GetSession(ctx, sid); err != nil || got.GetProjectId() != "p1" {
		t.Errorf("session after its project's delete: %v (%v), want it in p1", got, err)
	}
	if got, err := c.GetProjectSettings(ctx, setID); err != nil || got.GetProjectId() != "p1" || got.GetGroupAccess() != `[]` {
		t.Errorf("settings after their project's delete: %v (%v), want them kept", got, err)
	}
	code, body := rc.do("GET", "/sessions?search="+url.QueryEscape("project_id = 'p1'"), "")
	var l restapi.List
	if err := json.Unmarshal(body, &l); code != http.StatusOK || err != nil || l.Total != 1 {
		t.Errorf("sessions of the deleted project: %d %s, want total 1", code, body)
	}
}

// TestStartStopChangeOnlyThePhase: the real service's Start and Stop set
// the phase and nothing else (no start_time, completion_time, conditions
// or sdk fields are cleared: a restarted session still shows its last
// run's until the control plane writes new ones), bump updated_at (gorm's
// Save) and send UPDATED. A refused change (a transition the phase does
// not allow, a status update with a bad phase or no field, a rename onto
// a taken name) writes nothing: no event, no new updated_at.
func TestStartStopChangeOnlyThePhase(t *testing.T) {
	t.Parallel()
	var tick atomic.Int64
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// Every call a new second, so a write shows in updated_at for sure.
	srv := start(t, memapi.WithClock(func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Second) }))
	c := client(t, srv, testToken)
	ctx := t.Context()
	s, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: proto.String("p")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	if _, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{
		Id: id, Phase: proto.String("Completed"),
		StartTime:       timestamppb.New(base.Add(-2 * time.Hour)),
		CompletionTime:  timestamppb.New(base.Add(-time.Hour)),
		SdkSessionId:    proto.String("sdk-1"),
		SdkRestartCount: proto.Int32(3),
		Conditions:      proto.String(`[{"type":"RunnerStarted","status":"True"}]`),
		ReconciledRepos: proto.String(`[{"url":"u"}]`),
		KubeCrUid:       proto.String("uid-1"),
		KubeNamespace:   proto.String("ns-1"),
	}); err != nil {
		t.Fatal(err)
	}
	before, err := c.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}

	// withoutPhase is the session but its phase and updated_at.
	withoutPhase := func(s *ambientv1.Session) *ambientv1.Session {
		o := proto.CloneOf(s)
		o.Phase = nil
		o.GetMetadata().UpdatedAt = nil
		return o
	}
	transition := func(verb, wantPhase string, prev *ambientv1.Session) *ambientv1.Session {
		t.Helper()
		code, body := rc.do("POST", "/sessions/"+id+"/"+verb, "")
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", verb, code, body)
		}
		got := decodeSession(t, body)
		if got.GetPhase() != wantPhase {
			t.Errorf("%s: phase %q, want %q", verb, got.GetPhase(), wantPhase)
		}
		if diff := cmp.Diff(withoutPhase(prev), withoutPhase(got), protocmp.Transform()); diff != "" {
			t.Errorf("%s changed more than the phase (-before +after):\n%s", verb, diff)
		}
		if !got.GetMetadata().GetUpdatedAt().AsTime().After(prev.GetMetadata().GetUpdatedAt().AsTime()) {
			t.Errorf("%s: updated_at %v, want after %v", verb, got.GetMetadata().GetUpdatedAt().AsTime(), prev.GetMetadata().GetUpdatedAt().AsTime())
		}
		ev, err := recv(t, w, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED || ev.GetResourceId() != id || ev.GetSession().GetPhase() != wantPhase {
			t.Errorf("%s: event %v, want UPDATED with phase %s", verb, ev, wantPhase)
		}
		return got
	}
	started := transition("start", "Pending", before)
	stopped := transition("stop", "Stopping", started)

	// Refused changes.
	if code, body := rc.do("POST", "/sessions/"+id+"/stop", ""); code != http.StatusConflict {
		t.Errorf("stop while Stopping: %d %s, want 409", code, body)
	}
	if code, body := rc.do("POST", "/sessions/"+id+"/start", ""); code != http.StatusConflict {
		t.Errorf("start while Stopping: %d %s, want 409", code, body)
	}
	if _, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Paused"), SdkSessionId: proto.String("x")}); err == nil {
		t.Error("status update with an unknown phase: no error")
	}
	if _, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id}); err == nil {
		t.Error("status update without a field: no error")
	}
	if code, body := rc.do("PATCH", "/sessions/"+id+"/status", `{"phase":"Paused","conditions":"[]"}`); code != http.StatusBadRequest {
		t.Errorf("REST status with an unknown phase: %d %s, want 400", code, body)
	}
	after, err := c.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(microOf(stopped), after, protocmp.Transform()); diff != "" {
		t.Errorf("refused changes wrote (-after the stop +now):\n%s", diff)
	}
	// The next event is the marker's: the refused changes sent none.
	if _, err := c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Prompt: proto.String("marker")}); err != nil {
		t.Fatal(err)
	}
	ev, err := recv(t, w, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED || ev.GetSession().GetPrompt() != "marker" {
		t.Errorf("first event after the refused changes: %v, want the marker's UPDATED", ev)
	}
}

// microOf is s with its timestamps in microseconds, as a read shows them.
func microOf(s *ambientv1.Session) *ambientv1.Session {
	o := proto.CloneOf(s)
	for _, ts := range []*timestamppb.Timestamp{o.GetMetadata().GetCreatedAt(), o.GetMetadata().GetUpdatedAt(), o.GetStartTime(), o.GetCompletionTime()} {
		if ts != nil {
			ts.Nanos -= ts.Nanos % int32(time.Microsecond)
		}
	}
	return o
}

// TestSessionNamesAreNotUnique: the sessions table has no unique index
// but its primary key (plugins/sessions/migration.go: plain indexes on
// project_id, phase, parent_session_id, kube_cr_name), so the same name
// may be taken any number of times, in one project too, over gRPC and
// REST; each session gets its own id and kube_cr_name.
func TestSessionNamesAreNotUnique(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	ids := map[string]bool{}
	for range 2 {
		s, err := c.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "same", ProjectId: proto.String("p")})
		if err != nil {
			t.Fatalf("gRPC create of a taken name: %v", err)
		}
		ids[s.GetMetadata().GetId()] = true
		code, body := rc.do("POST", "/sessions", `{"name":"same","project_id":"p"}`)
		if code != http.StatusCreated {
			t.Fatalf("REST create of a taken name: %d %s", code, body)
		}
		r := decodeSession(t, body)
		if r.GetKubeCrName() != r.GetMetadata().GetId() {
			t.Errorf("kube_cr_name %q, want the id %q", r.GetKubeCrName(), r.GetMetadata().GetId())
		}
		ids[r.GetMetadata().GetId()] = true
	}
	if len(ids) != 4 {
		t.Errorf("%d distinct ids for 4 sessions named alike", len(ids))
	}
}
