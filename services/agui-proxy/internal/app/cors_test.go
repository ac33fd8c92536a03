package app_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestCORS is acceptance item 7.
func TestCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-cors")
	e.register(t, r.endpoint(t, "s-cors"))
	cfg := e.proxyCfg()
	cfg.CORSOrigins = []string{"https://app.example", "http://localhost:3000"}
	p, pLog := startProxyLogged(t, cfg)
	anyCfg := e.proxyCfg()
	anyCfg.CORSOrigins = []string{"*"}
	pAny, pAnyLog := startProxyLogged(t, anyCfg)
	// "*" is allowed, and said at start: any site may then script the
	// proxy from its visitors' browsers. (Both logged before Ready.)
	const warning = "cors allows any origin"
	if !strings.Contains(pAnyLog.String(), warning) || strings.Contains(pLog.String(), warning) {
		t.Fatalf("warning %q: with \"*\" logged %v, with listed origins logged %v; want true, false",
			warning, strings.Contains(pAnyLog.String(), warning), strings.Contains(pLog.String(), warning))
	}

	tests := []struct {
		name        string
		p           *proxyHandle
		method      string
		origin      string
		reqMethod   string // Access-Control-Request-Method (preflight)
		reqHeaders  string
		code        int
		allowOrigin string
	}{
		{name: "preflight allowed", p: p, method: "OPTIONS", origin: "https://app.example", reqMethod: "POST",
			reqHeaders: "content-type, authorization", code: 204, allowOrigin: "https://app.example"},
		{name: "preflight second origin", p: p, method: "OPTIONS", origin: "http://localhost:3000", reqMethod: "GET", code: 204,
			allowOrigin: "http://localhost:3000"},
		{name: "preflight disallowed origin", p: p, method: "OPTIONS", origin: "https://evil.example", reqMethod: "POST", code: 204},
		{name: "preflight disallowed method", p: p, method: "OPTIONS", origin: "https://app.example", reqMethod: "DELETE", code: 204},
		{name: "preflight disallowed header", p: p, method: "OPTIONS", origin: "https://app.example", reqMethod: "POST",
			reqHeaders: "x-evil", code: 204},
		{name: "plain options", p: p, method: "OPTIONS", code: 204},
		{name: "actual allowed", p: p, method: "GET", origin: "https://app.example", code: 200, allowOrigin: "https://app.example"},
		{name: "actual disallowed", p: p, method: "GET", origin: "https://evil.example", code: 200},
		{name: "star preflight", p: pAny, method: "OPTIONS", origin: "https://anything.example", reqMethod: "POST", code: 204, allowOrigin: "*"},
		{name: "star actual", p: pAny, method: "GET", origin: "https://anything.example", code: 200, allowOrigin: "*"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.p.session("s-cors", "/health"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.reqMethod != "" {
				req.Header.Set("Access-Control-Request-Method", tc.reqMethod)
			}
			if tc.reqHeaders != "" {
				req.Header.Set("Access-Control-Request-Headers", tc.reqHeaders)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			h := resp.Header
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.allowOrigin {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tc.allowOrigin)
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatalf("credentials allowed: %v", h)
			}
			if tc.allowOrigin != "" && tc.reqMethod != "" {
				if m := h.Get("Access-Control-Allow-Methods"); m != tc.reqMethod {
					t.Fatalf("Access-Control-Allow-Methods %q", m)
				}
				if tc.reqHeaders != "" && !strings.EqualFold(h.Get("Access-Control-Allow-Headers"), tc.reqHeaders) {
					t.Fatalf("Access-Control-Allow-Headers %q", h.Get("Access-Control-Allow-Headers"))
				}
			}
			if tc.method == "OPTIONS" && h.Get("Access-Control-Allow-Origin") != "" && h.Get("Access-Control-Max-Age") == "" {
				t.Fatalf("no max age: %v", h)
			}
		})
	}
}
