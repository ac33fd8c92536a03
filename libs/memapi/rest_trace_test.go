package memapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/telemetry"
)

// TestRESTSpansNameRouteAndObject: every REST request is a server span
// named after its route, and one whose path names an object carries it
// (ambient.object_id, for a project also ambient.project_id), so a search
// for a session finds its reads and writes over REST too.
func TestRESTSpansNameRouteAndObject(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() {
		if err := tp.Shutdown(context.WithoutCancel(t.Context())); err != nil {
			t.Error(err)
		}
	})
	srv := start(t, memapi.WithTracerProvider(tp))
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	if code, b := rc.do(http.MethodPost, "/projects", `{"name":"p1"}`); code != http.StatusCreated {
		t.Fatalf("create project: %d %s", code, b)
	}
	code, b := rc.do(http.MethodPost, "/sessions", `{"name":"s","project_id":"p1"}`)
	if code != http.StatusCreated {
		t.Fatalf("create session: %d %s", code, b)
	}
	id := decodeSession(t, b).GetMetadata().GetId()
	for _, path := range []string{"/sessions/" + id, "/projects/p1", "/sessions"} {
		if code, b := rc.do(http.MethodGet, path, ""); code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, b)
		}
	}
	if code, b := rc.do(http.MethodPost, "/sessions/"+id+"/start", ""); code != http.StatusOK {
		t.Fatalf("start: %d %s", code, b)
	}

	type tags struct{ resource, object, project string }
	want := map[string]tags{
		"POST " + memapi.BasePath + "/projects":            {},
		"POST " + memapi.BasePath + "/sessions":            {},
		"GET " + memapi.BasePath + "/sessions/{id}":        {"sessions", id, ""},
		"GET " + memapi.BasePath + "/projects/{id}":        {"projects", "p1", "p1"},
		"GET " + memapi.BasePath + "/sessions":             {},
		"POST " + memapi.BasePath + "/sessions/{id}/start": {"sessions", id, ""},
	}
	eventually(t, 5*time.Second, func() error {
		if n := len(rec.Ended()); n < len(want) {
			return context.DeadlineExceeded
		}
		return nil
	})
	got := map[string]tags{}
	for _, sp := range rec.Ended() {
		a := map[attribute.Key]string{}
		for _, kv := range sp.Attributes() {
			a[kv.Key] = kv.Value.String()
		}
		got[sp.Name()] = tags{a[telemetry.AttrResource], a[telemetry.AttrObjectID], a[telemetry.AttrProjectID]}
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("span %q: %+v (present %v), want %+v; spans %v", name, g, ok, w, got)
		}
	}
}
