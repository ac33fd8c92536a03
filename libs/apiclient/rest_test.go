package apiclient_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// startAnswer answers POST /sessions/s1/start with body (200), any other
// request with a test error.
func startAnswer(t *testing.T, body string) http.Handler {
	t.Helper()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != restapi.BasePath+"/sessions/s1/start" {
			t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body) // the client's error shows a short write
	})
}

const startedSession = `{"id":"s1","kind":"Session","href":"/api/ambient/v1/sessions/s1","name":"demo","phase":"Pending"`

// TestRESTIgnoresUnknownFields: a newer server's extra keys are dropped, the
// known ones read.
func TestRESTIgnoresUnknownFields(t *testing.T) {
	t.Parallel()
	ts := httptest.NewServer(startAnswer(t, startedSession+`,"added_by_a_newer_server":{"x":1}}`))
	defer ts.Close()
	got, err := restClient(t, ts.URL, "tok").StartSession(t.Context(), "s1")
	if err != nil || got.GetMetadata().GetId() != "s1" || got.GetName() != "demo" || got.GetPhase() != "Pending" {
		t.Fatalf("start: %v, %v", got, err)
	}
}

// TestRESTWithCAFile: an https server is trusted with its CA file and not
// without it.
func TestRESTWithCAFile(t *testing.T) {
	t.Parallel()
	ts := httptest.NewUnstartedServer(startAnswer(t, startedSession+"}"))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted client's handshake error
	ts.StartTLS()
	defer ts.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := apiclient.NewREST(apiclient.RESTConfig{URL: ts.URL, Token: "tok", CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rc.StartSession(t.Context(), "s1"); err != nil || got.GetPhase() != "Pending" {
		t.Fatalf("start with the CA: %v, %v", got, err)
	}
	var unknownCA x509.UnknownAuthorityError
	if _, err := restClient(t, ts.URL, "tok").StartSession(t.Context(), "s1"); !errors.As(err, &unknownCA) || apiclient.RESTStatus(err) != 0 {
		t.Fatalf("start without the CA: %v, want x509.UnknownAuthorityError", err)
	}
}

// TestRESTTimeout: a call without a ctx deadline ends after Timeout when the
// server stalls.
func TestRESTTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select { // stall until the client gives up or the test ends
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer ts.Close()
	defer close(release) // before ts.Close, which waits for the handler
	rc, err := apiclient.NewREST(apiclient.RESTConfig{URL: ts.URL, Token: "tok", Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1) // one result
	begin := time.Now()
	go func() {
		_, err := rc.StartSession(t.Context(), "s1") // no deadline: Timeout applies
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || apiclient.RESTStatus(err) != 0 {
			t.Fatalf("start against a stalled server: %v after %v, want DeadlineExceeded", err, time.Since(begin))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("start against a stalled server still running after 5s with Timeout 100ms")
	}
}

func TestRESTConfigLogValueRedactsToken(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	logger := slog.New(slog.NewJSONHandler(&b, nil))
	logger.Info("cfg", slog.Any("api", apiclient.RESTConfig{URL: "http://api:8000", Token: "hunter2"}))
	if strings.Contains(b.String(), "hunter2") || !strings.Contains(b.String(), "http://api:8000") {
		t.Errorf("log line %s", b.String())
	}
}

// TestRESTErrorPageIsShortened: an error answer that is no error object (a
// proxy's or a web frontend's HTML page at a wrong URL) becomes a reason
// of bounded length; it used to be the whole page, up to 16 MiB, in the
// error a CLI prints.
func TestRESTErrorPageIsShortened(t *testing.T) {
	t.Parallel()
	page := "<html><body>" + strings.Repeat("ü", 100<<10) + "</body></html>"
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, page) // the client's error shows a short write
	}))
	defer ts.Close()
	_, err := restClient(t, ts.URL, "tok").StartSession(t.Context(), "s1")
	var e *restapi.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway {
		t.Fatalf("start: %v, want the 502", err)
	}
	if len(e.Reason) > 1100 || !strings.HasPrefix(e.Reason, "<html><body>ü") || !strings.HasSuffix(e.Reason, "... (204826 bytes)") {
		t.Fatalf("reason of %d bytes: %.80q...%q", len(e.Reason), e.Reason, e.Reason[max(0, len(e.Reason)-40):])
	}
}

// TestRESTDoesNotFollowRedirects: a server (or a proxy in front of it) that
// redirects a start gets an error naming the target, and the target gets
// nothing: net/http would resend the POST as a GET after a 302, with the
// token, to another port of the same host, and take its 200 for a start.
func TestRESTDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	reached := make(chan string, 10) // requests the redirect target saw
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- r.Method + " " + r.URL.Path + " auth=" + r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, startedSession+"}") // the client's error shows a short write
	}))
	defer target.Close()
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+r.URL.Path, code)
			}))
			defer ts.Close()
			got, err := restClient(t, ts.URL, "secret-token").StartSession(t.Context(), "s1")
			if apiclient.RESTStatus(err) != code {
				t.Fatalf("start = %v, err %v; want an error with status %d", got, err, code)
			}
			if want := "redirects POST " + ts.URL + restapi.BasePath + "/sessions/s1/start to " + target.URL + restapi.BasePath + "/sessions/s1/start; not followed"; !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v\nwant it to contain %q", err, want)
			}
			select {
			case r := <-reached:
				t.Errorf("the redirect target got %s", r)
			default:
			}
		})
	}
}
