package memapi_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The tests here hold memapi's REST bodies to the real server's handlers,
// read from their code (rh-trex's handlers.Handle and the ambient plugins'
// handlers, presenters and generated models): a body is read with
// encoding/json into a Go model, and a create keeps what the plugin's
// ConvertX copies.

// TestRESTCreateWithNullBody: rh-trex's handlers.Handle unmarshals the
// body into an interface holding the model; null clears the interface and
// leaves the model empty, so the generated model's required-property check
// never runs and the create goes on with empty fields: a session is made
// with name "", a project fails the name rule, settings name the project
// "", which the real server's foreign key (fk_project_settings_project_id)
// refuses: 500 id 9 (TestProjectSettingsProjectForeignKey).
func TestRESTCreateWithNullBody(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}

	code, body := rc.do("POST", "/sessions", "null")
	if code != http.StatusCreated {
		t.Fatalf("POST /sessions null: %d %s, want 201", code, body)
	}
	if s := decodeSession(t, body); s.GetName() != "" || s.GetLlmModel() != "sonnet" || s.GetKubeCrName() != s.GetMetadata().GetId() {
		t.Errorf("session from null: %s, want name \"\" and the server's defaults", body)
	}
	code, body = rc.do("POST", "/projects", " null\n")
	if e := decodeError(t, body); code != http.StatusBadRequest || e.ID != "8" || e.Reason != "project name must be between 2 and 63 characters" {
		t.Errorf("POST /projects null: %d %s, want 400 id 8 on the empty name", code, body)
	}
	code, body = rc.do("POST", "/project_settings", "null")
	wantREST(t, "POST /project_settings null", code, body, http.StatusInternalServerError, "9",
		`Unable to create ProjectSettings: ERROR: insert or update on table "project_settings" violates foreign key constraint "fk_project_settings_project_id" (SQLSTATE 23503)`)
}

// TestRESTCreateProjectKeepsStatus: ConvertProject copies status, which
// the gRPC CreateProjectRequest has no field for.
func TestRESTCreateProjectKeepsStatus(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	code, body := rc.do("POST", "/projects", `{"name":"p1","status":"archived","description":"d"}`)
	p := &ambientv1.Project{}
	if code != http.StatusCreated || restapi.UnmarshalObject(body, p) != nil || p.GetStatus() != "archived" || p.GetDescription() != "d" {
		t.Fatalf("create project with a status: %d %s", code, body)
	}
	got, err := client(t, srv, testToken).GetProject(t.Context(), "p1")
	if err != nil || got.GetStatus() != "archived" {
		t.Fatalf("stored project %v (%v), want status archived", got, err)
	}
}

