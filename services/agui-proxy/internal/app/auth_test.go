package app_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth/authtest"
)

const goodToken = "test-token-0123456789abcdef"

// TestAuth is acceptance item 6 for token and jwt modes: no or wrong
// credentials get 401 JSON, valid ones reach the runner, on plain and
// streaming routes.
func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-auth")
	e.register(t, r.endpoint(t, "s-auth"))

	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("# proxy clients\n"+goodToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenCfg := e.proxyCfg()
	tokenCfg.Auth, tokenCfg.TokensFile = auth.ModeToken, tokens
	pTok := startProxy(t, tokenCfg)

	iss := authtest.NewIssuer(t, "agui")
	u, err := parseURL(iss.URL)
	if err != nil {
		t.Fatal(err)
	}
	jwtCfg := e.proxyCfg()
	jwtCfg.Auth, jwtCfg.JWKSURL, jwtCfg.JWTIssuer, jwtCfg.JWTAudience = auth.ModeJWT, u, iss.Name, "agui"
	pJWT := startProxy(t, jwtCfg)
	wrongAud := iss.Claims("bob")
	wrongAud.Audience = []string{"other"}

	tests := []struct {
		name  string
		p     *proxyHandle
		authz string
		code  int
	}{
		{name: "token missing", p: pTok, code: 401},
		{name: "token wrong", p: pTok, authz: "Bearer wrong-token-0123456789abcdef", code: 401},
		{name: "token valid", p: pTok, authz: "Bearer " + goodToken, code: 200},
		{name: "jwt missing", p: pJWT, code: 401},
		{name: "jwt static token", p: pJWT, authz: "Bearer " + goodToken, code: 401},
		{name: "jwt wrong audience", p: pJWT, authz: "Bearer " + iss.Sign(t, wrongAud), code: 401},
		{name: "jwt foreign key", p: pJWT, authz: "Bearer " + iss.SignWithOtherKey(t, iss.Claims("bob")), code: 401},
		{name: "jwt valid", p: pJWT, authz: "Bearer " + iss.Sign(t, iss.Claims("bob")), code: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.authz != "" {
				hdr = []string{"Authorization", tc.authz}
			}
			resp := get(t, tc.p.session("s-auth", "/health"), hdr...)
			if resp.StatusCode != tc.code {
				resp.Body.Close()
				t.Fatalf("health: %d, want %d", resp.StatusCode, tc.code)
			}
			if tc.code == 401 {
				if msg := jsonError(t, resp); msg != "unauthorized" {
					t.Fatalf("error %q", msg)
				}
			} else {
				resp.Body.Close()
			}
			run := postRun(context.Background(), t, tc.p.session("s-auth", "/agui/run"), runInput("hi there"), hdr...)
			_, _ = io.Copy(io.Discard, run.Body)
			run.Body.Close()
			if run.StatusCode != tc.code {
				t.Fatalf("run: %d, want %d", run.StatusCode, tc.code)
			}
		})
	}
	// /healthz and CORS preflights need no credentials; nor does /health,
	// the original proxy's path.
	for _, path := range []string{"/healthz", "/health"} {
		if code := statusOf(t, pTok.url+path); code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
	}
}

// TestAuthNoneRefusedOffLoopback is acceptance item 6's last part, on the
// real binary: AGUI_AUTH=none on a non-loopback address exits 1 naming the
// variable, unless AGUI_AUTH_ALLOW_INSECURE=true; so does AGUI_AUTHZ=none
// (issue 12) unless AGUI_AUTHZ_ALLOW_INSECURE=true.
func TestAuthNoneRefusedOffLoopback(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(proxyBin)
	cmd.Env = []string{"LOCAL_PROXY_ADDR=0.0.0.0:0", "AGUI_AUTH=none", "METRICS_ADDR=127.0.0.1:0"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want exit status 1 (stderr %s)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "AGUI_AUTH") || !strings.Contains(stderr.String(), "loopback") {
		t.Fatalf("stderr does not name the variable: %s", stderr.String())
	}

	// Authenticated but not authorized off loopback: every caller would
	// reach every session, so AGUI_AUTHZ=none is refused there too.
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(goodToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(proxyBin)
	cmd.Env = []string{"LOCAL_PROXY_ADDR=0.0.0.0:0", "AGUI_AUTH=token", "AGUI_TOKENS_FILE=" + tokens, "METRICS_ADDR=127.0.0.1:0"}
	stderr.Reset()
	cmd.Stderr = &stderr
	if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("authz none off loopback: exit %v, want 1 (stderr %s)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "AGUI_AUTHZ") || !strings.Contains(stderr.String(), "loopback") {
		t.Fatalf("stderr does not name AGUI_AUTHZ: %s", stderr.String())
	}

	// Invalid values: every bad variable is named at once.
	cmd = exec.Command(proxyBin)
	cmd.Env = []string{"MAX_BODY_BYTES=lots", "SSE_KEEPALIVE=5", "AGUI_AUTH=token", "RUNNERS_BUCKET=bad.name", "ROUTES_STALE_AFTER=0"}
	stderr.Reset()
	cmd.Stderr = &stderr
	if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want 1", err)
	}
	for _, name := range []string{"MAX_BODY_BYTES", "SSE_KEEPALIVE", "AGUI_TOKENS_FILE", "RUNNERS_BUCKET", "ROUTES_STALE_AFTER"} {
		if !strings.Contains(stderr.String(), name) {
			t.Fatalf("stderr does not name %s: %s", name, stderr.String())
		}
	}
}

