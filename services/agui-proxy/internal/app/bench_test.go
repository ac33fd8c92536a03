package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// benchClient keeps enough idle connections for parallel benchmarks.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}}
}

// BenchmarkProxyVsDirect measures, in the same run against the same demo
// runner process, what the proxy adds: time to the first byte of an AG-UI
// run stream, and requests per second on GET /health.
//
//	go test -run '^$' -bench ProxyVsDirect -benchtime 2s ./internal/app/
func BenchmarkProxyVsDirect(b *testing.B) {
	e := newEnv(b)
	r := startRunner(b, "s-bench", "DEMO_WORD_DELAY=0")
	e.register(b, r.endpoint(b, "s-bench"))
	p := startProxy(b, e.proxyCfg())
	client := benchClient()
	body := runInput("one two three")
	targets := []struct{ name, run, health string }{
		{name: "direct", run: r.url("/"), health: r.url("/health")},
		{name: "proxy", run: p.session("s-bench", "/agui/run"), health: p.session("s-bench", "/health")},
	}
	for _, tg := range targets {
		b.Run("first-byte/"+tg.name, func(b *testing.B) {
			b.ReportAllocs()
			var total time.Duration
			buf := make([]byte, 1)
			for b.Loop() {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, tg.run, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "text/event-stream")
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(resp.Body, buf); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N), "ttfb-µs")
		})
	}
	for _, tg := range targets {
		b.Run("health-rps/"+tg.name, func(b *testing.B) {
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(tg.health)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}
