package app_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestRunnersGetTheOperatorsSessionEnvironment: a real runner process of a
// real service gets what the platform's operator gives a runner pod and
// runner-manager knows from the session: PARENT_SESSION_ID for a
// continuation (lower(parent_session_id), the CR annotation kube-reconciler
// writes; unset for a session with no parent), USER_ID (created_by_user_id,
// the user who created it; unset when the service token did) and
// AGENTIC_SESSION_NAMESPACE (the project); and the session's
// environment_variables, applied last as the operator applies them
// (LLM_MODEL replaced, a new name added) except runner-manager's own
// (SESSION_ID, AGUI_PORT, BACKEND_API_URL keep its values: the runner
// still answers its health check on its port). A session whose
// environment_variables are malformed is Failed with reason
// InvalidEnvironmentVariables and no runner, and blocks nothing: the
// sessions created after it run. Before, none of these variables reached
// the runner.
func TestRunnersGetTheOperatorsSessionEnvironment(t *testing.T) {
	t.Parallel()
	const userToken = "alice-token-0123456789"
	w := newWorld(t, memapi.WithUsers([]memapi.User{{Token: userToken, Name: "alice", Projects: []string{"proj"}}}))
	alice := testenv.APIClient(t, w.api, func(c *apiclient.Config) { c.Token = userToken })
	svc := w.start("rm-env", 3, "RUNNER_BACKEND_API_URL=http://127.0.0.1:8080/api")
	ctx := t.Context()

	bad, err := w.client.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "bad env", ProjectId: proto.String("proj"),
		EnvironmentVariables: proto.String(`{"MY_FLAG":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	parent := w.create("Parent")
	child, err := alice.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "Continuation", ProjectId: proto.String("proj"),
		ParentSessionId: proto.String(parent), Prompt: proto.String("go on"),
		EnvironmentVariables: proto.String(`{"LLM_MODEL":"user-model","MY_FLAG":"on","SESSION_ID":"someone-else","AGUI_PORT":"1","BACKEND_API_URL":"http://elsewhere.example"}`)})
	if err != nil {
		t.Fatal(err)
	}
	childID := child.GetMetadata().GetId()
	if child.GetCreatedByUserId() != "alice" {
		t.Fatalf("created_by_user_id = %q, want alice", child.GetCreatedByUserId())
	}
	w.waitAll([]string{parent, childID}, "Running", 30*time.Second)

	env := w.runnerEnv(childID)
	rec, err := w.record(childID)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"PARENT_SESSION_ID": strings.ToLower(parent), "USER_ID": "alice", "AGENTIC_SESSION_NAMESPACE": "proj", "PROJECT_NAME": "proj",
		"LLM_MODEL": "user-model", "MY_FLAG": "on",
		"SESSION_ID": childID, "AGUI_PORT": strconv.Itoa(rec.Port), "BACKEND_API_URL": "http://127.0.0.1:8080/api",
	} {
		if env[k] != want {
			t.Errorf("continuation: %s = %q, want %q", k, env[k], want)
		}
	}
	env = w.runnerEnv(parent)
	for _, k := range []string{"PARENT_SESSION_ID", "USER_ID", "MY_FLAG"} {
		if v, ok := env[k]; ok {
			t.Errorf("parent: %s = %q, want unset", k, v)
		}
	}
	if env["AGENTIC_SESSION_NAMESPACE"] != "proj" {
		t.Errorf("parent: AGENTIC_SESSION_NAMESPACE = %q, want proj", env["AGENTIC_SESSION_NAMESPACE"])
	}

	w.checkRefusedAtStart(bad.GetMetadata().GetId(), svc.root, "InvalidEnvironmentVariables",
		"field environment_variables: not a JSON object of strings")
}
