package memapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestOutageLooksLikeARestart: during StartOutage the API looks, from
// outside, like the real server while it restarts: open watches end with
// EOF, every open connection is closed (a gRPC client's channel leaves
// READY, a REST keep-alive connection reads EOF), new connections are
// refused (ECONNREFUSED) and calls fail (gRPC Unavailable). After
// EndOutage it listens again on the same addresses and, once the client
// has reconnected on its own backoff, answers with every object it held
// before.
func TestOutageLooksLikeARestart(t *testing.T) {
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
	if st := c.Conn().GetState(); st != connectivity.Ready {
		t.Fatalf("client channel %s before the outage, want READY", st)
	}
	restAddr := strings.TrimPrefix(srv.RESTURL(), "http://")
	kept := keepAliveREST(t, restAddr)

	if n := srv.StartOutage(time.Hour); n != 1 {
		t.Errorf("StartOutage ended %d watch streams, want 1", n)
	}
	if down, until := srv.InOutage(); !down || time.Until(until) < 59*time.Minute {
		t.Errorf("InOutage = %t, %s; want true, an hour from now", down, until)
	}
	if _, err := recv(t, w, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("open watch: Recv = %v, want io.EOF (a server restart)", err)
	}
	// StartOutage returned: the connections are closed already.
	if err := kept.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := kept.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("open REST connection: Read = %d, %v; want io.EOF (closed by the server)", n, err)
	}
	// The server has closed the connection; the client's channel leaves
	// READY when its transport notices, a moment later (asynchronously).
	stateCtx, cancelState := context.WithTimeout(ctx, 30*time.Second)
	for st := c.Conn().GetState(); st == connectivity.Ready; st = c.Conn().GetState() {
		if !c.Conn().WaitForStateChange(stateCtx, st) {
			t.Errorf("client channel still READY during the outage: its connection was not closed")
			break
		}
	}
	cancelState()
	for _, addr := range []string{srv.GRPCAddr(), restAddr} {
		if err := dial(t, addr); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s during the outage: %v, want ECONNREFUSED", addr, err)
		}
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

	srv.EndOutage()
	if down, _ := srv.InOutage(); down {
		t.Error("InOutage after EndOutage = true")
	}
	// EndOutage returned: the addresses listen again.
	for _, addr := range []string{srv.GRPCAddr(), restAddr} {
		if err := dial(t, addr); err != nil {
			t.Errorf("dial %s after the outage: %v", addr, err)
		}
	}
	if got := restGet(t, srv, memapi.BasePath+"/sessions/"+id); got != http.StatusOK {
		t.Errorf("REST GET session after the outage: %d, want 200", got)
	}
	// The gRPC client comes back on its reconnect backoff (1 s, then 1.6
	// times longer), as it would after a restart.
	eventually(t, 10*time.Second, func() error { return c.Check(ctx) })
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
	// Watches work again: a new stream gets the next change.
	w = watchProjects(t, srv, c)
	if _, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "after"}); err != nil {
		t.Fatal(err)
	}
	if _, err := recv(t, w, 5*time.Second); err != nil {
		t.Errorf("watch after the outage: %v", err)
	}
}

// TestOutageCallsOutsideServe: a grpc.Server of NewGRPCServer and a
// Handler, which the caller serves itself, cannot be closed by an outage;
// they refuse every call instead (gRPC Unavailable, REST 503, the health
// check included).
func TestOutageCallsOutsideServe(t *testing.T) {
	t.Parallel()
	srv, err := memapi.New(memapi.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := srv.NewGRPCServer()
	done := make(chan error, 1) // Serve's result
	// Owned by the cleanup below, which stops the server and waits.
	go func() { done <- gs.Serve(gl) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	c, err := apiclient.New(apiclient.Config{Addr: gl.Addr().String(), Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	srv.StartOutage(time.Hour)
	if _, err := c.ListSessions(t.Context()); status.Code(err) != codes.Unavailable {
		t.Errorf("ListSessions during the outage: %v, want Unavailable", err)
	}
	if err := c.Check(t.Context()); status.Code(err) != codes.Unavailable {
		t.Errorf("health check during the outage: %v, want Unavailable", err)
	}
	for _, path := range []string{memapi.HealthPath, memapi.BasePath + "/sessions"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, hs.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // only the status matters
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET %s during the outage: %d, want 503", path, resp.StatusCode)
		}
	}
	srv.EndOutage()
	if _, err := c.ListSessions(t.Context()); err != nil {
		t.Errorf("ListSessions after the outage: %v", err)
	}
}

// keepAliveREST opens a connection to the REST address, makes one request
// on it and leaves it open (HTTP/1.1 keep-alive); closed at cleanup.
func keepAliveREST(t *testing.T, addr string) net.Conn {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // closed by the server already, mostly
	if _, err := io.WriteString(conn, "GET "+memapi.HealthPath+" HTTP/1.1\r\nHost: memapi\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close() // the status is all that matters
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("keep-alive request: %d (close %t)", resp.StatusCode, resp.Close)
	}
	return conn
}

// dial opens a TCP connection to addr and closes it; it returns the dial
// error.
func dial(t *testing.T, addr string) error {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
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

// TestOutageRightAfterReady: an outage started as soon as Ready is closed,
// before Serve's servers run, still waits for Serve to close its listeners,
// and its end for Serve to listen again: a REST call made once EndOutage
// returned is answered. Before, StartOutage returned at once in that
// window (Serve not yet "listening") and EndOutage then returned while
// Serve was still closing for the outage: connection refused.
func TestOutageRightAfterReady(t *testing.T) {
	for range 20 {
		srv := start(t)
		srv.StartOutage(time.Minute)
		if resp, err := http.Get(srv.RESTURL() + "/api/ambient/v1/projects"); err == nil { //nolint:noctx // a probe during the outage
			_ = resp.Body.Close() // refused or 503: either is the outage
		}
		srv.EndOutage()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.RESTURL()+"/api/ambient/v1/projects", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("list after the outage: %v", err)
		}
		_ = resp.Body.Close() // only the status matters
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("list after the outage: %s", resp.Status)
		}
	}
}
