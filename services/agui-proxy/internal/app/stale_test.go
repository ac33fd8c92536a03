package app_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/testenv"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/config"
)

// cutOffProxy starts a bucket, a proxy that reaches NATS through a link the
// test can cut (with ROUTES_STALE_AFTER=staleAfter, read as the binary reads
// it; "" keeps the default) and returns them with the proxy's log.
func cutOffProxy(t *testing.T, staleAfter string) (*env, *testenv.Link, *proxyHandle, *testenv.Buffer) {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	kv, err := js.CreateKeyValue(t.Context(), bus.RunnersBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{nats: srv, kv: kv}
	vars := map[string]string{}
	if staleAfter != "" {
		vars["ROUTES_STALE_AFTER"] = staleAfter
	}
	cfg, err := config.FromEnv(envconfig.Map(vars))
	if err != nil {
		t.Fatal(err)
	}
	// As proxyCfg, on the configuration read.
	test := e.proxyCfg()
	cfg.ListenAddr, cfg.MetricsAddr, cfg.SSEKeepAlive, cfg.ShutdownTimeout = test.ListenAddr, test.MetricsAddr, test.SSEKeepAlive, test.ShutdownTimeout
	link := testenv.NewLink(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	cfg.NATS.URL = "nats://" + link.Addr()
	p, log := startProxyLogged(t, cfg)
	return e, link, p, log
}

// cut cuts the proxy's link to NATS and waits until the proxy saw it.
func cut(t *testing.T, link *testenv.Link, log *testenv.Buffer) {
	t.Helper()
	link.Cut()
	testenv.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(log.String(), "nats disconnected") {
			return errors.New("proxy has not seen its NATS connection cut")
		}
		return nil
	})
}

// TestStaleTableStopsRouting: while only the proxy is cut off from NATS,
// runner-manager (still connected) releases session s-a of project-a and
// gives its port to s-b of project-b at once (the worst case: it waits
// PORT_REUSE_DELAY). The proxy's table still routes s-a to that port. Once
// the table has not been confirmed current for ROUTES_STALE_AFTER, the
// proxy must not route by it: s-a gets 503 with Retry-After (never s-b's
// runner, another project's) and /readyz fails, so a load balancer sends
// the traffic to a replica that sees NATS. Once NATS is back, a fresh
// snapshot replaces the table: s-a is 404, s-b routes.
func TestStaleTableStopsRouting(t *testing.T) {
	t.Parallel()
	e, link, p, log := cutOffProxy(t, "1s")
	ra := startRunner(t, "s-a")
	epA := ra.endpoint(t, "s-a")
	epA.ProjectID = "project-a"
	e.register(t, epA)
	if code := statusOf(t, p.session("s-a", "/health")); code != http.StatusOK {
		t.Fatalf("s-a before the cut: %d", code)
	}

	cut(t, link, log)
	ra.stop(t)
	e.release(t, "s-a")
	_, port, err := net.SplitHostPort(ra.addr)
	if err != nil {
		t.Fatal(err)
	}
	rb := startRunner(t, "s-b", "AGUI_PORT="+port)
	epB := rb.endpoint(t, "s-b")
	epB.ProjectID = "project-b"
	e.register(t, epB)

	// Hang guard only: the bound is 1s.
	testenv.Eventually(t, 30*time.Second, func() error {
		err := p.ready(t)
		if err == nil {
			return errors.New("proxy still ready, cut off from NATS past ROUTES_STALE_AFTER=1s")
		}
		if !strings.Contains(err.Error(), "stale") {
			return fmt.Errorf("proxy unready for another reason than a stale table: %w", err)
		}
		return nil
	})
	for _, id := range []string{"s-a", "s-b"} {
		resp := get(t, p.session(id, "/health"))
		msg := jsonError(t, resp)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || msg != "routing table stale" {
			t.Fatalf("%s with a stale table: %d %q Retry-After %q; want 503 \"routing table stale\", Retry-After 1",
				id, resp.StatusCode, msg, resp.Header.Get("Retry-After"))
		}
	}

	link.Restore()
	testenv.Eventually(t, 30*time.Second, func() error { return p.ready(t) })
	if code := statusOf(t, p.session("s-a", "/health")); code != http.StatusNotFound {
		t.Fatalf("released s-a after the reconnect: %d, want 404", code)
	}
	if body := bodyOf(t, p.session("s-b", "/health")); !strings.Contains(body, `"session_id":"s-b"`) {
		t.Fatalf("s-b after the reconnect: %s, want its runner's health", body)
	}
}

