package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// harness runs ambientctl in-process against real endpoints.
type harness struct {
	t   *testing.T
	env map[string]string
}

func newHarness(t *testing.T, api *memapi.Server) *harness {
	t.Helper()
	h := &harness{t: t, env: map[string]string{}}
	if api != nil {
		h.env[EnvAPIAddr] = api.GRPCAddr()
		h.env[EnvRESTURL] = api.RESTURL()
		h.env[EnvToken] = api.Token()
	}
	return h
}

func (h *harness) run(args ...string) (stdout, stderr string, code int) {
	h.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code = Execute(ctx, args, &out, &errb, func(k string) (string, bool) { v, ok := h.env[k]; return v, ok })
	return out.String(), errb.String(), code
}

func (h *harness) mustRun(args ...string) string {
	h.t.Helper()
	out, errs, code := h.run(args...)
	if code != 0 {
		h.t.Fatalf("ambientctl %v: exit %d, stderr %q", args, code, errs)
	}
	return out
}

func TestProjectsAndSessions(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)

	out := h.mustRun("projects", "create", "team-a", "--display-name", "Team A")
	if !strings.Contains(out, "team-a") || !strings.Contains(out, "Team A") {
		t.Fatalf("projects create output %q", out)
	}
	if out := h.mustRun("projects", "list"); !strings.Contains(out, "team-a") {
		t.Fatalf("projects list output %q", out)
	}
	if _, errs, code := h.run("projects", "create", "team-a"); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("duplicate project: exit %d stderr %q", code, errs)
	}

	out = h.mustRun("sessions", "create", "demo", "-p", "team-a", "--prompt", "hi", "--label", "tier=gold", "--env", "A=1", "-o", "json")
	var created struct {
		Metadata struct{ ID string } `json:"metadata"`
		Labels   string              `json:"labels"`
		Env      string              `json:"environment_variables"`
		Model    string              `json:"llm_model"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	id := created.Metadata.ID
	if id == "" || created.Labels != `{"tier":"gold"}` || created.Env != `{"A":"1"}` || created.Model != "sonnet" {
		t.Fatalf("created session %+v", created)
	}
	if out := h.mustRun("sessions", "list", "-p", "team-a"); !strings.Contains(out, id) || !strings.Contains(out, "demo") {
		t.Fatalf("sessions list output %q", out)
	}
	if out := h.mustRun("sessions", "list", "-p", "other"); strings.Contains(out, id) {
		t.Fatalf("project filter ignored: %q", out)
	}
	var got struct{ Prompt string }
	if out := h.mustRun("sessions", "get", id); json.Unmarshal([]byte(out), &got) != nil || got.Prompt != "hi" {
		t.Fatalf("sessions get output %q", out)
	}

	if out := h.mustRun("sessions", "start", id); !strings.Contains(out, "Pending") {
		t.Fatalf("start output %q", out)
	}
	if got := getSession(t, api, id).GetPhase(); got != "Pending" {
		t.Fatalf("phase after start = %q, want Pending", got)
	}
	if _, errs, code := h.run("sessions", "start", id); code != 1 ||
		!strings.Contains(errs, `refused by the API: cannot start session in phase "Pending"; must be empty, Stopped, Failed, or Completed`) {
		t.Fatalf("start again: exit %d stderr %q", code, errs)
	}
	h.mustRun("sessions", "stop", id)
	if got := getSession(t, api, id).GetPhase(); got != "Stopping" {
		t.Fatalf("phase after stop = %q, want Stopping", got)
	}
	if _, errs, code := h.run("sessions", "stop", id); code != 1 ||
		!strings.Contains(errs, `refused by the API: cannot stop session in phase "Stopping"; must be Running, Creating, or Pending`) {
		t.Fatalf("stop again: exit %d stderr %q", code, errs)
	}
	if out := h.mustRun("sessions", "delete", id); !strings.Contains(out, "deleted") {
		t.Fatalf("delete output %q", out)
	}
	if _, errs, code := h.run("sessions", "get", id); code != 1 || !strings.Contains(errs, "not found") {
		t.Fatalf("get deleted: exit %d stderr %q", code, errs)
	}
	if _, errs, code := h.run("sessions", "delete", "nope"); code != 1 || !strings.Contains(errs, "not found") {
		t.Fatalf("delete unknown: exit %d stderr %q", code, errs)
	}
}

// TestStartRunningSessionFails is issue 11's point 4: `sessions start` on a
// Running session goes through the API's guard and fails with the server's
// reason, leaving the phase alone (it used to set Pending under a live
// runner).
func TestStartRunningSessionFails(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	out := h.mustRun("sessions", "create", "busy", "-o", "json")
	var created struct{ Metadata struct{ ID string } }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Metadata.ID == "" {
		t.Fatalf("decode %q: %v", out, err)
	}
	id := created.Metadata.ID
	if _, err := testenv.APIClient(t, api).UpdateSessionStatus(context.Background(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Running")}); err != nil {
		t.Fatal(err)
	}
	_, errs, code := h.run("sessions", "start", id)
	want := `start session "` + id + `": refused by the API: cannot start session in phase "Running"; must be empty, Stopped, Failed, or Completed`
	if code != 1 || strings.TrimSpace(errs) != "ambientctl: "+want {
		t.Fatalf("start Running: exit %d stderr %q, want exit 1 and %q", code, errs, want)
	}
	if got := getSession(t, api, id).GetPhase(); got != "Running" {
		t.Fatalf("phase after a refused start = %q, want Running", got)
	}
	if _, errs, code := h.run("sessions", "start", "nope"); code != 1 || !strings.Contains(errs, "Session with id='nope' not found") {
		t.Fatalf("start unknown: exit %d stderr %q", code, errs)
	}
	// Stop works from Running, then start again from Stopped.
	h.mustRun("sessions", "stop", id)
	if _, err := testenv.APIClient(t, api).UpdateSessionStatus(context.Background(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Stopped")}); err != nil {
		t.Fatal(err)
	}
	h.mustRun("sessions", "start", id)
	if got := getSession(t, api, id).GetPhase(); got != "Pending" {
		t.Fatalf("phase after restart = %q, want Pending", got)
	}
}

// TestRESTURLSources: --rest beats AMBIENT_API_URL, which beats the
// upstream AMBIENT_API_SERVER_URL; a bad URL is a usage error, an absent
// server a clear one.
func TestRESTURLSources(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	s, err := testenv.APIClient(t, api).CreateSession(context.Background(), &ambientv1.CreateSessionRequest{Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()

	delete(h.env, EnvRESTURL)
	h.env[EnvServerURL] = api.RESTURL()
	h.mustRun("sessions", "start", id) // the upstream name alone works

	h.env[EnvRESTURL] = "http://127.0.0.1:1"
	if _, errs, code := h.run("sessions", "stop", id, "--timeout", "3s"); code != 1 || !strings.Contains(errs, "cannot reach the ambient API's REST interface at http://127.0.0.1:1") {
		t.Fatalf("AMBIENT_API_URL must win: exit %d stderr %q", code, errs)
	}
	h.mustRun("sessions", "stop", id, "--rest", api.RESTURL())
	if _, errs, code := h.run("sessions", "stop", id, "--rest", "localhost:8000"); code != 2 || !strings.Contains(errs, "--rest") {
		t.Fatalf("bad --rest: exit %d stderr %q", code, errs)
	}
	h.env[EnvToken] = "wrong"
	if _, errs, code := h.run("sessions", "start", id, "--rest", api.RESTURL()); code != 1 || !strings.Contains(errs, "rejected the token") {
		t.Fatalf("wrong token: exit %d stderr %q", code, errs)
	}
}

func getSession(t *testing.T, api *memapi.Server, id string) *ambientv1.Session {
	t.Helper()
	s, err := testenv.APIClient(t, api).GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSettingsSet(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	h.mustRun("projects", "create", "team-a") // settings need their project (the API's foreign key)
	h.mustRun("settings", "set", "team-a", "--group-access", "devs=ambient-project-edit")
	h.mustRun("settings", "set", "team-a", "--group-access", "devs=ambient-project-view", "--group-access", "ops=ambient-project-admin")
	all, err := testenv.APIClient(t, api).ListProjectSettings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		t.Fatalf("got %d settings objects, want 1 (set must update, not duplicate)", len(all))
	}
	want := `[{"group":"devs","role":"ambient-project-view"},{"group":"ops","role":"ambient-project-admin"}]`
	if got := all[0].GetGroupAccess(); got != want {
		t.Fatalf("group_access = %s, want %s", got, want)
	}
	if _, errs, code := h.run("settings", "set", "team-a", "--group-access", "bad"); code != 2 || !strings.Contains(errs, "GROUP=ROLE") {
		t.Fatalf("bad flag: exit %d stderr %q", code, errs)
	}
	// The API refuses settings of a missing project with its foreign key's
	// 500; the CLI says what to do instead.
	if _, errs, code := h.run("settings", "set", "team-none", "--group-access", "devs=ambient-project-edit"); code != 1 ||
		!strings.Contains(errs, `set settings of project "team-none": no such project (create it first: ambientctl projects create team-none)`) {
		t.Fatalf("missing project: exit %d stderr %q", code, errs)
	}
}

func TestHelpfulErrors(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	h.env[EnvToken] = "wrong"
	if _, errs, code := h.run("sessions", "list"); code != 1 || !strings.Contains(errs, "rejected the token") {
		t.Fatalf("wrong token: exit %d stderr %q", code, errs)
	}
	down := newHarness(t, nil)
	down.env[EnvAPIAddr] = "127.0.0.1:1"
	if _, errs, code := down.run("sessions", "list", "--timeout", "3s"); code != 1 || !strings.Contains(errs, "cannot reach the ambient API") {
		t.Fatalf("unreachable API: exit %d stderr %q", code, errs)
	}
	if _, _, code := h.run("sessions", "frobnicate-flag", "--nope"); code != 2 {
		t.Fatalf("unknown flag: exit %d, want 2", code)
	}
	tlsEnv := newHarness(t, api)
	tlsEnv.env[EnvUseTLS] = "yes"
	if _, errs, code := tlsEnv.run("sessions", "list"); code != 2 || !strings.Contains(errs, EnvUseTLS) {
		t.Fatalf("%s=yes: exit %d stderr %q, want a usage error naming it", EnvUseTLS, code, errs)
	}
	tlsEnv.env[EnvUseTLS] = "FALSE" // strconv.ParseBool forms are accepted
	tlsEnv.mustRun("sessions", "list")
}

func TestEventsTail(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := context.Background()
	if _, err := bus.EnsureEventsStream(ctx, js, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	sess := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "s1", UpdatedAt: timestamppb.New(at)}, Name: "n", ProjectId: proto.String("p1"), Phase: proto.String("Running")}
	proj := &ambientv1.Project{Metadata: &ambientv1.ObjectReference{Id: "p1", UpdatedAt: timestamppb.New(at)}, Name: "p1"}
	for _, ev := range []*eventsv1.ResourceEvent{
		events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, proj, nil, at),
		events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, sess, nil, at),
	} {
		msg, err := events.NewMsg(ctx, events.SubjectPrefix, ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarness(t, nil)
	h.env[EnvNATSURL] = srv.ClientURL()

	out := h.mustRun("events", "tail", "--all", "--count", "2")
	if !strings.Contains(out, "ADDED") || !strings.Contains(out, "projects") || !strings.Contains(out, "p1/s1") || !strings.Contains(out, "phase=Running") {
		t.Fatalf("tail output %q", out)
	}
	out = h.mustRun("events", "tail", "--all", "--count", "1", "--resource", "sessions", "--json")
	var got struct {
		Type     string `json:"type"`
		ObjectID string `json:"object_id"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &got); err != nil || got.Type != "EVENT_TYPE_ADDED" || got.ObjectID != "s1" {
		t.Fatalf("tail --json output %q: %v", out, err)
	}
	// -o json is --json.
	if out := h.mustRun("events", "tail", "--all", "--count", "1", "-o", "json"); !strings.HasPrefix(out, "{") || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("tail -o json output %q", out)
	}
	if _, errs, code := h.run("events", "tail", "--resource", "pods"); code != 2 || !strings.Contains(errs, "--resource") {
		t.Fatalf("bad resource: exit %d stderr %q", code, errs)
	}
}

