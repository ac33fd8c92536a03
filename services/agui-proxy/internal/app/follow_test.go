package app_test

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// The platform's runner serves no GET /: it answers the events route's GET
// with 405 {"detail":"Method Not Allowed"}, and its live view is its tap of
// a thread, GET /events/{thread_id}, which ends after each turn's
// RUN_FINISHED or RUN_ERROR. These tests stand such a runner up in the
// test process and watch a session through GET /sessions/{id}/agui/events.

// tapTurn is one turn as the platform runner's tap sends it (its encoder's
// framing: "data: <json>\n\n", the type first).
func tapTurn(run string, finished bool) string {
	s := `data: {"type":"RUN_STARTED","threadId":"s","runId":"` + run + `"}` + "\n\n" +
		`data: {"type":"TEXT_MESSAGE_CONTENT","messageId":"m-` + run + `","delta":"hi"}` + "\n\n"
	if finished {
		s += `data: {"type":"RUN_FINISHED","threadId":"s","runId":"` + run + `"}` + "\n\n"
	}
	return s
}

// platformRunner is a stand-in for the platform's runner: 405 on GET /,
// and /events/{thread} as an SSE tap that serves one turn from turns (and
// ends after it, unless the turn is unfinished: then it stays open until
// its client leaves). Every request it gets goes to seen.
type platformRunner struct {
	seen  chan *http.Request
	turns chan string
	noTap bool // /events/... is 404, as on a runner without a tap
	empty bool // every tap ends at once, without an event
}

func newPlatformRunner() *platformRunner {
	return &platformRunner{seen: make(chan *http.Request, 64), turns: make(chan string)}
}

func (pr *platformRunner) serve(w http.ResponseWriter, r *http.Request) {
	pr.seen <- r.Clone(r.Context())
	if r.URL.Path == "/" && r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Allow", "POST")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = io.WriteString(w, `{"detail":"Method Not Allowed"}`)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/events/") || pr.noTap {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"detail":"Not Found"}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	if pr.empty {
		return
	}
	select {
	case turn := <-pr.turns:
		_, _ = io.WriteString(w, turn)
		w.(http.Flusher).Flush()
		if !strings.Contains(turn, "RUN_FINISHED") {
			<-r.Context().Done()
		}
	case <-r.Context().Done():
	}
}

// next returns the next request the runner got, failing after a generous
// hang guard.
func (pr *platformRunner) next(t testing.TB) *http.Request {
	t.Helper()
	select {
	case r := <-pr.seen:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the runner got no further request")
		return nil
	}
}

// nextFrame reads one "\n\n"-terminated SSE frame.
func nextFrame(t testing.TB, br *bufio.Reader) string {
	t.Helper()
	var cur strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended after %q: %v", cur.String(), err)
		}
		if line == "\n" {
			return cur.String()
		}
		cur.WriteString(line)
	}
}

// readTurn reads frames, keep-alive comments skipped, until the frames of
// turn have all arrived, in order and byte for byte.
func readTurn(t testing.TB, br *bufio.Reader, turn string) {
	t.Helper()
	for _, want := range strings.Split(strings.TrimSuffix(turn, "\n\n"), "\n\n") {
		want += "\n" // nextFrame's frames end with their last line's end
		got := nextFrame(t, br)
		for strings.HasPrefix(got, ":") {
			got = nextFrame(t, br)
		}
		if got != want {
			t.Fatalf("frame %q, want %q", got, want)
		}
	}
}

