package memapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

type restClient struct {
	t     *testing.T
	base  string
	token string
}

// do sends a request and returns the status and body; a body other than a
// 204's or a 401's must be JSON.
func (c restClient) do(method, path, body string) (int, []byte) {
	c.t.Helper()
	code, ctype, b := c.send(method, path, body)
	if code != http.StatusNoContent && code != http.StatusUnauthorized && ctype != "application/json" {
		c.t.Errorf("%s %s: Content-Type %q", method, path, ctype)
	}
	return code, b
}

func decodeSession(t *testing.T, b []byte) *ambientv1.Session {
	t.Helper()
	s := &ambientv1.Session{}
	if err := restapi.UnmarshalObject(b, s); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return s
}

func decodeError(t *testing.T, b []byte) restapi.Error {
	t.Helper()
	var e restapi.Error
	if err := json.Unmarshal(b, &e); err != nil || e.Kind != restapi.ErrorKind {
		t.Fatalf("body %s: want an error object (%v)", b, err)
	}
	return e
}

// TestRESTChangesAreWatched: creates, updates, start/stop and deletes made
// over REST reach gRPC watchers, with the object as REST shows it.
func TestRESTChangesAreWatched(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	gc := client(t, srv, testToken)
	w, err := gc.WatchSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	nextEvent := func(typ ambientv1.EventType, id string) *ambientv1.SessionWatchEvent {
		t.Helper()
		ev, err := recv(t, w, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetType() != typ || ev.GetResourceId() != id {
			t.Fatalf("event %v %s, want %v %s", ev.GetType(), ev.GetResourceId(), typ, id)
		}
		return ev
	}

	code, body := rc.do("POST", "/sessions", `{"name":"demo","prompt":"hello","project_id":"p1","labels":"{\"a\":\"b\"}","llm_temperature":0}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	s := decodeSession(t, body)
	id := s.GetMetadata().GetId()
	if ev := nextEvent(ambientv1.EventType_EVENT_TYPE_CREATED, id); ev.GetSession().GetMetadata().GetCreatedAt().GetNanos()%1000 != 0 ||
		ev.GetSession().GetLabels() != `{"a":"b"}` || ev.GetSession().LlmTemperature == nil || ev.GetSession().GetLlmTemperature() != 0 {
		t.Errorf("created event %v", ev.GetSession())
	}
	code, body = rc.do("PATCH", "/sessions/"+id, `{"prompt":"bye","phase":"Running","kube_cr_name":"x"}`)
	if s := decodeSession(t, body); code != http.StatusOK || s.GetPrompt() != "bye" || s.GetPhase() != "" || s.GetKubeCrName() != id {
		t.Fatalf("patch (read-only phase and kube_cr_name ignored): %d %s", code, body)
	}
	nextEvent(ambientv1.EventType_EVENT_TYPE_UPDATED, id)
	for _, tc := range []struct{ action, phase string }{{"start", "Pending"}, {"stop", "Stopping"}} {
		code, body = rc.do("POST", "/sessions/"+id+"/"+tc.action, "")
		if code != http.StatusOK || decodeSession(t, body).GetPhase() != tc.phase {
			t.Fatalf("%s: %d %s", tc.action, code, body)
		}
		if ev := nextEvent(ambientv1.EventType_EVENT_TYPE_UPDATED, id); ev.GetSession().GetPhase() != tc.phase {
			t.Errorf("%s event phase %q", tc.action, ev.GetSession().GetPhase())
		}
	}
	if code, _ = rc.do("DELETE", "/sessions/"+id, ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	nextEvent(ambientv1.EventType_EVENT_TYPE_DELETED, id)
}

// TestRESTStartStopGuards walks every phase through start and stop: the
// real server's guards (start from "", Stopped, Failed, Completed; stop from
// Pending, Creating, Running) and its 409 reasons.
func TestRESTStartStopGuards(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	gc := client(t, srv, testToken)
	startOK := map[string]bool{"": true, "Stopped": true, "Failed": true, "Completed": true}
	stopOK := map[string]bool{"Pending": true, "Creating": true, "Running": true}
	for _, phase := range append([]string{""}, []string{"Pending", "Creating", "Running", "Stopping", "Stopped", "Completed", "Failed"}...) {
		for _, action := range []string{"start", "stop"} {
			t.Run(action+" from "+phase, func(t *testing.T) {
				s, err := gc.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "n"})
				if err != nil {
					t.Fatal(err)
				}
				id := s.GetMetadata().GetId()
				if phase != "" {
					if _, err := gc.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String(phase)}); err != nil {
						t.Fatal(err)
					}
				}
				code, body := rc.do("POST", "/sessions/"+id+"/"+action, "")
				allowed := action == "start" && startOK[phase] || action == "stop" && stopOK[phase]
				if allowed {
					want := map[string]string{"start": "Pending", "stop": "Stopping"}[action]
					if code != http.StatusOK || decodeSession(t, body).GetPhase() != want {
						t.Fatalf("%d %s, want 200 with phase %s", code, body, want)
					}
					return
				}
				e := decodeError(t, body)
				must := map[string]string{"start": "must be empty, Stopped, Failed, or Completed", "stop": "must be Running, Creating, or Pending"}[action]
				if code != http.StatusConflict || e.ID != "6" || e.Reason != "cannot "+action+" session in phase \""+phase+"\"; "+must {
					t.Fatalf("%d %+v, want 409 id 6 with the real reason", code, e)
				}
				if got, err := gc.GetSession(t.Context(), id); err != nil || got.GetPhase() != phase {
					t.Fatalf("refused %s changed the phase to %q (%v)", action, got.GetPhase(), err)
				}
			})
		}
	}
	code, body := rc.do("POST", "/sessions/nope/start", "")
	if e := decodeError(t, body); code != http.StatusNotFound || e.Reason != "Session with id='nope' not found" {
		t.Fatalf("start unknown: %d %s", code, body)
	}
}

func TestRESTErrors(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	settingsOf := map[string]string{} // project -> its settings' id
	for _, name := range []string{"taken", "other"} {
		if code, body := rc.do("POST", "/projects", `{"name":"`+name+`"}`); code != http.StatusCreated {
			t.Fatalf("seed: %d %s", code, body)
		}
		code, body := rc.do("POST", "/project_settings", `{"project_id":"`+name+`"}`)
		if code != http.StatusCreated {
			t.Fatalf("seed settings: %d %s", code, body)
		}
		ps := &ambientv1.ProjectSettings{}
		if err := restapi.UnmarshalObject(body, ps); err != nil {
			t.Fatal(err)
		}
		settingsOf[name] = ps.GetMetadata().GetId()
	}
	tests := []struct {
		name         string
		token        string
		method, path string
		body         string
		want         int
		id           string // error id; "" for plain-text 401
		reason       string // prefix of the reason (or the whole 401 text)
	}{
		{"missing token", "", "GET", "/sessions", "", 401, "", "missing authorization header"},
		{"wrong token", "nope", "GET", "/projects", "", 401, "", "invalid bearer token"},
		{"wrong token on write", "nope", "POST", "/projects", `{"name":"x"}`, 401, "", "invalid bearer token"},
		{"unknown route without token", "", "GET", "/widgets", "", 401, "", "missing authorization header"},
		{"unknown session", testToken, "GET", "/sessions/nope", "", 404, "7", "Session with id='nope' not found"},
		{"unknown project", testToken, "PATCH", "/projects/nope", `{"description":"d"}`, 404, "7", "Project with id='nope' not found"},
		{"unknown settings", testToken, "GET", "/project_settings/nope", "", 404, "7", "ProjectSettings with id='nope' not found"},
		{"duplicate project", testToken, "POST", "/projects", `{"name":"taken"}`, 409, "6", "This Project already exists"},
		{"project renamed to a taken name", testToken, "PATCH", "/projects/other", `{"name":"taken"}`, 409, "6", "Changes to Project conflict with existing records"},
		{"settings moved to a project that has some", testToken, "PATCH", "/project_settings/" + settingsOf["other"], `{"project_id":"taken"}`, 409, "6", "Changes to ProjectSettings conflict with existing records"},
		{"project name with capitals", testToken, "POST", "/projects", `{"name":"Team"}`, 400, "8", "project name must match DNS-1123 label format"},
		{"project name ending in a hyphen", testToken, "POST", "/projects", `{"name":"team-"}`, 400, "8", "project name must match DNS-1123 label format"},
		{"project name starting with a digit", testToken, "POST", "/projects", `{"name":"1team"}`, 400, "8", "project name must match DNS-1123 label format"},
		{"project name too long", testToken, "POST", "/projects", `{"name":"` + strings.Repeat("a", 64) + `"}`, 400, "8", "project name must be between 2 and 63 characters"},
		{"empty project name", testToken, "POST", "/projects", `{"name":""}`, 400, "8", "project name must be between 2 and 63 characters"},
		{"bad json", testToken, "POST", "/sessions", `{"name":`, 400, "17", "Invalid request format: unexpected end of JSON input"},
		{"not an object", testToken, "POST", "/sessions", `[]`, 400, "17", "Invalid request format: "},
		{"missing name", testToken, "POST", "/sessions", `{}`, 400, "17", "Invalid request format: no value given for required property name"},
		{"settings without project", testToken, "POST", "/project_settings", `{"group_access":"[]"}`, 400, "17", "Invalid request format: no value given for required property project_id"},
		{"unknown field", testToken, "POST", "/sessions", `{"name":"a","color":"red"}`, 400, "17", `Invalid request format: json: unknown field "color"`},
		{"camelCase field", testToken, "POST", "/sessions", `{"name":"a","projectId":"p"}`, 400, "17", `Invalid request format: json: unknown field "projectId"`},
		{"wrong type", testToken, "POST", "/sessions", `{"name":"a","timeout":"soon"}`, 400, "17", "Invalid request format: "},
		{"bad patch", testToken, "PATCH", "/sessions/x", `{"prompt":`, 400, "17", "Invalid request format: "},
		{"patch of a known field with the wrong type", testToken, "PATCH", "/sessions/x", `{"timeout":"soon"}`, 400, "17", "Invalid request format: "},
		{"create with an id", testToken, "POST", "/sessions", `{"name":"a","id":"mine"}`, 400, "8", "id must be empty"},
		{"project with an id", testToken, "POST", "/projects", `{"name":"idd","id":"idd"}`, 400, "8", "id must be empty"},
		{"search memapi does not support", testToken, "GET", "/sessions?search=name%20%3C%20%27a%27", "", 400, "23", "Failed to parse search query: "},
		{"search unknown field", testToken, "GET", "/sessions?search=color%3D%27red%27", "", 400, "23", `Failed to parse search query: unknown field "color"`},
		{"unknown route", testToken, "GET", "/widgets", "", 404, "7", "The requested resource '/api/ambient/v1/widgets' doesn't exist"},
		{"wrong method", testToken, "PUT", "/sessions/x", `{}`, 405, "10", "HTTP Method not implemented"},
		{"status of an unknown session", testToken, "PATCH", "/sessions/nope/status", `{"phase":"Running"}`, 404, "7", "Session with id='nope' not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := restClient{t: t, base: srv.RESTURL(), token: tc.token}
			code, ctype, body := c.send(tc.method, tc.path, tc.body)
			if code != tc.want {
				t.Fatalf("status %d, want %d (%s)", code, tc.want, body)
			}
			if tc.id == "" {
				// http.Error's body, as the real bearer middleware's.
				if !strings.HasPrefix(ctype, "text/plain") || string(body) != tc.reason+"\n" {
					t.Fatalf("401 body %q (%s), want text %q", body, ctype, tc.reason+"\n")
				}
				return
			}
			e := decodeError(t, body)
			if e.ID != tc.id || e.Code != "ambient-api-server-"+tc.id || e.Href != "/api/ambient/v1/errors/"+tc.id ||
				!strings.HasPrefix(e.Reason, tc.reason) || e.OperationID == "" {
				t.Fatalf("error %+v, want id %s and a reason starting %q", e, tc.id, tc.reason)
			}
		})
	}
	t.Run("delete unknown is fine", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/sessions/nope", "/projects/nope", "/project_settings/nope"} {
			if code, body := rc.do("DELETE", path, ""); code != http.StatusNoContent || len(body) != 0 {
				t.Errorf("DELETE %s: %d %s", path, code, body)
			}
		}
	})
}

func TestRESTHealthcheckNeedsNoToken(t *testing.T) {
	t.Parallel()
	srv := start(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.RESTURL()+"/healthcheck", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestRESTProjectsAndSettings(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	code, body := rc.do("POST", "/projects", `{"name":"p1","display_name":"P One","labels":"{\"team\":\"a\"}"}`)
	if code != http.StatusCreated {
		t.Fatalf("create project: %d %s", code, body)
	}
	p := &ambientv1.Project{}
	if err := restapi.UnmarshalObject(body, p); err != nil || p.GetMetadata().GetId() != "p1" || p.GetDisplayName() != "P One" || p.GetLabels() != `{"team":"a"}` {
		t.Fatalf("project %s (%v)", body, err)
	}
	code, body = rc.do("POST", "/project_settings", `{"project_id":"p1","group_access":"[{\"group\":\"g\",\"role\":\"edit\"}]"}`)
	if code != http.StatusCreated {
		t.Fatalf("create settings: %d %s", code, body)
	}
	ps := &ambientv1.ProjectSettings{}
	if err := restapi.UnmarshalObject(body, ps); err != nil || ps.GetProjectId() != "p1" {
		t.Fatalf("settings %s (%v)", body, err)
	}
	code, body = rc.do("PATCH", "/project_settings/"+ps.GetMetadata().GetId(), `{"repositories":"[]"}`)
	if err := restapi.UnmarshalObject(body, ps); code != http.StatusOK || err != nil || ps.GetRepositories() != "[]" || ps.GetGroupAccess() == "" {
		t.Fatalf("patch settings: %d %s", code, body)
	}
	if code, _ = rc.do("DELETE", "/projects/p1", ""); code != http.StatusNoContent {
		t.Errorf("delete project: %d", code)
	}
	if code, _ = rc.do("GET", "/projects/p1", ""); code != http.StatusNotFound {
		t.Errorf("get deleted project: %d", code)
	}
	// The name is not free again: the real server deletes softly and its
	// unique index keeps the deleted row (TestSoftDeleteKeepsKeys).
	if code, body = rc.do("POST", "/projects", `{"name":"p1"}`); code != http.StatusConflict {
		t.Errorf("recreate project: %d %s", code, body)
	}
}

// TestRESTPatchReadsOnlyThePatchRequest: the real server decodes a PATCH
// body into its PatchRequest model with plain encoding/json (upstream
// rh-trex handlers and the generated OpenAPI models): a session's
// project_id (not in SessionPatchRequest; set at create), read-only fields,
// "id" and unknown keys are ignored, the rest applied. A create may carry
// an empty id only.
func TestRESTPatchReadsOnlyThePatchRequest(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	code, body := rc.do("POST", "/sessions", `{"name":"s","project_id":"p1","id":""}`)
	if code != http.StatusCreated {
		t.Fatalf("create with an empty id: %d %s", code, body)
	}
	id := decodeSession(t, body).GetMetadata().GetId()
	code, body = rc.do("PATCH", "/sessions/"+id, `{"prompt":"p2","project_id":"p2","phase":"Running","id":"other","color":"red"}`)
	if code != http.StatusOK {
		t.Fatalf("patch: %d %s", code, body)
	}
	got := decodeSession(t, body)
	if got.GetPrompt() != "p2" || got.GetProjectId() != "p1" || got.GetPhase() == "Running" || got.GetMetadata().GetId() != id {
		t.Fatalf("after the patch: prompt %q, project %q, phase %q, id %q; want prompt p2 in project p1, phase untouched, id %s",
			got.GetPrompt(), got.GetProjectId(), got.GetPhase(), got.GetMetadata().GetId(), id)
	}
	code, body = rc.do("PATCH", "/projects/nope", `{"color":"red"}`)
	if code != http.StatusNotFound {
		t.Fatalf("patch of an unknown project with an unknown key: %d %s, want 404 (the key is ignored)", code, body)
	}
}

// TestRESTListSearchAndPages: search narrows total and items before
// paging; page and size follow the clamps.
func TestRESTListSearchAndPages(t *testing.T) {
	t.Parallel()
	srv := start(t)
	gc := client(t, srv, testToken)
	for _, s := range []struct {
		name, project string
		tokens        int32
	}{{"a1", "pa", 100}, {"a2", "pa", 200}, {"b1", "pb", 100}, {"x'y", "", 0}} {
		req := &ambientv1.CreateSessionRequest{Name: s.name}
		if s.project != "" {
			req.ProjectId = proto.String(s.project)
		}
		if s.tokens != 0 {
			req.LlmMaxTokens = proto.Int32(s.tokens)
		}
		if _, err := gc.CreateSession(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	tests := []struct {
		search, page, size string
		names              []string
		total              int32
		wantPage           int32
	}{
		{"", "", "", []string{"a1", "a2", "b1", "x'y"}, 4, 1},
		{"name='a1'", "", "", []string{"a1"}, 1, 1},
		{"project_id='pa' and name='a2'", "", "", []string{"a2"}, 1, 1},
		{"project_id='pa' AND llm_max_tokens=100", "", "", []string{"a1"}, 1, 1},
		{"project_id='pb' or name='a1'", "", "", []string{"a1", "b1"}, 2, 1},
		{"(name='a1' or name='b1') and project_id='pb'", "", "", []string{"b1"}, 1, 1},
		{"project_id!='pa'", "", "", []string{"b1"}, 1, 1}, // unset project_id is NULL: no match
		{"name like 'a%'", "", "", []string{"a1", "a2"}, 2, 1},
		{"name ilike 'A_'", "", "", []string{"a1", "a2"}, 2, 1},
		{"name in ('b1','x''y')", "", "", []string{"b1", "x'y"}, 2, 1},
		{"name='nobody'", "", "", []string{}, 0, 1},
		{"project_id='pa'", "2", "1", []string{"a2"}, 2, 2},
		{"", "0", "2", []string{"a1", "a2"}, 4, 1},
		{"", "2", "3", []string{"x'y"}, 4, 2},
		{"", "9", "", []string{}, 4, 9},
		{"", "", "501", []string{"a1", "a2", "b1", "x'y"}, 4, 1},
		{"", "abc", "-4", []string{"a1", "a2", "b1", "x'y"}, 4, 1},
	}
	for _, tc := range tests {
		q := url.Values{}
		for k, v := range map[string]string{"search": tc.search, "page": tc.page, "size": tc.size} {
			if v != "" {
				q.Set(k, v)
			}
		}
		t.Run(q.Encode(), func(t *testing.T) {
			t.Parallel()
			code, body := rc.do("GET", "/sessions?"+q.Encode(), "")
			if code != http.StatusOK {
				t.Fatalf("%d %s", code, body)
			}
			var l restapi.List
			if err := json.Unmarshal(body, &l); err != nil {
				t.Fatal(err)
			}
			names := []string{}
			for _, it := range l.Items {
				names = append(names, decodeSession(t, it).GetName())
			}
			if l.Kind != "SessionList" || l.Total != tc.total || l.Page != tc.wantPage || l.Size != int32(len(l.Items)) || strings.Join(names, ",") != strings.Join(tc.names, ",") {
				t.Fatalf("got kind %s page %d size %d total %d %v, want page %d total %d %v", l.Kind, l.Page, l.Size, l.Total, names, tc.wantPage, tc.total, tc.names)
			}
		})
	}
}

// TestRESTSessionStatus: PATCH /sessions/{id}/status, the real server's
// status write-back (its handler PatchStatus and service UpdateStatus,
// read from the code): 200 with the flat session and the same UPDATED
// event as gRPC UpdateSessionStatus; only the ten status fields are read
// (plain encoding/json into SessionStatusPatchRequest: other keys are
// ignored); the checks in the service's order (no field, then the id, then
// the phase); a body that does not decode is 400 id 17 before anything.
func TestRESTSessionStatus(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	gc := client(t, srv, testToken)
	w, err := gc.WatchSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)
	code, body := rc.do("POST", "/sessions", `{"name":"s","prompt":"p","project_id":"p1"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	id := decodeSession(t, body).GetMetadata().GetId()
	if ev, err := recv(t, w, 5*time.Second); err != nil || ev.GetType() != ambientv1.EventType_EVENT_TYPE_CREATED {
		t.Fatalf("created event %v (%v)", ev, err)
	}

	code, body = rc.do("PATCH", "/sessions/"+id+"/status", `{"phase":"Running","start_time":"2026-01-02T03:04:05.123456789Z",`+
		`"sdk_session_id":"sdk","sdk_restart_count":2,"conditions":"[]","reconciled_repos":"[{}]","reconciled_workflow":"{}",`+
		`"kube_cr_uid":"uid","kube_namespace":"ns",`+
		`"name":"renamed","prompt":"q","project_id":"p2","kube_cr_name":"cr","id":"other","color":"red"}`)
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, body)
	}
	got := decodeSession(t, body)
	if got.GetMetadata().GetId() != id || got.GetPhase() != "Running" || got.GetStartTime().AsTime().Format(time.RFC3339Nano) != "2026-01-02T03:04:05.123456789Z" ||
		got.GetSdkSessionId() != "sdk" || got.GetSdkRestartCount() != 2 || got.GetConditions() != "[]" || got.GetReconciledRepos() != "[{}]" ||
		got.GetReconciledWorkflow() != "{}" || got.GetKubeCrUid() != "uid" || got.GetKubeNamespace() != "ns" || got.CompletionTime != nil {
		t.Fatalf("status fields not set: %s", body)
	}
	if got.GetName() != "s" || got.GetPrompt() != "p" || got.GetProjectId() != "p1" || got.GetKubeCrName() != id {
		t.Fatalf("keys outside SessionStatusPatchRequest were applied: %s", body)
	}
	ev, err := recv(t, w, 5*time.Second)
	if err != nil || ev.GetType() != ambientv1.EventType_EVENT_TYPE_UPDATED || ev.GetResourceId() != id ||
		ev.GetSession().GetPhase() != "Running" || ev.GetSession().GetKubeNamespace() != "ns" {
		t.Fatalf("updated event %v (%v), want UPDATED %s with the new status", ev, err, id)
	}
	// Only what the body sets changes.
	code, body = rc.do("PATCH", "/sessions/"+id+"/status", `{"phase":"Completed","completion_time":"2026-01-02T04:00:00Z"}`)
	if got := decodeSession(t, body); code != http.StatusOK || got.GetPhase() != "Completed" || got.GetSdkSessionId() != "sdk" || got.CompletionTime == nil {
		t.Fatalf("second status: %d %s", code, body)
	}

	const noField = "status patch body must set at least one field: phase, start_time, completion_time, sdk_session_id, " +
		"sdk_restart_count, conditions, reconciled_repos, reconciled_workflow, kube_cr_uid, kube_namespace"
	const badPhase = `invalid phase "Bogus"; must be one of: Pending, Creating, Running, Stopping, Stopped, Completed, Failed`
	tests := []struct {
		name, id, body string
		want           int
		errID, reason  string // reason: the whole reason, or its prefix when it ends in ": "
	}{
		{"empty object", id, `{}`, 400, "8", noField},
		{"only unknown and read-only keys", id, `{"name":"x","color":"red","kube_cr_name":"y"}`, 400, "8", noField},
		{"null", id, `null`, 400, "8", noField},
		{"explicit nulls", id, `{"phase":null,"start_time":null}`, 400, "8", noField},
		{"empty body", id, ``, 400, "17", "Invalid request format: unexpected end of JSON input"},
		{"not an object", id, `[]`, 400, "17", "Invalid request format: "},
		{"wrong type", id, `{"phase":5}`, 400, "17", "Invalid request format: "},
		{"bad phase", id, `{"phase":"Bogus"}`, 400, "8", badPhase},
		{"unknown id", "nope", `{"phase":"Running"}`, 404, "7", "Session with id='nope' not found"},
		{"unknown id, bad phase", "nope", `{"phase":"Bogus"}`, 404, "7", "Session with id='nope' not found"},
		{"unknown id, no field", "nope", `{}`, 400, "8", noField},
		{"unknown id, empty body", "nope", ``, 400, "17", "Invalid request format: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rc.do("PATCH", "/sessions/"+tc.id+"/status", tc.body)
			e := decodeError(t, body)
			match := e.Reason == tc.reason || strings.HasSuffix(tc.reason, ": ") && strings.HasPrefix(e.Reason, tc.reason)
			if code != tc.want || e.ID != tc.errID || !match {
				t.Fatalf("%d id %s %q, want %d id %s %q", code, e.ID, e.Reason, tc.want, tc.errID, tc.reason)
			}
		})
	}
	if got, err := gc.GetSession(t.Context(), id); err != nil || got.GetPhase() != "Completed" {
		t.Fatalf("a refused status write changed the phase to %q (%v)", got.GetPhase(), err)
	}
	// gRPC answers the same checks with the same reasons.
	for _, tc := range []struct {
		req    *ambientv1.UpdateSessionStatusRequest
		reason string
	}{
		{&ambientv1.UpdateSessionStatusRequest{Id: id}, noField},
		{&ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Bogus")}, badPhase},
		{&ambientv1.UpdateSessionStatusRequest{Id: "nope", Phase: proto.String("Running")}, "Session with id='nope' not found"},
	} {
		if _, err := gc.Sessions().UpdateSessionStatus(t.Context(), tc.req); status.Convert(err).Message() != tc.reason {
			t.Errorf("gRPC %v: %v, want %q", tc.req, err, tc.reason)
		}
	}

	noToken := restClient{t: t, base: srv.RESTURL()}
	code, ctype, body := noToken.send("PATCH", "/sessions/"+id+"/status", `{"phase":"Running"}`)
	if code != http.StatusUnauthorized || !strings.HasPrefix(ctype, "text/plain") || string(body) != "missing authorization header\n" {
		t.Fatalf("without a token: %d %q (%s)", code, body, ctype)
	}
}

// TestRESTUnauthorizedBodies: the real bearer middleware's 401 answers
// (pkg/middleware/bearer_token.go, read from the code; only the first is
// measured), http.Error's plain text; the token is read without surrounding
// white space; /healthcheck needs none.
func TestRESTUnauthorizedBodies(t *testing.T) {
	t.Parallel()
	srv := start(t)
	tests := []struct {
		name   string
		header string // Authorization; "" for none
		want   int
		body   string
	}{
		{"no header", "", 401, "missing authorization header\n"},
		{"another scheme", "Basic " + testToken, 401, "invalid authorization header format\n"},
		{"scheme only", "Bearer", 401, "invalid authorization header format\n"},
		{"blank token", "Bearer \u00a0", 401, "empty bearer token\n"},
		{"wrong token", "Bearer nope", 401, "invalid bearer token\n"},
		{"token in another case", "Bearer " + strings.ToUpper(testToken), 401, "invalid bearer token\n"},
		{"lower-case scheme", "bearer " + testToken, 200, ""},
		{"token with white space", "Bearer \u00a0 " + testToken + "\u00a0", 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.RESTURL()+"/api/ambient/v1/sessions", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, b, tc.want)
			}
			if tc.want != http.StatusUnauthorized {
				return
			}
			if ct := resp.Header.Get("Content-Type"); string(b) != tc.body || ct != "text/plain; charset=utf-8" ||
				resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("body %q (%s, nosniff %q), want http.Error's %q", b, ct, resp.Header.Get("X-Content-Type-Options"), tc.body)
			}
		})
	}
}

