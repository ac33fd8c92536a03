package memapi_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/memapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestOutageRefusesEverythingAndKeepsState: during StartOutage the API
// looks down from outside (open watches end with EOF, every gRPC call and
// stream fails with Unavailable, every REST request is 503, the health
// check included); after EndOutage it answers again with every object it
// held before.
func TestOutageRefusesEverythingAndKeepsState(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()
	sess, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "kept", Prompt: proto.String("p")})
	if err != nil {
		t.Fatal(err)
	}
	id := sess.GetMetadata().GetId()
	w := watchProjects(t, srv, c)

	if n := srv.StartOutage(time.Hour); n != 1 {
		t.Errorf("StartOutage ended %d watch streams, want 1", n)
	}
	if down, until := srv.InOutage(); !down || time.Until(until) < 59*time.Minute {
		t.Errorf("InOutage = %t, %s; want true, an hour from now", down, until)
	}
	if _, err := recv(t, w, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("open watch: Recv = %v, want io.EOF (a server restart)", err)
	}
	wantUnavailable := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s during the outage: %v, want Unavailable", what, err)
		}
	}
	_, err = c.GetSession(ctx, id)
	wantUnavailable("GetSession", err)
	_, err = c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "refused"})
	wantUnavailable("CreateSession", err)
	wantUnavailable("health check", c.Check(ctx))
	if sw, err := c.WatchSessions(ctx); err != nil {
		wantUnavailable("WatchSessions", err)
	} else {
		_, err := recv(t, sw, 5*time.Second)
		wantUnavailable("WatchSessions' Recv", err)
	}
	if got := srv.Watchers(); got != 0 {
		t.Errorf("%d watch streams registered during the outage, want 0", got)
	}
	if got := restGet(t, srv, memapi.HealthPath); got != http.StatusServiceUnavailable {
		t.Errorf("REST %s during the outage: %d, want 503", memapi.HealthPath, got)
	}
	if got := restGet(t, srv, memapi.BasePath+"/sessions/"+id); got != http.StatusServiceUnavailable {
		t.Errorf("REST GET session during the outage: %d, want 503", got)
	}

	srv.EndOutage()
	if down, _ := srv.InOutage(); down {
		t.Error("InOutage after EndOutage = true")
	}
	got, err := c.GetSession(ctx, id)
	if err != nil {
		t.Fatalf("GetSession after the outage: %v", err)
	}
	if got.GetName() != "kept" {
		t.Errorf("session after the outage named %q, want %q", got.GetName(), "kept")
	}
	if n, _, _ := srv.Len(); n != 1 {
		t.Errorf("%d sessions after the outage, want 1 (the refused create made none)", n)
	}
	if err := c.Check(ctx); err != nil {
		t.Errorf("health check after the outage: %v", err)
	}
	if got := restGet(t, srv, memapi.BasePath+"/sessions/"+id); got != http.StatusOK {
		t.Errorf("REST GET session after the outage: %d, want 200", got)
	}
	// Watches work again: a new stream gets the next change.
	w = watchProjects(t, srv, c)
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "after"}); err != nil {
		t.Fatal(err)
	}
	if _, err := recv(t, w, 5*time.Second); err != nil {
		t.Errorf("watch after the outage: %v", err)
	}
}

// TestOutageEndsByItself: an outage ends after its duration without help,
// and a later StartOutage is not cut short by the earlier one's end.
func TestOutageEndsByItself(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	srv.StartOutage(50 * time.Millisecond)
	if _, err := c.ListSessions(t.Context()); status.Code(err) != codes.Unavailable {
		t.Fatalf("ListSessions during the outage: %v, want Unavailable", err)
	}
	eventually(t, 5*time.Second, func() error {
		_, err := c.ListSessions(t.Context())
		return err
	})
	// A short outage replaced by a long one: the short one's timer must not
	// end the long one.
	srv.StartOutage(20 * time.Millisecond)
	srv.StartOutage(time.Hour)
	// Past the first outage's end: nothing to poll for, its absence is
	// the point.
	<-time.After(100 * time.Millisecond)
	if down, _ := srv.InOutage(); !down {
		t.Error("the first outage's end ended the second")
	}
	srv.EndOutage()
}

// TestFaultsHandlerOutage: POST /faults/outage?for= starts an outage and
// says until when, a bad duration is 400, POST /faults/outage/end ends it.
func TestFaultsHandlerOutage(t *testing.T) {
	t.Parallel()
	srv, err := memapi.New()
	if err != nil {
		t.Fatal(err)
	}
	h := srv.FaultsHandler()
	post := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		return rec
	}
	for _, bad := range []string{"", "x", "0s", "-1s", "2h"} {
		if rec := post("/faults/outage?for=" + bad); rec.Code != http.StatusBadRequest {
			t.Errorf("for=%q: %d, want 400", bad, rec.Code)
		}
	}
	if down, _ := srv.InOutage(); down {
		t.Fatal("a refused request started an outage")
	}
	rec := post("/faults/outage?for=90s")
	if rec.Code != http.StatusOK {
		t.Fatalf("for=90s: %d %s", rec.Code, rec.Body)
	}
	var body struct {
		Ended int       `json:"ended"`
		Until time.Time `json:"until"`
	}
	if err := json.NewDecoder(rec.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(body.Until); d < 80*time.Second || d > 90*time.Second {
		t.Errorf("until %s is %s from now, want about 90s", body.Until, d)
	}
	if down, _ := srv.InOutage(); !down {
		t.Error("no outage after POST /faults/outage")
	}
	if rec := post("/faults/outage/end"); rec.Code != http.StatusOK {
		t.Errorf("end: %d", rec.Code)
	}
	if down, _ := srv.InOutage(); down {
		t.Error("outage on after POST /faults/outage/end")
	}
}

// restGet GETs path on srv's REST API with the test token; it returns the
// status code.
func restGet(t *testing.T, srv *memapi.Server, path string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.RESTURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
