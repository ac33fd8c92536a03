package cli

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRedirectsAreNotFollowed: an agui-proxy or event-tally URL that answers
// with a redirect is an error naming the target, and the target sees no
// request: net/http would send the chat (a POST after a 307, a GET after a
// 302) and the proxy token on to another port of the same host.
func TestRedirectsAreNotFollowed(t *testing.T) {
	reached := make(chan string, 10) // requests the redirect target saw
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- r.Method + " " + r.URL.Path + " auth=" + r.Header.Get("Authorization")
		if r.URL.Path == "/tally" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"resources":{}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"type\":\"RUN_STARTED\"}\n\ndata: {\"type\":\"RUN_FINISHED\"}\n\n")
	}))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+r.URL.Path, code)
			}))
			t.Cleanup(front.Close)
			h := newHarness(t, nil)
			h.env[EnvProxyURL] = front.URL
			h.env[EnvProxyToken] = "secret"
			h.env[EnvTallyURL] = front.URL
			for _, tc := range []struct {
				args []string
				want string
			}{
				{[]string{"chat", "s1", "hi"}, "POST " + front.URL + "/sessions/s1/agui/run answered " + fmt.Sprint(code)},
				{[]string{"tally"}, "GET " + front.URL + "/tally answered " + fmt.Sprint(code)},
			} {
				_, errs, exit := h.run(tc.args...)
				if exit != 1 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "redirecting to "+target.URL) {
					t.Errorf("ambientctl %v: exit %d, stderr %q; want exit 1 and %q", tc.args, exit, errs, tc.want)
				}
			}
			select {
			case r := <-reached:
				t.Errorf("the redirect target got %s", r)
			default:
			}
		})
	}
}
