package memapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The tests in this file hold the REST side and the project and settings
// watches to the measured facts of UPSTREAM-BEHAVIOUR.md that the other
// tests prove only over gRPC or only for sessions. Every expected value is
// the fact's, written out, not read from memapi.

// TestRESTPageSizeClamps: "page < 1 becomes 1; size < 1 or > 500 becomes
// 20", and metadata size is the number of items on the page. With 25
// sessions a size that was not clamped to 20 shows (a list of 4 cannot
// tell 20 from "everything").
func TestRESTPageSizeClamps(t *testing.T) {
	t.Parallel()
	srv := start(t)
	seedSessions(t, srv, 25) // s-00000 .. s-00024
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	tests := []struct {
		query     string
		page      int32
		size      int
		wantFirst string
	}{
		{"", 1, 20, "s-00000"},
		{"size=0", 1, 20, "s-00000"},
		{"size=-1", 1, 20, "s-00000"},
		{"size=501", 1, 20, "s-00000"},
		{"size=500", 1, 25, "s-00000"},
		{"size=1", 1, 1, "s-00000"},
		{"page=0&size=5", 1, 5, "s-00000"},
		{"page=-3&size=5", 1, 5, "s-00000"},
		{"page=2&size=0", 2, 5, "s-00020"},
		{"page=2&size=501", 2, 5, "s-00020"},
		{"page=3&size=10", 3, 5, "s-00020"},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			t.Parallel()
			code, body := rc.do("GET", "/sessions?"+tc.query, "")
			if code != http.StatusOK {
				t.Fatalf("%d %s", code, body)
			}
			var l restapi.List
			if err := json.Unmarshal(body, &l); err != nil {
				t.Fatal(err)
			}
			if l.Kind != "SessionList" || l.Page != tc.page || l.Total != 25 || int(l.Size) != tc.size || len(l.Items) != tc.size {
				t.Fatalf("kind %s page %d size %d total %d, %d items; want SessionList page %d size %d total 25, %d items",
					l.Kind, l.Page, l.Size, l.Total, len(l.Items), tc.page, tc.size, tc.size)
			}
			if first := decodeSession(t, l.Items[0]).GetName(); first != tc.wantFirst {
				t.Errorf("first item %s, want %s", first, tc.wantFirst)
			}
		})
	}
}

