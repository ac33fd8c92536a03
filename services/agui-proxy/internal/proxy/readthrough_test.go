package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// lagsUntilRead is a runners bucket whose watchers lag it until someone
// reads a key from it: the routing table's watch brings a record only
// after the proxy has read it, never before.
type lagsUntilRead struct{ *testenv.HeldKV }

func (l lagsUntilRead) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := l.HeldKV.Get(ctx, key)
	l.Release()
	return e, err
}

// TestRoutesRunnerRegisteredJustNow: a runner registered in the bucket a
// moment ago, before the routing table's watch has brought its record, is
// routed, not answered 404 "unknown session" (seen in the quick start:
// runner-manager registers the runner and then reports Running, and
// ambientctl chat opened the stream the moment it read Running). The
// proxy reads the record and routes once its table has it.
func TestRoutesRunnerRegisteredJustNow(t *testing.T) {
	t.Parallel()
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "healthy")
	}))
	t.Cleanup(runner.Close)
	_, js := testenv.JetStream(t, testenv.NATS(t))
	bucket, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "ambient-runners"})
	if err != nil {
		t.Fatal(err)
	}
	kv := lagsUntilRead{testenv.HoldUpdates(bucket)}
	tab := registry.NewTable()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tab.Run(ctx, kv) }() // ends on cancel
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("table: %v", err)
		}
	})
	<-tab.Synced()
	_, srv := startProxy(t, Config{Synced: tab.Ready}, tab, nil)

	ep := endpointOf(t, "s1", runner.URL)
	ep.ProjectID = "p"
	if _, err := registry.Claim(t.Context(), kv, ep); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL + "/sessions/s1/health")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "healthy" {
		t.Fatalf("runner registered just now: %d %q (%v), want 200 from the runner", resp.StatusCode, body, err)
	}
	resp, err = http.Get(srv.URL + "/sessions/s-none/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("session with no record: %d, want 404", resp.StatusCode)
	}
}
