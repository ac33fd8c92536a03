package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/app"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/config"
)

// TestUnusableRunnersBucketStopsTheProxy: a bucket name JetStream refuses
// (config validation stops it before, but the app must not rely on that)
// or a stream of the bucket's name that is not a KV bucket can never be
// opened. The proxy used to retry forever, unready with "routing table not
// synced"; it now stops with an error naming RUNNERS_BUCKET.
func TestUnusableRunnersBucketStopsTheProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, js := testenv.JetStream(t, e.nats)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A plain stream where the KV bucket "plain" would be: no per-subject
	// history limit, so JetStream says it is not a KV bucket.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KV_plain", Subjects: []string{"$KV.plain.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	for _, tc := range []struct {
		bucket string
		want   error
	}{
		{"bad.name", jetstream.ErrInvalidBucketName},
		{"plain", jetstream.ErrBadBucket},
	} {
		t.Run(tc.bucket, func(t *testing.T) {
			t.Parallel()
			cfg := e.proxyCfg()
			cfg.RunnersBucket = tc.bucket
			err := runUntilStopped(t, cfg)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), config.EnvRunnersBucket) {
				t.Fatalf("Run = %v, want %v naming %s", err, tc.want, config.EnvRunnersBucket)
			}
		})
	}
}

// runUntilStopped runs the proxy app and returns what Run returns on its
// own; the test fails if it does not stop, and the app is then cancelled.
func runUntilStopped(t *testing.T, cfg config.Config) error {
	t.Helper()
	a, err := app.New(cfg, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)        // Run's result
	go func() { errc <- a.Run(ctx) }() // owned by the test; waited for below
	select {
	case err := <-errc:
		return err
	case <-time.After(30 * time.Second): // a guard against a hang, not a timing
		cancel()
		t.Fatalf("the proxy kept running: Run returned only when cancelled (%v)", <-errc)
		return nil
	}
}

// TestReadyWithoutRunnersBucket: with no runners bucket (no runner-manager
// has run: a kube-only installation, the chart's default) the proxy is
// ready and answers every session 404; it used to stay unready for good.
// Once a runner-manager creates the bucket, its runners are routed.
func TestReadyWithoutRunnersBucket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.proxyCfg()
	cfg.RunnersBucket = "later_runners"
	p := startProxy(t, cfg) // waits for readiness
	if code := getStatus(t, p.session("s-later", "/health")); code != http.StatusNotFound {
		t.Fatalf("GET health of a session with no bucket: %d, want 404", code)
	}

	kv := e.runnersBucket(t, cfg.RunnersBucket)
	r := startRunner(t, "s-later")
	if _, err := registry.Claim(t.Context(), kv, r.endpoint(t, "s-later")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if code := getStatus(t, p.session("s-later", "/health")); code != http.StatusOK {
			return fmt.Errorf("GET health: %d, want 200 once the bucket exists", code)
		}
		return p.ready(t)
	})
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp := get(t, url)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestRoutesRunnerOfABucketJustCreated: the first runner of a system is
// routed at once, although the proxy had found no runners bucket and would
// look again only a second later. At a start (make run) runner-manager
// creates the bucket, registers a runner and reports its session Running
// within that second, and a client that opened its stream at once got 404
// "unknown session". No retry here: the request right after the runner's
// registration must reach it.
func TestRoutesRunnerOfABucketJustCreated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.proxyCfg()
	cfg.RunnersBucket = "first_runners"
	p := startProxy(t, cfg) // ready without the bucket
	kv := e.runnersBucket(t, cfg.RunnersBucket)
	r := startRunner(t, "s-first")
	if _, err := registry.Claim(t.Context(), kv, r.endpoint(t, "s-first")); err != nil {
		t.Fatal(err)
	}
	if code := getStatus(t, p.session("s-first", "/health")); code != http.StatusOK {
		t.Fatalf("GET health of the first runner right after it registered: %d, want 200", code)
	}
	if code := getStatus(t, p.session("s-none", "/health")); code != http.StatusNotFound {
		t.Fatalf("GET health of a session without a runner: %d, want 404", code)
	}
}

// runnersBucket creates the runners bucket called name, as runner-manager
// does at its start.
func (e *env) runnersBucket(t *testing.T, name string) jetstream.KeyValue {
	t.Helper()
	_, js := testenv.JetStream(t, e.nats)
	c := bus.RunnersBucket(1)
	c.Bucket = name
	kv, err := bus.EnsureKV(t.Context(), js, c)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