func TestChat(t *testing.T) {
	var gotBody runAgentInput
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sessions/s1/agui/run":
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"session not found"}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer secret" || r.Header.Get("Accept") != "text/event-stream" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"unauthorized"}`)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&gotBody); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, f := range []string{
			`{"type":"RUN_STARTED"}`, `{"type":"TEXT_MESSAGE_START"}`,
			`{"type":"TEXT_MESSAGE_CONTENT","delta":"hello "}`, ": ping",
			`{"type":"TEXT_MESSAGE_CONTENT","delta":"world"}`, `{"type":"TEXT_MESSAGE_END"}`, `{"type":"RUN_FINISHED"}`,
		} {
			if strings.HasPrefix(f, ":") {
				fmt.Fprintf(w, "%s\n\n", f)
			} else {
				fmt.Fprintf(w, "data: %s\n\n", f)
			}
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(proxy.Close)
	h := newHarness(t, nil)
	h.env[EnvProxyURL] = proxy.URL
	h.env[EnvProxyToken] = "secret"

	out := h.mustRun("chat", "s1", "hello world")
	if out != "hello world\n" {
		t.Fatalf("chat output %q", out)
	}
	if len(gotBody.Messages) != 1 || gotBody.Messages[0].Content != "hello world" || gotBody.Messages[0].Role != "user" {
		t.Fatalf("run input %+v", gotBody)
	}
	if _, errs, code := h.run("chat", "nope", "x"); code != 1 || !strings.Contains(errs, "no runner registered") {
		t.Fatalf("unknown session: exit %d stderr %q", code, errs)
	}
	h.env[EnvProxyToken] = "wrong"
	if _, errs, code := h.run("chat", "s1", "x"); code != 1 || !strings.Contains(errs, "refused") {
		t.Fatalf("bad token: exit %d stderr %q", code, errs)
	}
}

