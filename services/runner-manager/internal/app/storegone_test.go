package app_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestBucketsLostRecreated: the runners and members buckets deleted while
// a session runs (a NATS server restarted without its JetStream store)
// come back; the running session's record is written again by its owner
// with its endpoint (agui-proxy routes it again, peers see it claimed), the
// heartbeat is back, and a new session gets a runner and reaches Running.
func TestBucketsLostRecreated(t *testing.T) {
	w := newWorld(t)
	svc := w.start("rm-0", 5)
	id := w.create("before")
	w.waitAll([]string{id}, "Running", 10*time.Second)
	before, err := w.record(id)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, b := range []string{bus.BucketRunners, bus.BucketRunnerMembers} {
		if err := w.js.DeleteKeyValue(ctx, b); err != nil {
			t.Fatalf("delete %s: %v", b, err)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		rec, err := w.record(id)
		if err != nil {
			return fmt.Errorf("record of the running session: %w", err)
		}
		if rec.Owner != svc.member || rec.Host != before.Host || rec.Port != before.Port || rec.PID != before.PID || !rec.Routable() {
			return fmt.Errorf("record %+v, want %+v's owner and endpoint", rec.Endpoint, before.Endpoint)
		}
		members, err := w.js.KeyValue(ctx, bus.BucketRunnerMembers)
		if err != nil {
			return fmt.Errorf("members bucket: %w", err)
		}
		if keys, err := members.ListKeys(ctx); err != nil {
			return fmt.Errorf("members keys: %w", err)
		} else if n := len(drain(keys.Keys())); n != 1 {
			return fmt.Errorf("%d heartbeats, want 1", n)
		}
		return nil
	})
	id2 := w.create("after")
	w.waitAll([]string{id2}, "Running", 20*time.Second)
	rec, err := w.record(id2)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Owner != svc.member || !rec.Routable() {
		t.Fatalf("new session's record %+v, want routable and %s's", rec.Endpoint, svc.member)
	}
	if _, err := w.record(id); errors.Is(err, registry.ErrNotFound) {
		t.Fatal("running session's record gone again")
	}
}

// drain reads every key of a key lister's channel.
func drain(ch <-chan string) []string {
	var out []string
	for k := range ch {
		out = append(out, k)
	}
	return out
}
