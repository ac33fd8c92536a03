package apiclient_test

import (
	"errors"
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/restapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func restClient(t *testing.T, url, token string) *apiclient.RESTClient {
	t.Helper()
	c, err := apiclient.NewREST(apiclient.RESTConfig{URL: url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRESTStartStop drives start and stop through the in-memory API's REST
// endpoints: allowed transitions return the session, refused ones the
// server's 409 and reason.
func TestRESTStartStop(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	gc := testenv.APIClient(t, srv)
	ctx := t.Context()
	s, err := gc.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	rc := restClient(t, srv.RESTURL(), srv.Token())

	got, err := rc.StartSession(ctx, id)
	if err != nil || got.GetPhase() != "Pending" || got.GetMetadata().GetId() != id || got.GetName() != "demo" {
		t.Fatalf("start: %v, %v", got, err)
	}
	_, err = rc.StartSession(ctx, id)
	var e *restapi.Error
	if !errors.As(err, &e) || e.Status != http.StatusConflict || e.ID != "6" ||
		e.Reason != `cannot start session in phase "Pending"; must be empty, Stopped, Failed, or Completed` {
		t.Fatalf("start again: %v, want the server's 409", err)
	}
	if apiclient.RESTStatus(err) != http.StatusConflict {
		t.Fatalf("RESTStatus = %d", apiclient.RESTStatus(err))
	}
	if got, err := rc.StopSession(ctx, id); err != nil || got.GetPhase() != "Stopping" {
		t.Fatalf("stop: %v, %v", got, err)
	}
	if _, err := gc.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Stopped")}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.StopSession(ctx, id); apiclient.RESTStatus(err) != http.StatusConflict {
		t.Fatalf("stop a Stopped session: %v, want 409", err)
	}
	if got, err := rc.StartSession(ctx, id); err != nil || got.GetPhase() != "Pending" {
		t.Fatalf("restart a Stopped session: %v, %v", got, err)
	}
	if _, err := rc.StartSession(ctx, "nope"); !errors.As(err, &e) || e.Status != http.StatusNotFound || e.Reason != "Session with id='nope' not found" {
		t.Fatalf("start unknown: %v", err)
	}
	// Without a token the real server answers a plain-text 401.
	if _, err := restClient(t, srv.RESTURL(), "").StartSession(ctx, id); !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Reason != "missing authorization header" {
		t.Fatalf("no token: %v", err)
	}
	// Nobody listening: no REST status, a transport error.
	if _, err := restClient(t, "http://127.0.0.1:1", "t").StartSession(ctx, id); err == nil || apiclient.RESTStatus(err) != 0 {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestNewRESTValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []apiclient.RESTConfig{
		{URL: ""}, {URL: "localhost:8000"}, {URL: "ftp://host"}, {URL: "http://"},
		{URL: "http://h", Timeout: -1}, {URL: "https://h", CAFile: "/nonexistent"},
	} {
		if _, err := apiclient.NewREST(cfg); !errors.Is(err, apiclient.ErrInvalidConfig) {
			t.Errorf("NewREST(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}
