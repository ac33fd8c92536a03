package memapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/memapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

const (
	aliceToken = "alice-token-0123456789"
	bobToken   = "bob-token-0123456789ab"
	adminToken = "admin-token-0123456789"
	carolToken = "carol-token-0123456789"
)

func users() []memapi.User {
	return []memapi.User{
		{Token: aliceToken, Name: "alice", Projects: []string{"proj-a"}},
		{Token: bobToken, Name: "bob", Projects: []string{"proj-b"}},
		{Token: carolToken, Name: "carol", Groups: []string{"team-b"}},
		{Token: adminToken, Name: "admin", Projects: []string{memapi.AllProjects}},
	}
}

// TestMultiUserREST: each user sees and changes only its projects' objects
// (direct grants and group_access grants); a denied GET is a 404 and a
// denied change a 403 with the real middleware's bodies; the service token
// and a "*" user see everything; created_by_user_id is the creator's name.
func TestMultiUserREST(t *testing.T) {
	t.Parallel()
	srv := start(t, memapi.WithUsers(users()))
	svc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	alice := restClient{t: t, base: srv.RESTURL(), token: aliceToken}
	bob := restClient{t: t, base: srv.RESTURL(), token: bobToken}
	carol := restClient{t: t, base: srv.RESTURL(), token: carolToken}
	admin := restClient{t: t, base: srv.RESTURL(), token: adminToken}

	code, b := alice.do("POST", "/sessions", `{"name":"a1","project_id":"proj-a"}`)
	if code != http.StatusCreated {
		t.Fatalf("alice creates in proj-a: %d %s", code, b)
	}
	a1 := decodeSession(t, b)
	if a1.GetCreatedByUserId() != "alice" {
		t.Fatalf("created_by_user_id %q, want alice", a1.GetCreatedByUserId())
	}
	code, b = svc.do("POST", "/sessions", `{"name":"b1","project_id":"proj-b"}`)
	if code != http.StatusCreated {
		t.Fatalf("service creates in proj-b: %d %s", code, b)
	}
	b1 := decodeSession(t, b)
	aID, bID := a1.GetMetadata().GetId(), b1.GetMetadata().GetId()

	tests := []struct {
		name   string
		c      restClient
		method string
		path   string
		body   string
		code   int
		denial string // the middleware's reason, when denied
	}{
		{name: "alice gets hers", c: alice, method: "GET", path: "/sessions/" + aID, code: 200},
		{name: "alice gets bob's", c: alice, method: "GET", path: "/sessions/" + bID, code: 404, denial: "Not Found"},
		{name: "alice gets an unknown id", c: alice, method: "GET", path: "/sessions/nope", code: 404, denial: "Not Found"},
		{name: "alice patches bob's", c: alice, method: "PATCH", path: "/sessions/" + bID, body: `{"prompt":"x"}`, code: 403, denial: "Forbidden"},
		{name: "alice starts bob's", c: alice, method: "POST", path: "/sessions/" + bID + "/start", code: 403, denial: "Forbidden"},
		{name: "alice stops bob's", c: alice, method: "POST", path: "/sessions/" + bID + "/stop", code: 403, denial: "Forbidden"},
		{name: "alice writes bob's status", c: alice, method: "PATCH", path: "/sessions/" + bID + "/status", body: `{"phase":"Running"}`, code: 403, denial: "Forbidden"},
		{name: "alice writes an unknown id's status", c: alice, method: "PATCH", path: "/sessions/nope/status", body: `{"phase":"Running"}`, code: 403, denial: "Forbidden"},
		{name: "alice deletes bob's", c: alice, method: "DELETE", path: "/sessions/" + bID, code: 403, denial: "Forbidden"},
		{name: "alice creates in proj-b", c: alice, method: "POST", path: "/sessions", body: `{"name":"x","project_id":"proj-b"}`, code: 403, denial: "Forbidden"},
		{name: "alice creates without project", c: alice, method: "POST", path: "/sessions", body: `{"name":"x"}`, code: 403, denial: "Forbidden"},
		{name: "alice patches hers", c: alice, method: "PATCH", path: "/sessions/" + aID, body: `{"prompt":"x"}`, code: 200},
		{name: "alice writes her status", c: alice, method: "PATCH", path: "/sessions/" + aID + "/status", body: `{"phase":"Running"}`, code: 200},
		{name: "bob gets his", c: bob, method: "GET", path: "/sessions/" + bID, code: 200},
		{name: "carol before her group is granted", c: carol, method: "GET", path: "/sessions/" + bID, code: 404, denial: "Not Found"},
		{name: "admin gets any", c: admin, method: "GET", path: "/sessions/" + aID, code: 200},
		{name: "service gets any", c: svc, method: "GET", path: "/sessions/" + aID, code: 200},
		{name: "wrong token", c: restClient{t: t, base: srv.RESTURL(), token: "not-a-user-0123456789"}, method: "GET", path: "/sessions/" + aID, code: 401},
	}
	for _, tc := range tests {
		code, b := tc.c.do(tc.method, tc.path, tc.body)
		if code != tc.code {
			t.Fatalf("%s: %d %s, want %d", tc.name, code, b, tc.code)
		}
		if tc.denial != "" {
			var e struct{ Kind, Reason string }
			if err := json.Unmarshal(b, &e); err != nil || e.Kind != "Error" || e.Reason != tc.denial {
				t.Fatalf("%s: body %s, want the middleware's %q", tc.name, b, tc.denial)
			}
		}
	}

	// A group in proj-b's group_access grants carol proj-b. The settings
	// need the project itself (the real foreign key).
	if code, b := svc.do("POST", "/projects", `{"name":"proj-b"}`); code != http.StatusCreated {
		t.Fatalf("project: %d %s", code, b)
	}
	if code, b := svc.do("POST", "/project_settings", `{"project_id":"proj-b","group_access":"[{\"group\":\"team-b\",\"role\":\"ambient-project-view\"}]"}`); code != http.StatusCreated {
		t.Fatalf("settings: %d %s", code, b)
	}
	if code, b := carol.do("GET", "/sessions/"+bID, ""); code != http.StatusOK {
		t.Fatalf("carol with team-b: %d %s", code, b)
	}

	lists := []struct {
		c    restClient
		want []string
	}{{alice, []string{"a1"}}, {bob, []string{"b1"}}, {carol, []string{"b1"}}, {admin, []string{"a1", "b1"}}, {svc, []string{"a1", "b1"}}}
	for _, l := range lists {
		code, b := l.c.do("GET", "/sessions", "")
		if code != http.StatusOK {
			t.Fatalf("list: %d %s", code, b)
		}
		var list struct {
			Total int `json:"total"`
			Items []struct {
				Name string `json:"name"`
			} `json:"items"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, it := range list.Items {
			names = append(names, it.Name)
		}
		slices.Sort(names) // database order: a1 was updated, so it moved to the end
		if strings.Join(names, ",") != strings.Join(l.want, ",") || list.Total != len(l.want) {
			t.Fatalf("list with %s: %v (total %d), want %v", l.c.token[:5], names, list.Total, l.want)
		}
	}
	// Settings are narrowed like the rest: alice does not see proj-b's.
	if code, b := alice.do("GET", "/project_settings", ""); code != http.StatusOK || strings.Contains(string(b), "proj-b") {
		t.Fatalf("alice lists settings: %d %s", code, b)
	}
}

// TestMultiUserGRPCNotNarrowed: over gRPC user tokens authenticate and are
// not narrowed, as on the real server (its gRPC handlers authorize
// nothing); an unknown token is still refused.
func TestMultiUserGRPCNotNarrowed(t *testing.T) {
	t.Parallel()
	srv := start(t, memapi.WithUsers(users()))
	svc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	code, b := svc.do("POST", "/sessions", `{"name":"b1","project_id":"proj-b"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	id := decodeSession(t, b).GetMetadata().GetId()
	if _, err := client(t, srv, aliceToken).GetSession(t.Context(), id); err != nil {
		t.Fatalf("alice over gRPC: %v", err)
	}
	if _, err := client(t, srv, "nobody-token-0123456789").GetSession(t.Context(), id); err == nil {
		t.Fatal("unknown token accepted over gRPC")
	}
}

func TestParseUsers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc string
		ok        bool
	}{
		{name: "valid", doc: `{"users":[{"token":"` + aliceToken + `","name":"alice","groups":["g"],"projects":["p"]}]}`, ok: true},
		{name: "short token", doc: `{"users":[{"token":"short","name":"alice"}]}`},
		{name: "token with blank", doc: `{"users":[{"token":"abcdefgh ijklmnopq","name":"alice"}]}`},
		{name: "repeated token", doc: `{"users":[{"token":"` + aliceToken + `","name":"a"},{"token":"` + aliceToken + `","name":"b"}]}`},
		{name: "no name", doc: `{"users":[{"token":"` + aliceToken + `"}]}`},
		{name: "unknown key", doc: `{"users":[{"token":"` + aliceToken + `","name":"a","role":"admin"}]}`},
		{name: "not json", doc: `users: []`},
	}
	for _, tc := range tests {
		_, err := memapi.ParseUsers(strings.NewReader(tc.doc))
		if (err == nil) != tc.ok {
			t.Fatalf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, memapi.ErrInvalidOption) {
			t.Fatalf("%s: %v does not wrap ErrInvalidOption", tc.name, err)
		}
	}
	path := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(path, []byte(tests[0].doc), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := memapi.LoadUsers(path)
	if err != nil || len(u) != 1 || u[0].Name != "alice" {
		t.Fatalf("LoadUsers: %v %+v", err, u)
	}
	// A user token equal to the service token is refused by New.
	if _, err := memapi.New(memapi.WithToken(aliceToken), memapi.WithUsers(u)); !errors.Is(err, memapi.ErrInvalidOption) {
		t.Fatalf("New with a user holding the service token: %v", err)
	}
}

// TestCreatedByIsTheCaller: the real server's create handlers (gRPC and
// REST) set created_by_user_id from the caller's identity and copy every
// other field of the request but that one, so nobody can create a session
// in someone else's name, and the service token creates sessions with
// none. memapi copying the request's value would let a test of the
// userContext mapping pass on data the real server never stores.
func TestCreatedByIsTheCaller(t *testing.T) {
	t.Parallel()
	srv := start(t, memapi.WithUsers(users()))
	claimed := proto.String("mallory")
	grpcAs := func(tok string) string {
		t.Helper()
		s, err := client(t, srv, tok).CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "g", ProjectId: proto.String("proj-a"), CreatedByUserId: claimed})
		if err != nil {
			t.Fatal(err)
		}
		return s.GetCreatedByUserId()
	}
	restAs := func(tok string) string {
		t.Helper()
		c := restClient{t: t, base: srv.RESTURL(), token: tok}
		code, b := c.do("POST", "/sessions", `{"name":"r","project_id":"proj-a","created_by_user_id":"mallory"}`)
		if code != http.StatusCreated {
			t.Fatalf("create: %d %s", code, b)
		}
		return decodeSession(t, b).GetCreatedByUserId()
	}
	for _, tc := range []struct {
		name, got, want string
	}{
		{"gRPC, alice", grpcAs(aliceToken), "alice"},
		{"gRPC, service token", grpcAs(testToken), ""},
		{"REST, alice", restAs(aliceToken), "alice"},
		{"REST, service token", restAs(testToken), ""},
	} {
		if tc.got != tc.want {
			t.Errorf("%s claiming mallory: created_by_user_id %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	// In-process calls have no caller: like the service token.
	s, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "i", CreatedByUserId: claimed})
	if err != nil {
		t.Fatal(err)
	}
	if s.CreatedByUserId != nil {
		t.Errorf("in-process create claiming mallory: created_by_user_id %q, want none", s.GetCreatedByUserId())
	}
}
