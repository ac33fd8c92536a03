// Command baseproxy is BenchmarkStreams100's yardstick: the smallest AG-UI
// relay the Go standard library makes (httputil.ReverseProxy flushing every
// write), with none of agui-proxy's routing table, authorization, tracing,
// metrics, keep-alives or write deadlines. What it costs per request and per
// relayed event on a machine is what net/http itself costs there, so the
// benchmark prints it beside agui-proxy's figures.
//
// Configuration: BASEPROXY_ADDR (listen address) and BASEPROXY_ROUTES,
// comma-separated session=runner-base-URL pairs; POST
// /sessions/{id}/agui/run goes to the runner's "/".
package main

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "baseproxy:", err)
		os.Exit(1)
	}
}

func run() error {
	proxies := map[string]*httputil.ReverseProxy{}
	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 64, DisableCompression: true}
	for pair := range strings.SplitSeq(os.Getenv("BASEPROXY_ROUTES"), ",") {
		id, raw, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("BASEPROXY_ROUTES: %q is not session=url", pair)
		}
		target, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("BASEPROXY_ROUTES: %w", err)
		}
		proxies[id] = &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(target)
				r.Out.URL.Path = "/"
			},
			FlushInterval: -1,
			Transport:     tr,
		}
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/sessions/"), "/agui/run")
		rp, ok := proxies[id]
		if !ok {
			http.NotFound(w, r)
			return
		}
		// Without it the server closes the request body once the response
		// starts, and a transport still reading it (to see its end) fails
		// the upstream connection mid-stream.
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: os.Getenv("BASEPROXY_ADDR"), Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	return fmt.Errorf("serve: %w", srv.ListenAndServe())
}