// TestRESTTimestampPrecision: "Watch events and lists carry microsecond
// precision; responses to mutations carry nanoseconds", over REST: a
// create, a PATCH and a start answer with the nanoseconds the mutation set;
// a GET and a list read the row back in microseconds.
func TestRESTTimestampPrecision(t *testing.T) {
	t.Parallel()
	clock := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	srv := start(t, memapi.WithClock(func() time.Time { return clock }))
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	const nanos, micros = 123456789, 123456000
	// times returns the fractional nanoseconds of the object's created_at
	// and updated_at, as written on the wire.
	times := func(raw []byte) (created, updated int) {
		t.Helper()
		var o struct {
			CreatedAt string `json:"created_at"`
			UpdatedAt string `json:"updated_at"`
		}
		if err := json.Unmarshal(raw, &o); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		parse := func(s string) int {
			ts, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				t.Fatalf("timestamp %q: %v", s, err)
			}
			return ts.Nanosecond()
		}
		return parse(o.CreatedAt), parse(o.UpdatedAt)
	}
	check := func(what string, raw []byte, wantCreated, wantUpdated int) {
		t.Helper()
		if c, u := times(raw); c != wantCreated || u != wantUpdated {
			t.Errorf("%s: created_at nanos %d, updated_at nanos %d; want %d, %d", what, c, u, wantCreated, wantUpdated)
		}
	}

	code, body := rc.do("POST", "/sessions", `{"name":"a"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	check("create answer", body, nanos, nanos)
	id := decodeSession(t, body).GetMetadata().GetId()

	code, body = rc.do("GET", "/sessions/"+id, "")
	if code != http.StatusOK {
		t.Fatalf("get: %d %s", code, body)
	}
	check("get", body, micros, micros)

	code, body = rc.do("GET", "/sessions", "")
	var l restapi.List
	if err := json.Unmarshal(body, &l); code != http.StatusOK || err != nil || len(l.Items) != 1 {
		t.Fatalf("list: %d %s (%v)", code, body, err)
	}
	check("list item", l.Items[0], micros, micros)

	// An update reads the row (created_at in microseconds) and sets
	// updated_at now.
	code, body = rc.do("PATCH", "/sessions/"+id, `{"prompt":"p"}`)
	if code != http.StatusOK {
		t.Fatalf("patch: %d %s", code, body)
	}
	check("patch answer", body, micros, nanos)
	code, body = rc.do("POST", "/sessions/"+id+"/start", "")
	if code != http.StatusOK {
		t.Fatalf("start: %d %s", code, body)
	}
	check("start answer", body, micros, nanos)

	code, body = rc.do("POST", "/projects", `{"name":"p1"}`)
	if code != http.StatusCreated {
		t.Fatalf("create project: %d %s", code, body)
	}
	check("project create answer", body, nanos, nanos)
	code, body = rc.do("GET", "/projects/p1", "")
	if code != http.StatusOK {
		t.Fatalf("get project: %d %s", code, body)
	}
	check("project get", body, micros, micros)
}

// TestRESTDeleteIsWatchedForEveryID: "DELETED carries only resource_id (no
// object), and is sent for every delete call, even of unknown ids", for
// REST's DELETE (204 also for an id already gone) of each collection, as
// for the gRPC delete (TestWatchSemantics).
func TestRESTDeleteIsWatchedForEveryID(t *testing.T) {
	t.Parallel()
	srv := start(t)
	gc := client(t, srv, testToken)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	ws, err := gc.WatchSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wp, err := gc.WatchProjects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wps, err := gc.WatchProjectSettings(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if n := srv.Watchers(); n != 3 {
			return fmt.Errorf("%d watchers, want 3", n)
		}
		return nil
	})
	code, body := rc.do("POST", "/sessions", `{"name":"a"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	id := decodeSession(t, body).GetMetadata().GetId()
	if ev, err := recv(t, ws, 5*time.Second); err != nil || ev.GetType() != ambientv1.EventType_EVENT_TYPE_CREATED {
		t.Fatalf("create event %v, %v", ev, err)
	}
	deletes := []struct{ path, id string }{
		{"/sessions/" + id, id},
		{"/sessions/" + id, id}, // already gone
		{"/sessions/never-existed", "never-existed"},
		{"/projects/no-such-project", "no-such-project"},
		{"/project_settings/no-such-settings", "no-such-settings"},
	}
	for _, d := range deletes {
		if code, body := rc.do("DELETE", d.path, ""); code != http.StatusNoContent {
			t.Fatalf("DELETE %s: %d %s, want 204", d.path, code, body)
		}
	}
	var got []string
	for range 3 {
		ev, err := recv(t, ws, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetSession() != nil {
			t.Errorf("DELETED session event carries an object: %v", ev.GetSession())
		}
		got = append(got, fmt.Sprintf("%v %s", ev.GetType(), ev.GetResourceId()))
	}
	pev, err := recv(t, wp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if pev.GetProject() != nil {
		t.Errorf("DELETED project event carries an object: %v", pev.GetProject())
	}
	got = append(got, fmt.Sprintf("%v %s", pev.GetType(), pev.GetResourceId()))
	sev, err := recv(t, wps, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sev.GetProjectSettings() != nil {
		t.Errorf("DELETED settings event carries an object: %v", sev.GetProjectSettings())
	}
	got = append(got, fmt.Sprintf("%v %s", sev.GetType(), sev.GetResourceId()))
	want := []string{
		"EVENT_TYPE_DELETED " + id, "EVENT_TYPE_DELETED " + id, "EVENT_TYPE_DELETED never-existed",
		"EVENT_TYPE_DELETED no-such-project", "EVENT_TYPE_DELETED no-such-settings",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestProjectAndSettingsWatchSemantics: the watch facts proven for sessions
// (TestWatchSemantics) hold for the other two streams: CREATED and UPDATED
// carry the object (metadata kind and href as the real server writes them,
// resource_id its id), DELETED only resource_id, also for an unknown id; a
// project's id is its name.
func TestProjectAndSettingsWatchSemantics(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()
	wp, err := c.WatchProjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wps, err := c.WatchProjectSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if n := srv.Watchers(); n != 2 {
			return fmt.Errorf("%d watchers, want 2", n)
		}
		return nil
	})
	type event struct {
		typ         ambientv1.EventType
		resourceID  string
		hasObject   bool
		id, kind    string
		href, field string // field: display_name or group_access
	}
	describeProject := func(ev *ambientv1.ProjectWatchEvent) event {
		p := ev.GetProject()
		return event{ev.GetType(), ev.GetResourceId(), p != nil, p.GetMetadata().GetId(), p.GetMetadata().GetKind(), p.GetMetadata().GetHref(), p.GetDisplayName()}
	}
	describeSettings := func(ev *ambientv1.ProjectSettingsWatchEvent) event {
		s := ev.GetProjectSettings()
		return event{ev.GetType(), ev.GetResourceId(), s != nil, s.GetMetadata().GetId(), s.GetMetadata().GetKind(), s.GetMetadata().GetHref(), s.GetGroupAccess()}
	}

	// Each change is read off its stream before the next one: an object
	// deleted before its event is sent makes the event vanish (a fact of
	// its own, TestWatchSemantics).
	nextProject := func(change func() error) event {
		t.Helper()
		if err := change(); err != nil {
			t.Fatal(err)
		}
		ev, err := recv(t, wp, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return describeProject(ev)
	}
	nextSettings := func(change func() error) event {
		t.Helper()
		if err := change(); err != nil {
			t.Fatal(err)
		}
		ev, err := recv(t, wps, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return describeSettings(ev)
	}
	check := func(what string, got, want event) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %+v, want %+v", what, got, want)
		}
	}

	const projHref = "/api/ambient/v1/projects/p1"
	check("project create", nextProject(func() error {
		_, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p1", DisplayName: proto.String("one")})
		return err
	}), event{ambientv1.EventType_EVENT_TYPE_CREATED, "p1", true, "p1", "Project", projHref, "one"})
	check("project update", nextProject(func() error {
		_, err := c.Projects().UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: "p1", DisplayName: proto.String("two")})
		return err
	}), event{ambientv1.EventType_EVENT_TYPE_UPDATED, "p1", true, "p1", "Project", projHref, "two"})
	check("project delete", nextProject(func() error { return c.DeleteProject(ctx, "p1") }),
		event{ambientv1.EventType_EVENT_TYPE_DELETED, "p1", false, "", "", "", ""})
	check("delete of an unknown project", nextProject(func() error { return c.DeleteProject(ctx, "never-existed") }),
		event{ambientv1.EventType_EVENT_TYPE_DELETED, "never-existed", false, "", "", "", ""})

	// Settings need their project (the real foreign key): its event is
	// read off the project stream like the others.
	check("project of the settings", nextProject(func() error {
		_, err := c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "p2"})
		return err
	}), event{ambientv1.EventType_EVENT_TYPE_CREATED, "p2", true, "p2", "Project", "/api/ambient/v1/projects/p2", ""})
	var sid string
	created := nextSettings(func() error {
		s, err := c.ProjectSettings().CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: "p2", GroupAccess: proto.String(`[]`)})
		sid = s.GetMetadata().GetId()
		return err
	})
	setHref := "/api/ambient/v1/project_settings/" + sid
	check("settings create", created, event{ambientv1.EventType_EVENT_TYPE_CREATED, sid, true, sid, "ProjectSettings", setHref, `[]`})
	const access = `[{"group":"devs","role":"ambient-project-edit"}]`
	check("settings update", nextSettings(func() error {
		_, err := c.ProjectSettings().UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: sid, GroupAccess: proto.String(access)})
		return err
	}), event{ambientv1.EventType_EVENT_TYPE_UPDATED, sid, true, sid, "ProjectSettings", setHref, access})
	check("settings delete", nextSettings(func() error { return c.DeleteProjectSettings(ctx, sid) }),
		event{ambientv1.EventType_EVENT_TYPE_DELETED, sid, false, "", "", "", ""})
	check("delete of unknown settings", nextSettings(func() error { return c.DeleteProjectSettings(ctx, "never-existed") }),
		event{ambientv1.EventType_EVENT_TYPE_DELETED, "never-existed", false, "", "", "", ""})
}

// TestRESTProjectPatch: "PATCH 200" for a project as for a session (the
// golden script patches only a session): the answer is the flat project,
// its id still its name, and the watch sees the change.
func TestRESTProjectPatch(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	if code, body := rc.do("POST", "/projects", `{"name":"p1"}`); code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	w := watchProjects(t, srv, c)
	code, body := rc.do("PATCH", "/projects/p1", `{"display_name":"One","description":"d"}`)
	if code != http.StatusOK {
		t.Fatalf("PATCH: %d %s, want 200", code, body)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"id": "p1", "kind": "Project", "href": "/api/ambient/v1/projects/p1",
		"name": "p1", "display_name": "One", "description": "d",
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (answer %s)", k, got[k], want, body)
		}
	}
	ev, err := recv(t, w, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED || ev.GetResourceId() != "p1" || ev.GetProject().GetDisplayName() != "One" {
		t.Errorf("event %v, want UPDATED p1 with display_name One", ev)
	}
}