// TestEventsFollowsTapAcrossTurns: against a runner without GET / (405),
// a browser's GET /sessions/{id}/agui/events follows the runner's tap of
// the session's thread, GET /events/{session id}, and re-opens it after
// each turn: the one stream gets the events of consecutive turns, with
// keep-alive comments in the silence between them, and a turn cut by the
// endpoint's removal ends with the proxy's RUN_ERROR. The tap's upstream
// calls count under the events route. thread_id follows another thread
// (the query still goes to GET /); an invalid one is 400. Before, the 405
// reached the browser and it saw nothing of the session.
func TestEventsFollowsTapAcrossTurns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pr := newPlatformRunner()
	e.registerServerIn(t, "s-follow", "proj", pr.serve)
	cfg := e.proxyCfg()
	cfg.SSEKeepAlive = 20 * time.Millisecond
	p := startProxy(t, cfg)
	metrics := "http://" + p.app.MetricsAddr() + "/metrics"

	resp := get(t, p.session("s-follow", "/agui/events"), "Accept", "text/event-stream")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d (%s), want 200: the runner's tap followed", resp.StatusCode, b)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if r := pr.next(t); r.Method != http.MethodGet || r.URL.Path != "/" {
		t.Fatalf("runner's first request %s %s, want GET /", r.Method, r.URL.Path)
	}
	if r := pr.next(t); r.Method != http.MethodGet || r.URL.Path != "/events/s-follow" || r.Header.Get("Accept") != "text/event-stream" {
		t.Fatalf("runner's second request %s %s (Accept %q), want GET /events/s-follow, the session's thread", r.Method, r.URL.Path, r.Header.Get("Accept"))
	}
	br := bufio.NewReader(resp.Body)
	turn1, turn2 := tapTurn("r1", true), tapTurn("r2", true)
	pr.turns <- turn1
	readTurn(t, br, turn1)
	// The turn's end ended the tap; the proxy opens it again.
	if r := pr.next(t); r.URL.Path != "/events/s-follow" {
		t.Fatalf("after the turn the runner got %s %s, want the tap again", r.Method, r.URL.Path)
	}
	// The silence between the turns gets keep-alive comments.
	if f := nextFrame(t, br); f != ": ping\n" {
		t.Fatalf("frame %q between the turns, want the keep-alive comment", f)
	}
	pr.turns <- turn2
	readTurn(t, br, turn2)
	if r := pr.next(t); r.URL.Path != "/events/s-follow" {
		t.Fatalf("after the second turn the runner got %s %s, want the tap again", r.Method, r.URL.Path)
	}
	// GET / and three taps, each a call to the runner on the events route.
	testenv.Eventually(t, 10*time.Second, func() error {
		if v, _ := metricValue(t, metrics, "agui_proxy_upstream_latency_seconds_count", `route="events"`); v != 4 {
			return errorf("events route's runner calls %v, want 4 (GET / and three taps)", v)
		}
		return nil
	})
	if v, _ := metricValue(t, metrics, "agui_proxy_active_streams", `route="events"`); v != 1 {
		t.Errorf("active events streams %v, want 1: one stream across the taps", v)
	}
	// A turn under way when the endpoint goes ends with the proxy's RUN_ERROR.
	turn3 := tapTurn("r3", false)
	pr.turns <- turn3
	readTurn(t, br, turn3)
	end := streamEnd(br)
	e.release(t, "s-follow")
	wantRunError(t, end, 10*time.Second, "RUNNER_GONE", "the session's runner stopped or moved; the run did not finish",
		"the followed stream stayed open after its endpoint was removed")

	// Another thread, by thread_id; the query still reaches GET /.
	if n := len(pr.seen); n != 0 {
		t.Fatalf("%d runner requests after the third tap, want none", n)
	}
	e.registerServerIn(t, "s-thread", "proj", pr.serve)
	other := get(t, p.session("s-thread", "/agui/events?thread_id=t-9"))
	defer other.Body.Close()
	if other.StatusCode != http.StatusOK {
		t.Fatalf("thread_id: status %d, want 200", other.StatusCode)
	}
	if root := pr.next(t); root.URL.Path != "/" || root.URL.RawQuery != "thread_id=t-9" {
		t.Errorf("GET / query %q, want GET / with the client's", root.URL.RawQuery)
	}
	if r := pr.next(t); r.URL.Path != "/events/t-9" {
		t.Fatalf("thread_id=t-9: runner got %s, want /events/t-9", r.URL.Path)
	}
	bad := get(t, p.session("s-thread", "/agui/events?thread_id=.."))
	if bad.StatusCode != http.StatusBadRequest {
		bad.Body.Close()
		t.Fatalf("thread_id=..: status %d, want 400", bad.StatusCode)
	}
	if got := jsonError(t, bad); got != "invalid thread id" {
		t.Fatalf("thread_id=..: error %q, want invalid thread id", got)
	}
}

