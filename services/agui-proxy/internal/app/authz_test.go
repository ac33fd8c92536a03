package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/authz"
)

// route is one proxy route of a session, called as a client would.
type route struct {
	name, method, suffix, body string
}

// sessionRoutes are all the proxy's routes of a session.
func sessionRoutes() []route {
	return []route{
		{name: "events GET", method: http.MethodGet, suffix: "/agui/events"},
		{name: "events POST", method: http.MethodPost, suffix: "/agui/events", body: runInput("hi")},
		{name: "run", method: http.MethodPost, suffix: "/agui/run", body: runInput("hi")},
		{name: "interrupt", method: http.MethodPost, suffix: "/agui/interrupt", body: "{}"},
		{name: "health", method: http.MethodGet, suffix: "/health"},
		{name: "mcp status", method: http.MethodGet, suffix: "/mcp/status"},
		{name: "repos status", method: http.MethodGet, suffix: "/repos/status"},
	}
}

// call sends one route's request and returns the status, and for the
// proxy's own JSON errors the error and reason.
func call(t testing.TB, url string, r route, hdr ...string) (code int, errMsg, reason string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, url+r.suffix, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "text/event-stream" && r.body == "" {
		// An events stream (GET /agui/events) has no end: the runner's
		// answer is what counts.
		return resp.StatusCode, "", ""
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read: %v", r.name, err)
	}
	if resp.Header.Get("Content-Type") == "application/json" {
		var e struct{ Error, Reason string }
		if json.Unmarshal(b, &e) == nil {
			return resp.StatusCode, e.Error, e.Reason
		}
	}
	return resp.StatusCode, "", ""
}

// requireForbiddenEverywhere is acceptance 1's denial: 403 with a JSON
// reason on every route of the session.
func requireForbiddenEverywhere(t testing.TB, sessionURL string, hdr ...string) {
	t.Helper()
	for _, r := range sessionRoutes() {
		code, msg, reason := call(t, sessionURL, r, hdr...)
		if code != http.StatusForbidden || msg != "forbidden" || reason == "" {
			t.Fatalf("%s: %d %q %q, want 403 forbidden with a reason", r.name, code, msg, reason)
		}
	}
}

// requireStreams runs the agent through the proxy and wants every word.
func requireStreams(t testing.TB, sessionURL string, hdr ...string) {
	t.Helper()
	resp := postRun(context.Background(), t, sessionURL+"/agui/run", runInput("alpha beta gamma"), hdr...)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("run: %d %s", resp.StatusCode, b)
	}
	frames, err := readFrames(resp.Body)
	if err != nil {
		t.Fatalf("read stream: %v", err)
	}
	var text strings.Builder
	for _, f := range frames {
		text.WriteString(f.data)
	}
	for _, w := range []string{"alpha", "beta", "gamma", "RUN_FINISHED"} {
		if !strings.Contains(text.String(), w) {
			t.Fatalf("stream lacks %q: %s", w, text.String())
		}
	}
}

const (
	aliceAPIToken = "alice-token-0123456789"
	bobAPIToken   = "bob-token-0123456789ab"
	carlToken     = "carl-token-0123456789a" // known to the proxy, not to the API
)

// TestAuthzAPI is acceptance 1 in api mode, against the in-memory API's
// multi-user mode: bob (project B) gets 403 on every route of alice's
// session in project A, alice streams, a token the API does not know is a
// 401, and an API that cannot be asked is a 503, never an allow.
func TestAuthzAPI(t *testing.T) {
	t.Parallel()
	api := testenv.API(t, memapi.WithUsers([]memapi.User{
		{Token: aliceAPIToken, Name: "alice", Projects: []string{"proj-a"}},
		{Token: bobAPIToken, Name: "bob", Projects: []string{"proj-b"}},
	}))
	proj := "proj-a"
	s, err := api.Sessions().CreateSession(context.Background(), &ambientv1.CreateSessionRequest{Name: "x", ProjectId: &proj})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	e := newEnv(t)
	r := startRunner(t, id)
	ep := r.endpoint(t, id)
	ep.ProjectID = proj
	e.register(t, ep)

	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(strings.Join([]string{aliceAPIToken, bobAPIToken, carlToken}, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.proxyCfg()
	cfg.Auth, cfg.TokensFile = auth.ModeToken, tokens
	cfg.Authz = authz.ModeAPI
	if cfg.APIURL, err = parseURL(api.RESTURL()); err != nil {
		t.Fatal(err)
	}
	cfg.AuthzCacheTTL = 0 // every request asks: the API going away below must show
	p := startProxy(t, cfg)
	url := p.session(id, "")

	requireForbiddenEverywhere(t, url, "Authorization", "Bearer "+bobAPIToken)
	requireStreams(t, url, "Authorization", "Bearer "+aliceAPIToken)
	for _, rt := range sessionRoutes() {
		if code, _, _ := call(t, url, rt, "Authorization", "Bearer "+aliceAPIToken); code == http.StatusForbidden || code >= 500 {
			t.Fatalf("alice %s: %d", rt.name, code)
		}
	}
	if code, msg, _ := call(t, url, sessionRoutes()[4], "Authorization", "Bearer "+carlToken); code != http.StatusUnauthorized || msg != "unauthorized" {
		t.Fatalf("token unknown to the API: %d %q, want 401", code, msg)
	}
	if got, ok := metricValue(t, "http://"+p.app.MetricsAddr()+"/metrics", "agui_proxy_authz_decisions_total", `mode="api"`, `result="denied"`); !ok || got < 7 {
		t.Fatalf("denied decisions metric %v %v, want >= 7", got, ok)
	}

	// An API that cannot be asked: 503, never the runner.
	apiDown := *cfg.APIURL
	apiDown.Host = testenv.FreeAddr(t)
	cfg2 := cfg
	cfg2.APIURL = &apiDown
	p2 := startProxy(t, cfg2)
	if code, msg, _ := call(t, p2.session(id, ""), sessionRoutes()[4], "Authorization", "Bearer "+aliceAPIToken); code != http.StatusServiceUnavailable || msg != "authorization unavailable" {
		t.Fatalf("API unreachable: %d %q, want 503", code, msg)
	}
}
