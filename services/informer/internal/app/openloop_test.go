package app_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// openLoopObjects is how many sessions the open-loop benchmark changes in
// turn: at 4,000 changes/s each is changed every 2.5 s, so no change
// coalesces with the next of its object.
const openLoopObjects = 10_000

// openLoopMembers consumer-group members take the events: libs/group hands
// each member one message at a time.
const openLoopMembers = 8

// BenchmarkOpenLoop issues session changes on a schedule (open loop: at
// the given rate whatever the system does, not as fast as it answers) for
// BENCH_OPEN_LOOP_SECONDS (default 10) per rate and reports, per change,
// the time from the API change (the object's updated_at, set by the API)
// to the entry of a consumer-group handler (p50-ms, p99-ms) and to the
// JetStream ack of its event (ack-p50-ms, ack-p99-ms: the informer's own
// part); the informer's CPU time per event (cpu-µs/event, from its own
// scheduler statistics: it runs as a child process), the time from that
// ack to the handler's entry (stream-p50-ms, stream-p99-ms: the consumer
// group's part, sourcing into its work stream and delivery included) and
// the load average at the start and the end (the machine is shared: read
// the figures with it).
func BenchmarkOpenLoop(b *testing.B) {
	secs := 10
	if v, err := strconv.Atoi(os.Getenv("BENCH_OPEN_LOOP_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	bin := buildInformer(b)
	for _, rate := range []int{1000, 4000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			for b.Loop() {
				openLoop(b, bin, rate, time.Duration(secs)*time.Second)
			}
		})
	}
}

