package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
)

// installChromium is the project's command that installs the browser the
// browser test drives (Debian's chromium package).
const installChromium = "hack/install-chromium.sh"

// chromium returns the Chromium binary, or skips the test (fails it in CI,
// where .ci/run installs it) when it is missing.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("chromium is not installed; .ci/run must run %s first", installChromium)
	}
	t.Skipf("chromium is not installed: run %s", installChromium)
	return ""
}

// browserPage is the web app of another origin: it runs an AG-UI stream
// through the proxy the way a browser client does (fetch with the bearer
// token, the SSE body read with a ReadableStream reader, split on "\n\n")
// and reports what it received, or the error fetch threw.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>agui client</title></head><body>
<script>
async function runAgent(proxy, session, token, text) {
  try {
    const res = await fetch(proxy + '/sessions/' + session + '/agui/run', {
      method: 'POST',
      headers: {'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json', 'Accept': 'text/event-stream'},
      body: JSON.stringify({threadId: 'thread-b', runId: 'run-b', state: {}, tools: [], context: [], forwardedProps: {},
        messages: [{id: 'm1', role: 'user', content: text}]}),
    });
    const out = {status: res.status, contentType: res.headers.get('content-type') || '', types: [], deltas: [], deltaMs: [], chunks: 0, error: ''};
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      out.chunks++;
      buf += decoder.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of frame.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.type) out.types.push(ev.type);
          if (ev.type === 'TEXT_MESSAGE_CONTENT') { out.deltas.push(ev.delta); out.deltaMs.push(performance.now()); }
        }
      }
    }
    return out;
  } catch (e) {
    return {status: 0, contentType: '', types: [], deltas: [], deltaMs: [], chunks: 0, error: String(e)};
  }
}
// postSimple sends what any web site can send without a preflight: a
// no-cors text/plain POST with no credentials. Its answer is opaque to the
// page; it resolves once the response headers arrived.
async function postSimple(url, body) {
  try {
    await fetch(url, {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body});
    return '';
  } catch (e) {
    return String(e);
  }
}
</script></body></html>`

// browserResult is what runAgent reports.
type browserResult struct {
	Status      int      `json:"status"`
	ContentType string   `json:"contentType"`
	Types       []string `json:"types"`
	Deltas      []string `json:"deltas"`
	// DeltaMs is when the page read each delta (performance.now()).
	DeltaMs []float64 `json:"deltaMs"`
	Chunks  int       `json:"chunks"`
	Error   string    `json:"error"`
}

// TestBrowserCORS is issue 12's browser test: a page served from another
// origin runs an AG-UI stream through the real proxy in headless Chromium,
// with the bearer token, and receives the words as they stream; the same
// page from an origin the proxy does not allow fails in the browser (CORS),
// and its run never reaches the runner.
func TestBrowserCORS(t *testing.T) {
	t.Parallel()
	bin := chromium(t)

	e := newEnv(t)
	const wordDelay = 100 * time.Millisecond
	r := startRunner(t, "s-browser", "DEMO_WORD_DELAY="+wordDelay.String())
	e.register(t, r.endpoint(t, "s-browser"))

	allowed, other := pageServers(t)

	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(goodToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.proxyCfg()
	cfg.Auth, cfg.TokensFile = auth.ModeToken, tokens
	cfg.CORSOrigins = []string{allowed.URL}
	p := startProxy(t, cfg)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	browser := startBrowser(t, ctx, bin)

	const text = "hello from another origin"
	tests := []struct {
		name   string
		origin string
		token  string
		check  func(t *testing.T, res browserResult)
	}{
		{name: "allowed origin streams", origin: allowed.URL, token: goodToken, check: func(t *testing.T, res browserResult) {
			if res.Error != "" || res.Status != http.StatusOK || !strings.HasPrefix(res.ContentType, "text/event-stream") {
				t.Fatalf("fetch = %+v, want a 200 event stream", res)
			}
			if got := strings.Join(res.Deltas, ""); got != text {
				t.Errorf("streamed text %q, want %q", got, text)
			}
			if len(res.Types) < 2 || res.Types[0] != "RUN_STARTED" || res.Types[len(res.Types)-1] != "RUN_FINISHED" {
				t.Errorf("event types %v, want RUN_STARTED ... RUN_FINISHED", res.Types)
			}
			// The page read the words as the runner paced them: a proxy
			// that buffers delivers them together. A loaded machine can
			// make the page read two words at once (so chunks are not
			// counted per word), but never read them sooner than they were
			// sent: the words spread over at least half their pacing.
			if n := len(res.DeltaMs); n == len(res.Deltas) && n > 1 {
				spread := time.Duration((res.DeltaMs[n-1] - res.DeltaMs[0]) * float64(time.Millisecond))
				if want := time.Duration(n-1) * wordDelay / 2; spread < want {
					t.Errorf("the page read %d words within %v (%d chunks), want them spread over %v or more: the stream was buffered", n, spread, res.Chunks, want)
				}
			} else {
				t.Errorf("%d arrival times for %d words", n, len(res.Deltas))
			}
		}},
		{name: "wrong token is a readable 401", origin: allowed.URL, token: "wrong-token-0123456789abcdef", check: func(t *testing.T, res browserResult) {
			if res.Error != "" || res.Status != http.StatusUnauthorized {
				t.Fatalf("fetch = %+v, want a 401 the page can read (CORS headers on errors too)", res)
			}
		}},
		{name: "disallowed origin fails in the browser", origin: other.URL, token: goodToken, check: func(t *testing.T, res browserResult) {
			if res.Error == "" || res.Status != 0 {
				t.Fatalf("fetch from a disallowed origin = %+v, want it to fail", res)
			}
			if !strings.Contains(res.Error, "Failed to fetch") {
				t.Errorf("error %q, want the browser's CORS failure (TypeError: Failed to fetch)", res.Error)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := r.stats(t)["runs_started"]
			res := runInBrowser(t, ctx, browser, tc.origin, p.url, "s-browser", tc.token, text)
			tc.check(t, res)
			runs := r.stats(t)["runs_started"] - before
			if want := int64(0); tc.name == "allowed origin streams" {
				want = 1
				if runs != want {
					t.Errorf("runner started %d runs, want %d", runs, want)
				}
			} else if runs != want {
				t.Errorf("runner started %d runs from a refused request, want 0 (the preflight must stop it)", runs)
			}
		})
	}
}

// TestBrowserCrossSiteWrite: with AGUI_AUTH=none (the loopback default) a
// page of any web site the user visits can send a POST the browser does not
// preflight (no-cors, text/plain); CORS hides the answer from the page, not
// the request from the proxy. The proxy refuses it unless the page's origin
// is in CORS_ALLOWED_ORIGIN, so such a site cannot start a run; the allowed
// origin's same request starts one.
func TestBrowserCrossSiteWrite(t *testing.T) {
	t.Parallel()
	bin := chromium(t)

	e := newEnv(t)
	r := startRunner(t, "s-browser-csrf")
	e.register(t, r.endpoint(t, "s-browser-csrf"))
	allowed, other := pageServers(t)
	cfg := e.proxyCfg() // AGUI_AUTH=none
	cfg.CORSOrigins = []string{allowed.URL}
	p := startProxy(t, cfg)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	browser := startBrowser(t, ctx, bin)
	call := "postSimple(" + jsString(p.session("s-browser-csrf", "/agui/run")) + "," + jsString(runInput("from a web page")) + ")"
	for _, tc := range []struct {
		name   string
		origin string
		runs   int64
	}{
		{name: "another site", origin: other.URL, runs: 0},
		{name: "allowed origin", origin: allowed.URL, runs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.stats(t)["runs_started"]
			if err := evalInBrowser[string](t, ctx, browser, tc.origin, call); err != "" {
				t.Fatalf("the page's POST: %s", err)
			}
			// The fetch resolved with the answer's headers: the proxy has
			// decided, and a run it let through has started.
			if runs := r.stats(t)["runs_started"] - before; runs != tc.runs {
				t.Fatalf("runner started %d runs from the page, want %d", runs, tc.runs)
			}
		})
	}
}

// pageServers serves browserPage from two origins (two ports), the one a
// test allows and another one.
func pageServers(t *testing.T) (allowed, other *httptest.Server) {
	t.Helper()
	page := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(browserPage)) // a failed write fails the page load the test waits on
	})
	allowed = httptest.NewServer(page)
	t.Cleanup(allowed.Close)
	other = httptest.NewServer(page)
	t.Cleanup(other.Close)
	return allowed, other
}

// startBrowser starts headless Chromium with chromedp's defaults plus the
// flags that work on these machines (no sandbox as root, no QUIC, no
// connections of its own to the outside) and a fresh profile; it is stopped
// with t. It returns the chromedp context of its one tab.
func startBrowser(t *testing.T, ctx context.Context, bin string) context.Context {
	t.Helper()
	profile, err := os.MkdirTemp("", "agui-browser-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		// Its helper processes may still write the profile for a moment.
		testenv.Eventually(t, 10*time.Second, func() error { return os.RemoveAll(profile) })
	})
	// The first Run starts the browser; its context must outlive the test's
	// steps (a timeout here would stop the whole browser).
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return tab
}

// runInBrowser loads the page from origin in the tab and runs an agent
// through the proxy from it.
func runInBrowser(t *testing.T, ctx, tab context.Context, origin, proxy, session, token, text string) browserResult {
	t.Helper()
	call := "runAgent(" + jsString(proxy) + "," + jsString(session) + "," + jsString(token) + "," + jsString(text) + ")"
	return evalInBrowser[browserResult](t, ctx, tab, origin, call)
}

// evalInBrowser loads the page from origin in the tab and returns what the
// JavaScript call's promise resolves to.
func evalInBrowser[T any](t *testing.T, ctx, tab context.Context, origin, call string) T {
	t.Helper()
	rctx, cancel := context.WithTimeout(tab, time.Minute)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	if err := chromedp.Do(rctx, chromedp.Navigate(origin+"/")); err != nil {
		t.Fatalf("load the page from %s: %v", origin, err)
	}
	res, err := chromedp.Run(rctx, chromedp.Evaluate[T](call, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("run in chromium from %s: %v", origin, err)
	}
	return res
}

// jsString quotes s as a JavaScript string literal: a JSON string is one
// (json.Marshal also escapes <, > and U+2028/U+2029).
func jsString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a string always marshals
	}
	return string(b)
}