// TestRESTCreateKeepsClientTimes: the plugins' ConvertX copy created_at and
// updated_at from the body, and gorm fills only the zero ones, so the
// client's times are kept (updated_at is the informer's change marker).
// ConvertSession copies each on its own; ConvertProject and
// ConvertProjectSettings read updated_at only beside created_at and
// dereference it unchecked: created_at alone panics, and with no recovery
// middleware net/http ends the connection without an answer.
func TestRESTCreateKeepsClientTimes(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	const (
		created = "2020-01-02T03:04:05.123456789Z"
		updated = "2021-06-07T08:09:10.987654321+02:00" // 06:09:10.987654321Z
		zero    = "0001-01-01T00:00:00Z"                // Go's zero time.Time: gorm fills it
	)
	ts := func(s string) *timestamppb.Timestamp {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return timestamppb.New(tm)
	}
	before := time.Now().Add(-time.Second)
	fresh := func(got *timestamppb.Timestamp) bool { return got.AsTime().After(before) }
	same := func(got *timestamppb.Timestamp, want string) bool { return got.AsTime().Equal(ts(want).AsTime()) }

	tests := []struct {
		name, path, body string
		// wantCreated, wantUpdated: a time in RFC 3339, or "" for the
		// server's now.
		wantCreated, wantUpdated string
	}{ // in order: settings name the projects made before them (the real foreign key)
		{"session, both", "/sessions", `{"name":"s","created_at":"` + created + `","updated_at":"` + updated + `"}`, created, updated},
		{"session, created_at only", "/sessions", `{"name":"s","created_at":"` + created + `"}`, created, ""},
		{"session, updated_at only", "/sessions", `{"name":"s","updated_at":"` + updated + `"}`, "", updated},
		{"session, Go's zero time", "/sessions", `{"name":"s","created_at":"` + zero + `","updated_at":"` + zero + `"}`, "", ""},
		{"session, null", "/sessions", `{"name":"s","created_at":null}`, "", ""},
		{"project, both", "/projects", `{"name":"p-both","created_at":"` + created + `","updated_at":"` + updated + `"}`, created, updated},
		{"project, updated_at only (not read)", "/projects", `{"name":"p-upd","updated_at":"` + updated + `"}`, "", ""},
		{"settings, both", "/project_settings", `{"project_id":"p-both","created_at":"` + created + `","updated_at":"` + updated + `"}`, created, updated},
		{"settings, updated_at only (not read)", "/project_settings", `{"project_id":"p-upd","updated_at":"` + updated + `"}`, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rc.do("POST", tc.path, tc.body)
			if code != http.StatusCreated {
				t.Fatalf("create: %d %s", code, body)
			}
			var obj restapi.Object
			switch tc.path {
			case "/sessions":
				obj = &ambientv1.Session{}
			case "/projects":
				obj = &ambientv1.Project{}
			default:
				obj = &ambientv1.ProjectSettings{}
			}
			if err := restapi.UnmarshalObject(body, obj); err != nil {
				t.Fatal(err)
			}
			md := obj.GetMetadata()
			for _, c := range []struct {
				what string
				got  *timestamppb.Timestamp
				want string
			}{{"created_at", md.GetCreatedAt(), tc.wantCreated}, {"updated_at", md.GetUpdatedAt(), tc.wantUpdated}} {
				if (c.want == "" && !fresh(c.got)) || (c.want != "" && !same(c.got, c.want)) {
					t.Errorf("%s %s, want %q (empty: the server's now)", c.what, c.got.AsTime().Format(time.RFC3339Nano), c.want)
				}
			}
		})
	}

	// The informer reads the change marker from lists and watches, which
	// carry microseconds: the client's time, truncated.
	code, body := rc.do("POST", "/sessions", `{"name":"listed","updated_at":"`+updated+`"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	got, err := client(t, srv, testToken).GetSession(t.Context(), decodeSession(t, body).GetMetadata().GetId())
	if want := ts("2021-06-07T06:09:10.987654Z"); err != nil || !got.GetMetadata().GetUpdatedAt().AsTime().Equal(want.AsTime()) {
		t.Errorf("stored updated_at %v (%v), want %s", got.GetMetadata().GetUpdatedAt().AsTime(), err, want.AsTime())
	}

	for _, path := range []string{"/projects", "/project_settings"} {
		body := `{"name":"p-half","created_at":"` + created + `"}`
		if path == "/project_settings" {
			body = `{"project_id":"p-half","created_at":"` + created + `"}`
		}
		if err := postExpectingNoAnswer(t, srv.RESTURL()+"/api/ambient/v1"+path, body); err != nil {
			t.Errorf("POST %s with created_at and no updated_at: %v", path, err)
		}
	}
	if _, projects, settings := srv.Len(); projects != 2 || settings != 2 {
		t.Errorf("%d projects and %d settings stored, want 2 each (the half-timed creates made none)", projects, settings)
	}
}

// postExpectingNoAnswer POSTs body to url on a connection of its own and
// returns an error unless the server ended the connection without an
// answer.
func postExpectingNoAnswer(t *testing.T, url, body string) error {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err == nil {
		b, _ := io.ReadAll(resp.Body) //nolint:errcheck // for the message only
		_ = resp.Body.Close()         // the answer is the failure
		return errors.New("answered " + resp.Status + ": " + string(b))
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		return errors.New("failed otherwise than by the connection's end: " + err.Error())
	}
	return nil
}

// TestRESTBodyOverOneMiB: the real server reads a body of any size; a
// session over NATS's 1 MiB payload limit is created and changed over
// REST. (Bigger ones are too, up to memapi's 64 MiB bound; this size keeps
// the test quick under -race.)
func TestRESTBodyOverOneMiB(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	prompt := strings.Repeat("p", 3<<19) // 1.5 MiB
	code, body := rc.do("POST", "/sessions", `{"name":"big","prompt":"`+prompt+`"}`)
	if code != http.StatusCreated {
		t.Fatalf("create with a 1.5 MiB prompt: %d %.200s", code, body)
	}
	s := decodeSession(t, body)
	if len(s.GetPrompt()) != len(prompt) {
		t.Fatalf("prompt of %d bytes stored, want %d", len(s.GetPrompt()), len(prompt))
	}
	code, body = rc.do("PATCH", "/sessions/"+s.GetMetadata().GetId(), `{"prompt":"`+prompt+`q"}`)
	if code != http.StatusOK || len(decodeSession(t, body).GetPrompt()) != len(prompt)+1 {
		t.Fatalf("patch with a 1.5 MiB prompt: %d %.200s", code, body)
	}
}

// TestRESTBodiesReadLikeEncodingJSON: keys match the models' fields
// case-insensitively (an exact match preferred, the last one winning),
// except for the generated models' required-property check, which looks
// for the exact key; invalid UTF-8 and lone surrogates become U+FFFD; the
// first unknown key or type error is the reason.
func TestRESTBodiesReadLikeEncodingJSON(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	creates := []struct {
		name, body         string
		wantName, wantText string // the session's name and prompt
	}{
		{"upper-case key", `{"name":"a","PROMPT":"hi"}`, "a", "hi"},
		{"mixed-case key", `{"name":"a","Prompt":"hi"}`, "a", "hi"},
		{"last key wins", `{"name":"a","NAME":"b","prompt":"x","prompt":"y"}`, "b", "y"},
		{"null leaves the name", `{"name":"a","name":null,"prompt":"x"}`, "a", "x"},
		{"null clears the prompt", `{"name":"a","prompt":"x","PROMPT":null}`, "a", ""},
		{"invalid UTF-8", "{\"name\":\"a\xff\",\"prompt\":\"b\xc3\"}", "a\uFFFD", "b\uFFFD"},
		{"lone surrogate", `{"name":"a","prompt":"\ud800x"}`, "a", "\uFFFDx"},
	}
	for _, tc := range creates {
		code, body := rc.do("POST", "/sessions", tc.body)
		if code != http.StatusCreated {
			t.Errorf("%s: %d %s, want 201", tc.name, code, body)
			continue
		}
		if s := decodeSession(t, body); s.GetName() != tc.wantName || s.GetPrompt() != tc.wantText {
			t.Errorf("%s: name %q prompt %q, want %q %q", tc.name, s.GetName(), s.GetPrompt(), tc.wantName, tc.wantText)
		}
	}

	refused := []struct{ name, body, reason string }{
		{"required key in capitals", `{"NAME":"a"}`, "Invalid request format: no value given for required property name"},
		{"first error: unknown key", `{"name":"a","color":"red","timeout":"x"}`, `Invalid request format: json: unknown field "color"`},
		{"first error: type", `{"name":"a","timeout":"x","color":"red"}`, "Invalid request format: json: cannot unmarshal string into Go struct field _Session.timeout of type int32"},
		{"case-folded key, wrong type", `{"name":"a","TIMEOUT":"x"}`, "Invalid request format: json: cannot unmarshal string into Go struct field _Session.timeout of type int32"},
	}
	for _, tc := range refused {
		code, body := rc.do("POST", "/sessions", tc.body)
		if e := decodeError(t, body); code != http.StatusBadRequest || e.ID != "17" || e.Reason != tc.reason {
			t.Errorf("%s: %d %s, want 400 id 17 %q", tc.name, code, body, tc.reason)
		}
	}

	code, body := rc.do("POST", "/sessions", `{"name":"s"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	id := decodeSession(t, body).GetMetadata().GetId()
	code, body = rc.do("PATCH", "/sessions/"+id, "{\"Prompt\":\"x\xff\",\"PROJECT_ID\":\"p\"}")
	if s := decodeSession(t, body); code != http.StatusOK || s.GetPrompt() != "x\uFFFD" || s.GetProjectId() != "" {
		t.Errorf("PATCH {\"Prompt\":...}: %d %s, want prompt x\uFFFD and project_id untouched (not in SessionPatchRequest)", code, body)
	}
	// \u017f (long s) folds to s, as in strings.EqualFold.
	code, body = rc.do("PATCH", "/sessions/"+id+"/status", `{"Phase":"Running","KUBE_NAMESPACE":"ns","\u017fdk_session_id":"sdk"}`)
	if s := decodeSession(t, body); code != http.StatusOK || s.GetPhase() != "Running" || s.GetKubeNamespace() != "ns" || s.GetSdkSessionId() != "sdk" {
		t.Errorf("PATCH status {\"Phase\":\"Running\",...}: %d %s, want phase Running, kube_namespace ns, sdk_session_id sdk", code, body)
	}
	code, body = rc.do("PATCH", "/projects/nope", `{"Name":5}`)
	if e := decodeError(t, body); code != http.StatusBadRequest || !bytes.Contains([]byte(e.Reason), []byte("Go struct field ProjectPatchRequest.name of type string")) {
		t.Errorf("PATCH project {\"Name\":5}: %d %s, want 400 id 17 on the name's type", code, body)
	}
}