// TestFollow: follow reads the session's events stream (GET
// /agui/events) and prints every run's text, failed runs included, until
// --runs runs ended; the stream itself never ends.
func TestFollow(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/sessions/s1/agui/events" || r.Header.Get("Accept") != "text/event-stream" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"session not found"}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, f := range []string{
			`{"type":"RUN_STARTED"}`, `{"type":"TEXT_MESSAGE_START"}`, `{"type":"TEXT_MESSAGE_CONTENT","delta":"hello"}`,
			`{"type":"TEXT_MESSAGE_END"}`, `{"type":"RUN_FINISHED"}`,
			`{"type":"RUN_STARTED"}`, `{"type":"RUN_ERROR","message":"boom"}`,
			`{"type":"RUN_STARTED"}`, `{"type":"TEXT_MESSAGE_CONTENT","delta":"not printed"}`,
		} {
			fmt.Fprintf(w, "data: %s\n\n", f)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done() // an events stream stays open
	}))
	t.Cleanup(proxy.Close)
	h := newHarness(t, nil)
	h.env[EnvProxyURL] = proxy.URL
	if out := h.mustRun("follow", "s1", "--runs", "2"); out != "hello\nrun failed: boom\n" {
		t.Fatalf("follow output %q", out)
	}
	if _, errs, code := h.run("follow", "nope"); code != 1 || !strings.Contains(errs, "no runner registered") {
		t.Fatalf("unknown session: exit %d stderr %q", code, errs)
	}
}

func TestTally(t *testing.T) {
	tally := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tally" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"resources":{"sessions":{"added":3,"modified":2,"deleted":1,"ids":3,"last_event_time":"2026-11-25T12:00:00Z"}}}`)
	}))
	t.Cleanup(tally.Close)
	h := newHarness(t, nil)
	h.env[EnvTallyURL] = tally.URL
	out := h.mustRun("tally")
	if !strings.Contains(out, "sessions") || !strings.Contains(out, "2026-11-25T12:00:00Z") {
		t.Fatalf("tally output %q", out)
	}
	fields := strings.Fields(strings.Split(out, "\n")[1])
	if strings.Join(fields[:5], " ") != "sessions 3 2 1 3" {
		t.Fatalf("sessions row %q", fields)
	}
	if out := h.mustRun("tally", "-o", "json"); !strings.HasPrefix(out, `{"resources"`) {
		t.Fatalf("tally json %q", out)
	}
}