// TestEventsWithoutTapPassesRefusal: a runner that answers the events
// route's GET / with 405 and has no tap either (404 on /events/...) gets
// its 405 passed to the client as before, after the proxy asked for the
// tap of the session's thread. Before, the proxy never asked for the tap.
func TestEventsWithoutTapPassesRefusal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pr := newPlatformRunner()
	pr.noTap = true
	e.registerServerIn(t, "s-notap", "proj", pr.serve)
	p := startProxy(t, e.proxyCfg())

	resp := get(t, p.session("s-notap", "/agui/events"))
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed || string(b) != `{"detail":"Method Not Allowed"}` {
		t.Fatalf("status %d, body %q (%v), want the runner's 405", resp.StatusCode, b, err)
	}
	if a := resp.Header.Get("Allow"); a != "POST" {
		t.Errorf("Allow %q, want the runner's POST", a)
	}
	if r := pr.next(t); r.URL.Path != "/" {
		t.Fatalf("runner's first request %s, want GET /", r.URL.Path)
	}
	if r := pr.next(t); r.URL.Path != "/events/s-notap" {
		t.Fatalf("runner's second request %s, want its tap of the session's thread", r.URL.Path)
	}
	// A POST of the events route is a run: its 405 is never followed.
	post := platformRun(t, p.session("s-notap", "/agui/events"), `{"messages":[]}`)
	post.Body.Close()
	if post.StatusCode != http.StatusNotFound {
		t.Fatalf("POST: status %d, want the runner's 404", post.StatusCode)
	}
	if r := pr.next(t); r.Method != http.MethodPost || r.URL.Path != "/" {
		t.Fatalf("POST reached the runner as %s %s, want POST /", r.Method, r.URL.Path)
	}
	if n := len(pr.seen); n != 0 {
		t.Fatalf("%d more runner requests after the POST, want none", n)
	}
}

// TestEventsTapBackoff: a tap that ends at once, without an event, is
// opened again only after a delay that doubles (100 ms, 200 ms, ...), so a
// runner that ends its tap at once cannot make the proxy dial it in a
// loop; the delays are lower bounds, met however slow the machine. The
// client leaving during a delay ends the follow. Before, the 405 ended the
// stream and no tap was ever asked for.
func TestEventsTapBackoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pr := newPlatformRunner()
	pr.empty = true
	var mu sync.Mutex
	var at []time.Time // when each tap reached the runner
	e.registerServerIn(t, "s-empty", "proj", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/events/") {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
		}
		pr.serve(w, r)
	})
	p := startProxy(t, e.proxyCfg())
	metrics := "http://" + p.app.MetricsAddr() + "/metrics"

	resp := get(t, p.session("s-empty", "/agui/events"))
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if r := pr.next(t); r.URL.Path != "/" {
		t.Fatalf("runner's first request %s, want GET /", r.URL.Path)
	}
	const taps = 5
	for range taps {
		if r := pr.next(t); r.URL.Path != "/events/s-empty" {
			t.Fatalf("runner got %s, want its tap", r.URL.Path)
		}
	}
	mu.Lock()
	got := append([]time.Time(nil), at[:taps]...)
	mu.Unlock()
	for i := 1; i < taps; i++ {
		want := 100 * time.Millisecond << (i - 1)
		if gap := got[i].Sub(got[i-1]); gap < want {
			t.Errorf("tap %d came %v after the one before, want at least %v (backoff)", i+1, gap, want)
		}
	}
	resp.Body.Close()
	testenv.Eventually(t, 10*time.Second, func() error {
		if v, _ := metricValue(t, metrics, "agui_proxy_active_streams", `route="events"`); v != 0 {
			return errorf("active events streams %v after the client left, want 0", v)
		}
		return nil
	})
}

// TestEventsTapFailureFailsStream: a followed stream whose runner fails it
// fails the client's response (an unexpected EOF, as for a crashed runner)
// instead of ending as if all was said: a re-opened tap the runner refuses
// (404), and a tap that ends inside a frame (the next tap's events cannot
// follow half a frame). Before, the 405 ended the stream at once.
func TestEventsTapFailureFailsStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	turn := tapTurn("r1", true)
	for _, tc := range []struct {
		name   string
		second func(w http.ResponseWriter) // the second tap
		first  string                      // the first tap's body
	}{
		{name: "refused", first: turn, second: func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }},
		{name: "mid frame", first: turn + `data: {"type":"RUN_STA`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			taps := 0
			id := "s-fail-" + strings.ReplaceAll(tc.name, " ", "-")
			e.registerServerIn(t, id, "proj", func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/" {
					w.WriteHeader(http.StatusMethodNotAllowed)
					return
				}
				mu.Lock()
				taps++
				n := taps
				mu.Unlock()
				if n > 1 && tc.second != nil {
					tc.second(w)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, tc.first)
			})
			p := startProxy(t, e.proxyCfg())
			resp := get(t, p.session(id, "/agui/events"))
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			b, err := io.ReadAll(resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("stream ended with %v after %q, want unexpected EOF", err, b)
			}
			if !strings.HasPrefix(string(b), turn) {
				t.Fatalf("stream %q, want the first turn before the failure", b)
			}
		})
	}
}