// TestBinaryServesAndStops runs the real binary: ready on /readyz, a session
// route proxied, SIGTERM exits 0.
func TestBinaryServesAndStops(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-bin")
	e.register(t, r.endpoint(t, "s-bin"))
	// Two ports of one block, so they never coincide.
	port, _ := testenv.FreePortRange(t, 2)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	metrics := net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1))
	cmd := exec.Command(proxyBin)
	cmd.Env = []string{"LOCAL_PROXY_ADDR=" + addr, "METRICS_ADDR=" + metrics, "NATS_URL=" + e.nats.ClientURL(), "LOG_LEVEL=debug"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1) // Wait's result
	exited := make(chan struct{})
	go func() { // exits with the process
		done <- cmd.Wait()
		close(exited)
	}()
	defer func() {
		_ = cmd.Process.Kill() // no-op once exited; ends it if the test failed midway
		<-exited
	}()
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	if b := bodyOf(t, "http://"+addr+"/sessions/s-bin/health"); !strings.Contains(b, `"s-bin"`) {
		t.Fatalf("health via binary: %s", b)
	}
	m := bodyOf(t, "http://"+metrics+"/metrics")
	for _, want := range []string{`agui_proxy_requests_total{`, `route="health"`, `code="200"`, "agui_proxy_upstream_latency_seconds_bucket"} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(m, "agui_proxy"))
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("binary did not stop on SIGTERM")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRevokedTokenEndsOpenStream: a token removed from AGUI_TOKENS_FILE is
// refused on new requests after the reload, and an events subscription
// opened with it, which would otherwise stream for as long as its client
// stays, ends with the proxy's RUN_ERROR (ACCESS_REVOKED) at the next
// recheck; one opened with a kept token streams on.
func TestRevokedTokenEndsOpenStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-rev")
	e.register(t, r.endpoint(t, "s-rev"))
	tokens := filepath.Join(t.TempDir(), "tokens")
	const revoked, kept = "revoked-token-0123456789", "kept-token-0123456789ab"
	if err := os.WriteFile(tokens, []byte(revoked+"\n"+kept+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.proxyCfg()
	cfg.Auth, cfg.TokensFile, cfg.TokensReload = auth.ModeToken, tokens, 100*time.Millisecond
	cfg.AuthzCacheTTL = time.Second // the recheck interval (no authorizer here)
	p := startProxy(t, cfg)
	open := func(token string) *http.Response {
		t.Helper()
		resp := get(t, p.session("s-rev", "/agui/events"), "Authorization", "Bearer "+token)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("events with %s: %d", token, resp.StatusCode)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	}
	gone, stays := open(revoked), open(kept)
	goneEnd, staysEnd := streamEnd(gone.Body), streamEnd(stays.Body)
	if err := os.WriteFile(tokens, []byte(kept+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if code := statusOf2(t, p.session("s-rev", "/health"), revoked); code != http.StatusUnauthorized {
			return errorf("new request with the revoked token: %d, want 401", code)
		}
		return nil
	})
	wantRunError(t, goneEnd, 5*time.Second, "ACCESS_REVOKED", "access to the session was revoked or the credentials expired; the stream ended",
		"events stream opened with a revoked token still open")
	select {
	case got := <-staysEnd:
		t.Fatalf("stream of a kept token ended: %v (%d frames)", got.err, len(got.frames))
	default:
	}
}

// statusOf2 is the status of a GET of url with a bearer token.
func statusOf2(t *testing.T, url, token string) int {
	t.Helper()
	resp := get(t, url, "Authorization", "Bearer "+token)
	_ = resp.Body.Close()
	return resp.StatusCode
}