// TestSessionRegisteredWhileCutOffIs503: while the proxy is cut off from
// NATS (within ROUTES_STALE_AFTER, the default), runner-manager registers
// session s-c. The proxy cannot know it: its table is frozen and its read
// of the bucket fails. It must not answer 404 "unknown session", which
// tells a client the session does not exist, but 503 with Retry-After: 1.
// A session the bucket does not hold stays 404 while the proxy sees NATS.
func TestSessionRegisteredWhileCutOffIs503(t *testing.T) {
	t.Parallel()
	e, link, p, log := cutOffProxy(t, "")
	if code := statusOf(t, p.session("s-none", "/health")); code != http.StatusNotFound {
		t.Fatalf("session without a record, proxy connected: %d, want 404", code)
	}
	cut(t, link, log)
	rc := startRunner(t, "s-c")
	e.register(t, rc.endpoint(t, "s-c"))
	resp := get(t, p.session("s-c", "/health"))
	msg := jsonError(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("session s-c, registered while the proxy is cut off from NATS: %d %q Retry-After %q; want 503 with Retry-After 1, the proxy cannot know",
			resp.StatusCode, msg, resp.Header.Get("Retry-After"))
	}
	link.Restore()
	testenv.Eventually(t, 30*time.Second, func() error {
		if code := statusOf(t, p.session("s-c", "/health")); code != http.StatusOK {
			return fmt.Errorf("s-c after the reconnect: %d, want 200", code)
		}
		return nil
	})
}

// TestBucketRecreatedRoutesNewBucket: the runners bucket is lost and created
// again (JetStream storage lost, "nats kv rm", runner-manager creating it at
// its start) while the proxy stays connected. The new bucket's revisions
// start anew, below the ones the table's watch applied. A runner registered
// in the new bucket must be routed at once, as after any registration, and
// a session of the lost bucket must no longer be routed.
func TestBucketRecreatedRoutesNewBucket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	old := startRunner(t, "s-old")
	e.register(t, old.endpoint(t, "s-old"))
	// Some history, so the old bucket's revisions are ahead of the new one's.
	for _, id := range []string{"s-x1", "s-x2", "s-x3", "s-x4", "s-x5"} {
		e.register(t, old.endpoint(t, id))
	}
	p := startProxy(t, e.proxyCfg())
	if code := statusOf(t, p.session("s-old", "/health")); code != http.StatusOK {
		t.Fatalf("s-old before: %d", code)
	}
	_, js := testenv.JetStream(t, e.nats)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := js.DeleteKeyValue(ctx, bus.BucketRunners); err != nil {
		t.Fatal(err)
	}
	// In memory: the test server removes the deleted bucket's directory in
	// the background, and a file bucket created at once fails or finds
	// the old messages now and then.
	kcfg := bus.RunnersBucket(1)
	kcfg.Storage = jetstream.MemoryStorage
	kv, err := js.CreateKeyValue(ctx, kcfg)
	if err != nil {
		t.Fatal(err)
	}
	e.kv = kv
	r := startRunner(t, "s-new")
	e.register(t, r.endpoint(t, "s-new"))
	newCode := statusOf(t, p.session("s-new", "/health"))
	oldCode := statusOf(t, p.session("s-old", "/health"))
	if newCode != http.StatusOK || oldCode != http.StatusNotFound {
		t.Fatalf("after the bucket was recreated: s-new (registered in the new bucket) %d, want 200; s-old (lost with the old bucket) %d, want 404", newCode, oldCode)
	}
	if err := p.ready(t); err != nil {
		t.Fatalf("proxy unready after the bucket was recreated: %v", err)
	}
}