// TestRESTBodiesHaveGoJSONTypes: the real server decodes request bodies
// into Go structs with encoding/json (the generated OpenAPI models for a
// create, the PatchRequest structs for a PATCH and a status write; read
// from its code), so a number field takes a JSON number that fits its Go
// type and nothing else: no quoted number, no "NaN" or "Infinity", no
// exponent or fraction for an integer. Each is 400 id 17, as any body that
// does not decode; protojson, which memapi's objects are read with, would
// take them all. null still sets nothing.
func TestRESTBodiesHaveGoJSONTypes(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	code, body := rc.do("POST", "/sessions", `{"name":"s","timeout":null,"llm_temperature":1.5e-1,"llm_max_tokens":-1}`)
	if s := decodeSession(t, body); code != http.StatusCreated || s.Timeout != nil || s.GetLlmTemperature() != 0.15 || s.GetLlmMaxTokens() != -1 {
		t.Fatalf("create with Go-typed numbers: %d %s", code, body)
	}
	id := decodeSession(t, body).GetMetadata().GetId()
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/sessions", `{"name":"a","timeout":"5"}`},
		{"POST", "/sessions", `{"name":"a","timeout":1e2}`},
		{"POST", "/sessions", `{"name":"a","llm_max_tokens":5.0}`},
		{"POST", "/sessions", `{"name":"a","llm_temperature":"0.5"}`},
		{"POST", "/sessions", `{"name":"a","llm_temperature":"NaN"}`},
		{"POST", "/sessions", `{"name":"a","sdk_restart_count":"2"}`}, // read-only, but typed in the model
		{"PATCH", "/sessions/" + id, `{"timeout":"7"}`},
		{"PATCH", "/sessions/" + id, `{"llm_temperature":"Infinity"}`},
		{"PATCH", "/sessions/" + id + "/status", `{"sdk_restart_count":"3"}`},
	} {
		code, body := rc.do(tc.method, tc.path, tc.body)
		if code != http.StatusBadRequest {
			t.Errorf("%s %s %s: %d %s, want 400 id 17", tc.method, tc.path, tc.body, code, body)
			continue
		}
		if e := decodeError(t, body); e.ID != "17" || !strings.HasPrefix(e.Reason, "Invalid request format: ") {
			t.Errorf("%s %s %s: %s, want id 17", tc.method, tc.path, tc.body, body)
		}
	}
	if got, err := client(t, srv, testToken).GetSession(t.Context(), id); err != nil || got.Timeout != nil || got.GetLlmTemperature() != 0.15 || got.SdkRestartCount != nil {
		t.Fatalf("a refused body changed the session: %v (%v)", got, err)
	}
}
