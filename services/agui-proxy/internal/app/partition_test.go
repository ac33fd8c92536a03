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
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReleasedWhileCutOffNotRouted: the proxy alone loses NATS for longer
// than a release's marker lives (runner-manager purges a stopped session's
// record with an expiring marker, RUNNERS_MARKER_TTL), and the port goes to
// another session's runner meanwhile. The proxy's watch resumes after the
// last message it saw and never sees the purge: without a fresh read after
// the reconnect, requests for the released session reach the other
// session's runner, for good, and /readyz says ready. While cut off for
// less than ROUTES_STALE_AFTER the proxy stays ready, routing from its last
// table: a short blip must not take it out of its Service (past the bound
// it goes unready: TestStaleTableStopsRouting).
func TestReleasedWhileCutOffNotRouted(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	kcfg := bus.RunnersBucket(1)
	kcfg.LimitMarkerTTL = time.Second
	kv, err := js.CreateKeyValue(ctx, kcfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{nats: srv, kv: kv}
	ra := startRunner(t, "s-a")
	e.register(t, ra.endpoint(t, "s-a"))

	link := testenv.NewLink(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	cfg := e.proxyCfg()
	cfg.NATS.URL = "nats://" + link.Addr()
	p, log := startProxyLogged(t, cfg)
	if code := statusOf(t, p.session("s-a", "/health")); code != http.StatusOK {
		t.Fatalf("s-a before the cut: %d", code)
	}

	link.Cut()
	testenv.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(log.String(), "nats disconnected") {
			return errors.New("proxy has not seen its NATS connection cut")
		}
		return nil
	})
	if err := p.app.Ready(ctx); err != nil {
		t.Errorf("proxy not ready while cut off from NATS: %v; want ready, routing from its last table", err)
	}
	// runner-manager stops s-a, purges its record and gives the port to s-b.
	ra.stop(t)
	if _, err := registry.Release(ctx, kv, "s-a", "test-manager", registry.WithMarkerTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(ra.addr)
	if err != nil {
		t.Fatal(err)
	}
	rb := startRunner(t, "s-b", "AGUI_PORT="+port)
	e.register(t, rb.endpoint(t, "s-b"))
	testenv.Eventually(t, 10*time.Second, func() error {
		st, err := kv.Status(ctx)
		if err != nil {
			return err
		}
		if st.Values() != 1 {
			return fmt.Errorf("bucket holds %d messages, want 1: s-b's record, s-a's marker expired", st.Values())
		}
		return nil
	})
	if _, err := kv.Get(ctx, registry.Key("s-a")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("s-a's key: %v, want not found", err)
	}

	link.Restore()
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := p.app.Ready(context.Background()); err != nil {
			return err
		}
		if code, body := statusOf(t, p.session("s-a", "/health")), bodyOf(t, p.session("s-b", "/health")); code != http.StatusNotFound {
			return fmt.Errorf("released s-a answers %d after the reconnect (s-b's runner on its port: %s), want 404", code, body)
		}
		return nil
	})
	if code := statusOf(t, p.session("s-b", "/health")); code != http.StatusOK {
		t.Fatalf("s-b after the reconnect: %d", code)
	}
}
