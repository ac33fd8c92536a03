package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestTableShowsValuesOnOneLine: the API takes any string as a session's
// name or a project's display name; a line break, tab or escape sequence
// in one must neither add a row (a name could forge a "Running" session
// of another project) nor reach the terminal as a control sequence. Such
// values are shown quoted; plain unicode is shown as it is.
func TestTableShowsValuesOnOneLine(t *testing.T) {
	api := testenv.API(t)
	c := testenv.APIClient(t, api)
	ctx := context.Background()
	forged := "x\nFORGED-ID\tfake\tteam-a\tRunning"
	if _, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: forged, ProjectId: proto.String("team-a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "grüße 日本"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "team-a", DisplayName: proto.String("\x1b]0;pwned\x07Team\x1b[2J")}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, api)

	out := h.mustRun("sessions", "list")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || strings.Contains(out, "FORGED-ID ") || !strings.Contains(out, `"x\nFORGED-ID\tfake\tteam-a\tRunning"`) || !strings.Contains(out, "grüße 日本") {
		t.Errorf("sessions list: %d lines, want a header and 2 rows, the forged name quoted:\n%s", len(lines), out)
	}
	out = h.mustRun("projects", "list")
	if strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `"\x1b]0;pwned\aTeam\x1b[2J"`) {
		t.Errorf("projects list prints control characters: %q", out)
	}
	// JSON keeps the values exact.
	var got []struct{ Name string }
	if err := json.Unmarshal([]byte(h.mustRun("sessions", "list", "-o", "json")), &got); err != nil || len(got) != 2 || got[0].Name != forged {
		t.Errorf("sessions list -o json: %+v, %v", got, err)
	}
}

// TestListJSONIsOneDocument: `list -o json` prints one JSON array, also
// when nothing is listed (it printed the objects one after the other, not
// a document json.load or `jq length` can read, and nothing at all for an
// empty list), like `dlq list -o json`. One object (create) stays an
// object.
func TestListJSONIsOneDocument(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	for _, args := range [][]string{{"sessions", "list"}, {"projects", "list"}} {
		if out := h.mustRun(append(args, "-o", "json")...); strings.TrimSpace(out) != "[]" {
			t.Errorf("%v -o json with nothing to list: %q, want []", args, out)
		}
	}
	h.mustRun("projects", "create", "p1")
	h.mustRun("projects", "create", "p2")
	h.mustRun("sessions", "create", "s1", "-p", "p1")
	h.mustRun("sessions", "create", "s2", "-p", "p2")
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"sessions", "list"}, 2},
		{[]string{"sessions", "list", "-p", "p2"}, 1},
		{[]string{"sessions", "list", "-p", "none"}, 0},
		{[]string{"projects", "list"}, 2},
	} {
		out := h.mustRun(append(tc.args, "-o", "json")...)
		var items []map[string]any
		if err := json.Unmarshal([]byte(out), &items); err != nil || len(items) != tc.want {
			t.Errorf("%v -o json: %d items, %v; want one array of %d:\n%s", tc.args, len(items), err, tc.want, out)
		}
	}
	var one map[string]any
	if err := json.Unmarshal([]byte(h.mustRun("projects", "create", "p3", "-o", "json")), &one); err != nil || one["name"] != "p3" {
		t.Errorf("projects create -o json: %v, %v", one, err)
	}
}

// TestRESTAnswerUnreadable: when the server did the start but its answer
// cannot be read (a newer server changed a field's type, a proxy's page),
// the user is told so, not that the API "cannot be reached" (which asks
// them to start it again).
func TestRESTAnswerUnreadable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"s1","kind":"Session","name":"n","timeout":"soon"}`)
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, nil)
	h.env[EnvRESTURL] = srv.URL
	_, stderr, code := h.run("sessions", "start", "s1")
	if code != 1 || strings.Contains(stderr, "cannot reach") || !strings.Contains(stderr, "answered, but its answer could not be read") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// TestAPIErrorsShowTheServersMessage: a refused call shows what was done,
// how the API refused it and the server's own message, once (it repeated
// the call and the gRPC code: `create project "Bad_Name": invalid
// argument: create project "Bad_Name": rpc error: code = InvalidArgument
// desc = ...`).
func TestAPIErrorsShowTheServersMessage(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"projects", "create", "Bad_Name"}, `create project "Bad_Name": invalid argument: project name must match DNS-1123 label format`},
		{[]string{"sessions", "get", "nope"}, `get session "nope": not found: `},
		{[]string{"sessions", "list", "--token", "wrong"}, "list sessions: the ambient API rejected the token (set --token or $AMBIENT_API_TOKEN): "},
	} {
		_, stderr, code := h.run(tc.args...)
		if code != 1 || !strings.HasPrefix(stderr, "ambientctl: "+tc.want) || strings.Contains(stderr, "rpc error") || strings.Count(stderr, tc.args[1]) > 1 {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and %q with the server's message once", tc.args, code, stderr, tc.want)
		}
	}
}
