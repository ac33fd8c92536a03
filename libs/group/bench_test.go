package group_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// BenchmarkThroughput measures one member's events/s with a handler of a
// fixed latency (benchLatency, as if it called an API), 64 objects x 8
// events per iteration, holding 1 message at a time (before lanes) vs 64
// in per-object lanes. Each iteration publishes the batch asynchronously
// and ends when the member has acked all of it.
func BenchmarkThroughput(b *testing.B) {
	const (
		objects, versions = 64, 8
		benchLatency      = 2 * time.Millisecond
	)
	for _, inFlight := range []int{1, 64} {
		b.Run(fmt.Sprintf("max_in_flight=%d", inFlight), func(b *testing.B) {
			srv, js := setup(b)
			cfg := testConfig("a")
			cfg.MaxInFlight = inFlight
			startMember(b, srv, cfg, func(ctx context.Context, _ group.Message) error {
				select {
				case <-time.After(benchLatency):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			waitMembers(b, js, "a")
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var total uint64
			for i := range b.N {
				for v := 1; v <= versions; v++ {
					for o := range objects {
						if _, err := js.PublishMsgAsync(eventMsg(b, b.Context(), fmt.Sprintf("obj-%02d", o), i*versions+v)); err != nil {
							b.Fatalf("publish: %v", err)
						}
					}
				}
				select {
				case <-js.PublishAsyncComplete():
				case <-time.After(time.Minute):
					b.Fatal("publishes not acknowledged")
				}
				total += objects * versions
				testenv.Eventually(b, 5*time.Minute, func() error {
					if n := cfg.Stats.Snapshot().Acked; n < total {
						return fmt.Errorf("%d of %d acked", n, total)
					}
					return nil
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(total)/time.Since(start).Seconds(), "events/s")
		})
	}
}
