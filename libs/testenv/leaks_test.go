package testenv_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestNATSServerLeaksMatchTheServer makes an embedded server leave its
// source-consumer wait behind, as it did in CI, and checks that goleak sees
// that goroutine and that NATSServerLeaks names it. A nats-server upgrade
// that renames the function fails here, not in some later CI run.
func TestNATSServerLeaksMatchTheServer(t *testing.T) {
	before := goleak.IgnoreCurrent()
	// An earlier run in this process (go test -count=2) leaves its own wait
	// alive for 30 s: only a wait more than those counts as this run's.
	waitsBefore := sourceConsumerWaits()
	srv := testenv.NATS(t)
	nc, js := testenv.JetStream(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A source behind an API prefix nobody answers: the server's request
	// for the source consumer gets no reply, so its wait runs its full 30 s.
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SOURCED",
		Sources: []*jetstream.StreamSource{{
			Name:     "ELSEWHERE",
			External: &jetstream.ExternalStream{APIPrefix: "$JS.nowhere.API"},
		}},
	})
	if err != nil {
		t.Fatalf("create sourced stream: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if sourceConsumerWaits() <= waitsBefore {
			return errors.New("no goroutine waits for the source consumer yet")
		}
		return nil
	})
	nc.Close()
	srv.Shutdown()

	if err := goleak.Find(before); err == nil {
		t.Fatal("no goroutine outlived the server: the test no longer reproduces the leak")
	}
	if err := goleak.Find(append(testenv.NATSServerLeaks(), before)...); err != nil {
		t.Fatalf("NATSServerLeaks misses a goroutine the server leaves: %v", err)
	}
}

// sourceConsumerWaits counts the goroutines of this process that wait for a
// stream's source consumer.
func sourceConsumerWaits() int {
	stacks := make([]byte, 1<<20)
	stacks = stacks[:runtime.Stack(stacks, true)]
	return bytes.Count(stacks, []byte("server.(*stream).trySetupSourceConsumer.func3"))
}
