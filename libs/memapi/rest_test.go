package memapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

type restClient struct {
	t     *testing.T
	base  string
	token string
}

// do sends a request and returns the status and body.
func (c restClient) do(method, path, body string) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+"/api/ambient/v1"+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNoContent && resp.Header.Get("Content-Type") != "application/json" {
		c.t.Errorf("%s %s: Content-Type %q", method, path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, b
}

func decodeSession(t *testing.T, b []byte) *ambientv1.Session {
	t.Helper()
	s := &ambientv1.Session{}
	if err := protojson.Unmarshal(b, s); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return s
}

func TestRESTSessions(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	gc := client(t, srv, testToken)
	w, err := gc.WatchSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if srv.Watchers() != 1 {
			return errors.New("watch not registered")
		}
		return nil
	})
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

	code, body := rc.do("POST", "/sessions", `{"name":"demo","prompt":"hello","project_id":"p1"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	// Responses use proto (snake_case) names.
	if !bytes.Contains(body, []byte(`"llm_model":"sonnet"`)) || !bytes.Contains(body, []byte(`"created_at"`)) {
		t.Errorf("create body not snake_case protojson: %s", body)
	}
	s := decodeSession(t, body)
	id := s.GetMetadata().GetId()
	nextEvent(ambientv1.EventType_EVENT_TYPE_CREATED, id)

	code, body = rc.do("GET", "/sessions/"+id, "")
	if code != http.StatusOK || decodeSession(t, body).GetPrompt() != "hello" {
		t.Fatalf("get: %d %s", code, body)
	}
	code, body = rc.do("PATCH", "/sessions/"+id, `{"prompt":"bye"}`)
	if code != http.StatusOK || decodeSession(t, body).GetPrompt() != "bye" {
		t.Fatalf("patch: %d %s", code, body)
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
	code, body = rc.do("PATCH", "/sessions/"+id+"/status", `{"phase":"Running","kube_namespace":"ns"}`)
	if s := decodeSession(t, body); code != http.StatusOK || s.GetPhase() != "Running" || s.GetKubeNamespace() != "ns" {
		t.Fatalf("status: %d %s", code, body)
	}
	nextEvent(ambientv1.EventType_EVENT_TYPE_UPDATED, id)

	code, body = rc.do("GET", "/sessions?page=1&size=10", "")
	list := &ambientv1.ListSessionsResponse{}
	if code != http.StatusOK {
		t.Fatalf("list: %d %s", code, body)
	}
	if err := protojson.Unmarshal(body, list); err != nil || len(list.GetItems()) != 1 || list.GetMetadata().GetTotal() != 1 {
		t.Fatalf("list: %s (%v)", body, err)
	}

	code, _ = rc.do("DELETE", "/sessions/"+id, "")
	if code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	nextEvent(ambientv1.EventType_EVENT_TYPE_DELETED, id)
	code, body = rc.do("GET", "/sessions/"+id, "")
	if code != http.StatusNotFound {
		t.Fatalf("get deleted: %d %s", code, body)
	}
}

func TestRESTErrors(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	if code, body := rc.do("POST", "/projects", `{"name":"taken"}`); code != http.StatusCreated {
		t.Fatalf("seed: %d %s", code, body)
	}
	tests := []struct {
		name         string
		token        string
		method, path string
		body         string
		want         int
	}{
		{"missing token", "", "GET", "/sessions", "", http.StatusUnauthorized},
		{"wrong token", "nope", "GET", "/projects", "", http.StatusUnauthorized},
		{"wrong token on write", "nope", "POST", "/projects", `{"name":"x"}`, http.StatusUnauthorized},
		{"unknown session", testToken, "GET", "/sessions/nope", "", http.StatusNotFound},
		{"unknown project", testToken, "PATCH", "/projects/nope", `{"description":"d"}`, http.StatusNotFound},
		{"start unknown", testToken, "POST", "/sessions/nope/start", "", http.StatusNotFound},
		{"duplicate project", testToken, "POST", "/projects", `{"name":"taken"}`, http.StatusConflict},
		{"bad json", testToken, "POST", "/sessions", `{"name":`, http.StatusBadRequest},
		{"unknown field", testToken, "POST", "/sessions", `{"name":"a","color":"red"}`, http.StatusBadRequest},
		{"wrong type", testToken, "POST", "/sessions", `{"name":"a","timeout":"soon"}`, http.StatusBadRequest},
		{"missing name", testToken, "POST", "/sessions", `{}`, http.StatusBadRequest},
		{"invalid phase", testToken, "PATCH", "/sessions/x/status", `{"phase":"Exploded"}`, http.StatusBadRequest},
		{"bad page", testToken, "GET", "/sessions?page=abc", "", http.StatusBadRequest},
		{"unknown route", testToken, "GET", "/widgets", "", http.StatusNotFound},
		{"wrong method", testToken, "PUT", "/sessions/x", `{}`, http.StatusMethodNotAllowed},
		{"unknown route without token", "", "GET", "/widgets", "", http.StatusUnauthorized},
		{"delete unknown is fine", testToken, "DELETE", "/project_settings/nope", "", http.StatusNoContent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := restClient{t: t, base: srv.RESTURL(), token: tc.token}
			code, body := c.do(tc.method, tc.path, tc.body)
			if code != tc.want {
				t.Fatalf("status %d, want %d (%s)", code, tc.want, body)
			}
			if code == http.StatusNoContent {
				return
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
				t.Errorf("body %s: want {\"error\": ...} (%v)", body, err)
			}
		})
	}
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
	code, body := rc.do("POST", "/projects", `{"name":"p1","displayName":"P One"}`)
	if code != http.StatusCreated {
		t.Fatalf("create project: %d %s", code, body)
	}
	p := &ambientv1.Project{}
	if err := protojson.Unmarshal(body, p); err != nil || p.GetMetadata().GetId() != "p1" || p.GetDisplayName() != "P One" {
		t.Fatalf("project %s (%v)", body, err)
	}
	code, body = rc.do("POST", "/project_settings", `{"project_id":"p1","group_access":"[{\"group\":\"g\",\"role\":\"edit\"}]"}`)
	if code != http.StatusCreated {
		t.Fatalf("create settings: %d %s", code, body)
	}
	ps := &ambientv1.ProjectSettings{}
	if err := protojson.Unmarshal(body, ps); err != nil || ps.GetProjectId() != "p1" {
		t.Fatalf("settings %s (%v)", body, err)
	}
	code, body = rc.do("PATCH", "/project_settings/"+ps.GetMetadata().GetId(), `{"repositories":"[]"}`)
	if err := protojson.Unmarshal(body, ps); code != http.StatusOK || err != nil || ps.GetRepositories() != "[]" || ps.GetGroupAccess() == "" {
		t.Fatalf("patch settings: %d %s", code, body)
	}
	for _, path := range []string{"/projects", "/project_settings"} {
		code, body = rc.do("GET", path, "")
		if code != http.StatusOK || !bytes.Contains(body, []byte(`"total":1`)) {
			t.Errorf("list %s: %d %s", path, code, body)
		}
	}
	if code, _ = rc.do("DELETE", "/projects/p1", ""); code != http.StatusNoContent {
		t.Errorf("delete project: %d", code)
	}
	if code, _ = rc.do("GET", "/projects/p1", ""); code != http.StatusNotFound {
		t.Errorf("get deleted project: %d", code)
	}
	// The name is free again.
	if code, body = rc.do("POST", "/projects", `{"name":"p1"}`); code != http.StatusCreated {
		t.Errorf("recreate project: %d %s", code, body)
	}
}