func openLoop(b *testing.B, bin string, rate int, dur time.Duration) {
	b.Helper()
	e := newBenchEnv(b)
	e.seed(openLoopObjects)
	// No periodic resync unless BENCH_OPEN_LOOP_RESYNC asks for one (a Go
	// duration): a pass relists every session, once per RESYNC_PERIOD (10
	// min by default), which a 10 s window would catch far more often than
	// a user does; the knob measures what a pass costs the live events. A
	// starved machine can make the API drop watch events (its buffer holds
	// 256 per watcher); without the resync they are never seen, and
	// seen-ratio and api-dropped say so.
	var extra []string
	if v := os.Getenv("BENCH_OPEN_LOOP_RESYNC"); v != "" {
		extra = append(extra, config.EnvResyncPeriod+"="+v)
	}
	c := e.startChild(bin, extra...)
	defer c.stop(b)
	e.waitCount(events.StreamName, openLoopObjects, 5*time.Minute)
	ids := e.ids()

	// Consumers: handlers record the latency of the changes made under load
	// (their prompt says so), and count every event.
	var mu sync.Mutex
	lat := make([]time.Duration, 0, rate*int(dur/time.Second)) // guarded by mu
	entered := make(map[string]time.Time, cap(lat))            // guarded by mu: handler entry by event id
	var handled atomic.Int64
	handler := func(_ context.Context, m group.Message) error {
		now := time.Now()
		handled.Add(1)
		if s := m.Event.GetObject().GetSession(); strings.HasPrefix(s.GetPrompt(), "open-loop ") {
			d := now.Sub(events.UpdatedAt(m.Event.GetObject()))
			mu.Lock()
			lat = append(lat, d)
			entered[m.Header.Get(jetstream.MsgIDHeader)] = now
			mu.Unlock()
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range openLoopMembers {
		wg.Add(1)
		// Owned by openLoop: cancelled and awaited below.
		go func() {
			defer wg.Done()
			cfg := group.Config{Group: "bench", Member: fmt.Sprintf("m%d", i)}
			if err := group.Run(ctx, e.js, cfg, handler, testLogger(nil, "group")); err != nil {
				b.Error(err)
			}
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	if err := testenv.Poll(5*time.Minute, func() error {
		if n := handled.Load(); n < openLoopObjects {
			return fmt.Errorf("group handled %d of the %d initial events", n, openLoopObjects)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	// Measure a settled group: members joining at once rebalance for
	// several member TTLs, and a change made meanwhile waits out a
	// partition hand-off, which is not the steady latency this measures.
	if err := testenv.Poll(time.Minute, func() error { return groupSettled(e.js) }); err != nil {
		b.Fatal(err)
	}
	// And a settled watch: the informer lists again once after its first
	// list, to confirm that its watch was registered (see
	// watch.Config.ConfirmAfter): on a quiet stream 5 s after the first
	// list, or at the first event, which would be the first change issued
	// below. That relist is part of a start, not of the steady state.
	if err := testenv.Poll(time.Minute, func() error {
		if n := c.counter("informer_relists_total", `resource="sessions"`); n < 2 {
			return fmt.Errorf("informer listed sessions %v times, want the confirming list too", n)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}

	total := rate * int(dur/time.Second)
	load0 := testenv.LoadAverage(b)
	cpu0 := testenv.CPUOf(b, c.cmd.Process.Pid)
	start := time.Now()
	issued := 0
	tick := time.NewTicker(time.Millisecond)
	for issued < total {
		<-tick.C
		due := min(total, int(time.Since(start).Seconds()*float64(rate)))
		for ; issued < due; issued++ {
			req := &ambientv1.UpdateSessionRequest{Id: ids[issued%len(ids)], Prompt: proto.String(fmt.Sprintf("open-loop %d", issued))}
			if _, err := e.api.Sessions().UpdateSession(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	}
	tick.Stop()
	issuing := time.Since(start)
	// Wait for every change, or until the handlers make no progress for
	// longer than the resync period: a rate the consumers cannot take is a
	// result (seen-ratio), not an error.
	last, lastAt := -1, time.Now()
	if err := testenv.Poll(5*time.Minute, func() error {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		switch {
		case n >= total:
			return nil
		case n != last:
			last, lastAt = n, time.Now()
		case time.Since(lastAt) > 15*time.Second:
			b.Logf("handlers stopped at %d of %d changes (api dropped %d)", n, total, e.api.Dropped())
			return nil
		}
		return fmt.Errorf("handlers saw %d of %d changes", n, total)
	}); err != nil {
		b.Logf("%v", err)
	}
	cpu := testenv.CPUOf(b, c.cmd.Process.Pid) - cpu0
	load1 := testenv.LoadAverage(b)
	acks := e.latencies(openLoopObjects)

	mu.Lock()
	after := make([]time.Duration, 0, len(entered))
	for id, at := range entered {
		if st, ok := acks.stored[id]; ok {
			after = append(after, at.Sub(st))
		}
	}
	slices.Sort(after)
	slices.Sort(lat)
	seen := len(lat)
	p50, p99 := lat[seen/2], lat[seen*99/100]
	mu.Unlock()
	b.ReportMetric(float64(seen)/float64(total), "seen-ratio")
	b.ReportMetric(float64(total)/issuing.Seconds(), "changes/s")
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(acks.p50), "ack-p50-ms")
	b.ReportMetric(ms(acks.p99), "ack-p99-ms")
	if len(after) > 0 {
		b.ReportMetric(ms(after[len(after)/2]), "stream-p50-ms")
		b.ReportMetric(ms(after[len(after)*99/100]), "stream-p99-ms")
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(total), "cpu-µs/event")
	b.ReportMetric(load0, "loadavg-start")
	b.ReportMetric(load1, "loadavg-end")
	b.ReportMetric(float64(e.api.Dropped()), "api-dropped")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ids returns the ids of every session in the API.
func (e *benchEnv) ids() []string {
	e.b.Helper()
	resp, err := e.api.Sessions().ListSessions(context.Background(), &ambientv1.ListSessionsRequest{Page: 1, Size: 1})
	if err != nil {
		e.b.Fatal(err)
	}
	total := int(resp.GetMetadata().GetTotal())
	out := make([]string, 0, total)
	for page := int32(1); len(out) < total; page++ {
		resp, err := e.api.Sessions().ListSessions(context.Background(), &ambientv1.ListSessionsRequest{Page: page, Size: 500})
		if err != nil {
			e.b.Fatal(err)
		}
		if len(resp.GetItems()) == 0 {
			break
		}
		for _, s := range resp.GetItems() {
			out = append(out, s.GetMetadata().GetId())
		}
	}
	return out
}

// groupSettled reports whether every open-loop member owns partitions and
// consumes them: the mapping names all members, none unassigned, and each
// member's consumer filters exactly its partitions.
func groupSettled(js jetstream.JetStream) error {
	ctx := context.Background()
	cfg, err := pcgroups.GetElasticConsumerGroupConfig(ctx, js, events.StreamName, "bench")
	if err != nil {
		return err
	}
	if len(cfg.MemberMappings) != openLoopMembers {
		return fmt.Errorf("mapping %v: want %d members", cfg.MemberMappings, openLoopMembers)
	}
	for _, mm := range cfg.MemberMappings {
		c, err := js.Consumer(ctx, group.WorkStreamName(events.StreamName, "bench"), mm.Member)
		if err != nil {
			return fmt.Errorf("consumer %s: %w", mm.Member, err)
		}
		if got := len(c.CachedInfo().Config.FilterSubjects); got != len(mm.Partitions) {
			return fmt.Errorf("consumer %s filters %d partitions, owns %d", mm.Member, got, len(mm.Partitions))
		}
	}
	return nil
}
