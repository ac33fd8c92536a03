package resync

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"k8s.io/client-go/kubernetes"
)

// failsFirstPass is orphanRec whose orphans in fail fail only in the first
// pass, as during a Kubernetes outage that ends; passes receives each
// pass's number as it starts.
type failsFirstPass struct {
	orphanRec
	n      int // guarded by orphanRec.mu
	passes chan int
}

func (f *failsFirstPass) StartPass() {
	f.mu.Lock()
	f.n++
	n := f.n
	if n > 1 {
		f.fail = nil
	}
	f.mu.Unlock()
	select {
	case f.passes <- n:
	default: // the test reads only the first passes
	}
}

// TestRunRetriesFailedPassEarly: a pass that left an object failed is
// retried after a short backoff, not a whole interval later, and a clean
// pass returns to the interval. Every pass waited the interval (5 min by
// default), so events dead-lettered in a Kubernetes outage were repaired
// minutes after it ended.
func TestRunRetriesFailedPassEarly(t *testing.T) {
	t.Parallel()
	env := kubetest.StartT(t, kubetest.WithCRDs())
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, js := testenv.JetStream(t, testenv.NATS(t))
	objects, err := bus.EnsureKV(t.Context(), js, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &failsFirstPass{orphanRec: orphanRec{fail: map[string]bool{"s-bad": true}}, passes: make(chan int, 10)}
	const interval = time.Hour
	r, err := New(Config{Objects: objects, Reconciler: rec, CRs: crsOf{"s-bad"}, Kube: kube, Assignment: ownsAll{},
		Owner: spec.Owner{Instance: "retry"}, Interval: interval, Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// The production 10 s would only slow the test; the interval is what
	// must not be waited.
	r.retry.InitialInterval = 50 * time.Millisecond
	r.retry.Reset()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx, 0) }()
	for want := 1; want <= 2; want++ {
		select {
		case n := <-rec.passes:
			if n != want {
				t.Fatalf("pass %d started, want %d", n, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("pass %d did not start within 30s of the previous one (interval %s): a pass that left an orphan failed must be retried early", want, interval)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.sessions) != 2 {
			return fmt.Errorf("orphan s-bad tried %d times, want 2 (failed, then retried)", len(rec.sessions))
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v", err)
	}
	// The second pass was clean: the next waits the interval again.
	if got := r.next(t.Context(), Summary{}, nil); got < time.Duration(float64(interval)*(1-jitter)) {
		t.Errorf("wait after a clean pass = %s, want the interval %s (+/-10%%)", got, interval)
	}
}
