package app_test

import (
	"sync"
	"testing"
)

// TestConcurrentReadinessProbes: readiness probes that run at the same time
// all see the one NATS connection. The connection used to sit in a
// one-slot channel that each probe took and put back, so of two probes at
// once one reported "nats not connected yet" on a healthy proxy.
func TestConcurrentReadinessProbes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := startProxy(t, e.proxyCfg())
	const probers, probes = 4, 5000
	errs := make(chan error, probers) // at most one per prober
	var wg sync.WaitGroup
	for range probers {
		wg.Add(1)
		// Owned by the test: ends after its probes, awaited by wg.Wait.
		go func() {
			defer wg.Done()
			for range probes {
				if err := p.ready(t); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("probe of a ready proxy: %v", err)
	}
}
