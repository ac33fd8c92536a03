package cli

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestUsageErrorsExit2: every way of calling a command wrongly is a usage
// error (exit 2, as Execute documents), checked before anything reaches the
// network: a wrong number of arguments, an unknown subcommand of a command
// group (which cobra answers with the group's help and success, so a
// script's `sessions stat ID` looked done), a negative count and an output
// format no command knows, whatever the command.
func TestUsageErrorsExit2(t *testing.T) {
	tally := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"resources":{}}`)
	}))
	t.Cleanup(tally.Close)
	const closed = "127.0.0.1:1"
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"sessions", "start"}, "accepts 1 arg(s), received 0"},
		{[]string{"sessions", "get", "a", "b"}, "accepts 1 arg(s), received 2"},
		{[]string{"sessions", "list", "extra"}, `unknown command "extra" for "ambientctl sessions list"`},
		{[]string{"chat", "s1"}, "accepts 2 arg(s), received 1"},
		{[]string{"sessions", "stat", "s1"}, `unknown command "stat" for "ambientctl sessions"`},
		{[]string{"projects", "lst"}, `unknown command "lst" for "ambientctl projects"`},
		{[]string{"dlq", "lsit"}, `unknown command "lsit" for "ambientctl dlq"`},
		{[]string{"follow", "s1", "--runs", "-1"}, "--runs"},
		{[]string{"events", "tail", "--count", "-1"}, "--count"},
		{[]string{"dlq", "list", "--limit", "-1"}, "--limit"},
		{[]string{"sessions", "create", "n", "--timeout-seconds", "-5"}, `--timeout-seconds: want 0 (the server's default) or more, got "-5"`},
		{[]string{"tally", "-o", "yaml"}, `--output: want table or json, got "yaml"`},
		{[]string{"dlq", "list", "-o", "yaml"}, `--output: want table or json, got "yaml"`},
		{[]string{"sessions", "list", "-o", "wide"}, `--output: want table or json, got "wide"`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			h := newHarness(t, nil)
			h.env[EnvAPIAddr] = closed
			h.env[EnvRESTURL] = "http://" + closed
			h.env[EnvNATSURL] = "nats://" + closed
			h.env[EnvProxyURL] = "http://" + closed
			h.env[EnvTallyURL] = tally.URL // reachable: a format it ignored would succeed
			out, stderr, code := h.run(append([]string{"--timeout", "3s"}, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, tc.want)
			}
			if out != "" || strings.Contains(stderr, "cannot reach") || strings.Contains(stderr, "connect to NATS") {
				t.Errorf("stdout %q, stderr %q: ran instead of refusing", out, stderr)
			}
		})
	}
	// A group alone (or with --help) still shows its help and succeeds.
	h := newHarness(t, nil)
	for _, args := range [][]string{{"sessions"}, {"sessions", "--help"}, {}} {
		if out := h.mustRun(args...); !strings.Contains(out, "Usage:") {
			t.Errorf("ambientctl %v: output %q, want the help", args, out)
		}
	}
}

// TestHelpNamesFlagValues: a flag's help names its value's type; pflag
// takes a `quoted` word of the help text as the value's name instead, so
// --help showed "--rest sessions start/stop" as if that were the value.
func TestHelpNamesFlagValues(t *testing.T) {
	out := newHarness(t, nil).mustRun("--help")
	for _, want := range []string{"--rest string", "--nats string", "--proxy string"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
}

// TestTrailingSlashInURLs: a base URL given with a trailing slash
// ("http://host:9080/", as often copied from a browser) reaches the same
// endpoints as without; it used to ask the proxy for //sessions/..., which
// its router does not know, and report "no runner registered".
func TestTrailingSlashInURLs(t *testing.T) {
	// Exact paths only, as the agui-proxy's and event-tally's routers match.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sessions/s1/agui/run":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"delta\":\"hi\"}\n\ndata: {\"type\":\"RUN_FINISHED\"}\n\n")
		case "/tally":
			fmt.Fprint(w, `{"resources":{}}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"not found"}`)
		}
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, nil)
	h.env[EnvProxyURL] = srv.URL + "/"
	h.env[EnvTallyURL] = srv.URL + "/"
	if out := h.mustRun("chat", "s1", "hello"); out != "hi" {
		t.Errorf("chat output %q", out)
	}
	h.mustRun("tally")
}
