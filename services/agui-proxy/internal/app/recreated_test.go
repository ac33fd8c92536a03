package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRecreatedBucketSessionNot404: the runners bucket is deleted and
// created again, and a session registered in the new one is asked for at
// once by several clients (a UI's first requests). None may be told 404
// "unknown session": the session exists and is routable. While the
// routing table reads the new bucket a request may get 503 (retried
// here, as a client does); then the runner answers. The table's reopen
// races the requests' bucket checks, so this is a loop: a check that
// landed between the reopen taking the new bucket as its own and the new
// snapshot answered 404 (registry's TestTableResolveWhileReopening
// pins that moment deterministically).
func TestRecreatedBucketSessionNot404(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := startProxy(t, e.proxyCfg())
	_, js := testenv.JetStream(t, e.nats)
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	const rounds, clients = 30, 12
	wrong := map[int]int{} // status code (0: no answer) -> requests
	for round := range rounds {
		// Revisions of the old bucket ahead of the new one's first ones.
		for i := range 6 {
			e.registerServer(t, fmt.Sprintf("s-old%d-%d", round, i), ok)
		}
		testenv.Eventually(t, 30*time.Second, func() error {
			if code := statusOf(t, p.session(fmt.Sprintf("s-old%d-5", round), "/health")); code != http.StatusOK {
				return fmt.Errorf("old session: %d", code)
			}
			return nil
		})
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		if err := js.DeleteKeyValue(ctx, bus.BucketRunners); err != nil {
			t.Fatal(err)
		}
		// In memory: a file stream created again at once can meet the
		// old one's directory, still being removed.
		kcfg := bus.RunnersBucket(1)
		kcfg.Storage = jetstream.MemoryStorage
		kv, err := js.CreateKeyValue(ctx, kcfg)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		e.kv = kv
		id := fmt.Sprintf("s-new%d", round)
		e.registerServer(t, id, ok)
		codes := make(chan int, clients)
		rctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // hang guard
		for range clients {
			go func() { // owned by this test: ends with an answer other than 503, or rctx
				for {
					req, err := http.NewRequestWithContext(rctx, http.MethodGet, p.session(id, "/health"), nil)
					if err != nil {
						codes <- 0
						return
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						codes <- 0
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusServiceUnavailable {
						codes <- resp.StatusCode
						return
					}
				}
			}()
		}
		for range clients {
			if code := <-codes; code != http.StatusOK {
				wrong[code]++
			}
		}
		cancel()
	}
	if len(wrong) > 0 {
		t.Fatalf("requests for a session registered in the recreated bucket (of %d), by status (0: no answer within 30s): %v; want 200 (404 is \"unknown session\" for a session that exists)",
			rounds*clients, wrong)
	}
}
