package group_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// scraper is a Prometheus registry fed by an OTel meter provider, the way
// telemetry.Setup wires /metrics.
type scraper struct {
	reg *prometheus.Registry
	mp  *sdkmetric.MeterProvider
}

func newScraper(t *testing.T) *scraper {
	t.Helper()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() {
		if err := mp.Shutdown(context.WithoutCancel(t.Context())); err != nil {
			t.Errorf("meter provider shutdown: %v", err)
		}
	})
	return &scraper{reg: reg, mp: mp}
}

// values scrapes the registry and returns each consumer_group metric of
// group g by its Prometheus name, summed over its other labels.
func (s *scraper) values(g string) (map[string]float64, error) {
	families, err := s.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather: %w", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "group" || l.GetValue() != g {
					continue
				}
				switch {
				case m.GetCounter() != nil:
					out[f.GetName()] += m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					out[f.GetName()] += m.GetGauge().GetValue()
				}
			}
		}
	}
	return out, nil
}

// want waits until every named metric has its value.
func (s *scraper) want(t *testing.T, g string, want map[string]float64) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, func() error {
		got, err := s.values(g)
		if err != nil {
			return err
		}
		for name, w := range want {
			if got[name] != w {
				return fmt.Errorf("%s = %v, want %v (all: %v)", name, got[name], w, got)
			}
		}
		return nil
	})
}

// TestMetricsScraped: Run exports what every member did (deliveries,
// handled, retried, dead-lettered) and its backlog, labelled with the
// group, without the service registering anything.
func TestMetricsScraped(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	sc := newScraper(t)
	entered := make(chan string, 16) // more than the test's events: never blocks
	release := make(chan struct{})
	h := func(ctx context.Context, m group.Message) error {
		switch id := m.Event.GetObjectId(); id {
		case "retry":
			if m.Attempt == 1 {
				return errors.New("backend down once")
			}
		case "dead":
			return group.Terminal(errors.New("never valid"))
		default:
			entered <- id
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	cfg := testConfig("a")
	cfg.Meter = sc.mp.Meter("group-test")
	// One in flight: s2 waits in its lane for the handler slot (the
	// consumer's head-room for lanes in backoff), s3 and s4 on the server
	// (lag).
	cfg.MaxInFlight = 1
	startMember(t, srv, cfg, h)
	waitMembers(t, js, "a")

	// s1 holds the member while s2..s4 queue up behind it.
	publish(t, js, "s1", 1)
	waitEntered(t, entered, "s1")
	for _, id := range []string{"s2", "s3", "s4"} {
		publish(t, js, id, 1)
	}
	waitWorkQueue(t, js, 4)
	// Nothing was delivered since s2 (s1 holds the member's one slot, s2
	// the head-room): the backlog still shows, read from the consumer at
	// the heartbeat.
	sc.want(t, testGroup, map[string]float64{"consumer_group_lag": 2, "consumer_group_in_flight": 2})
	// Per partition: s1 (being handled) and s2..s4 (waiting) are the
	// work queue's backlog, each counted under its own partition.
	sc.want(t, testGroup, map[string]float64{"consumer_group_partition_backlog": 4})
	if b := cfg.Stats.Snapshot().Backlog; len(b) != cfg.Partitions {
		t.Errorf("backlog reported for %d partitions, want all %d this member owns: %v", len(b), cfg.Partitions, b)
	}
	release <- struct{}{}
	waitEntered(t, entered, "s2")
	// s3, delivered once s1 was acked, had s4 behind it.
	sc.want(t, testGroup, map[string]float64{"consumer_group_lag": 1, "consumer_group_handled_total": 1})

	close(release)
	publish(t, js, "retry", 1)
	publish(t, js, "dead", 1)
	sc.want(t, testGroup, map[string]float64{
		"consumer_group_delivered_total":     7, // s1..s4, retry twice, dead
		"consumer_group_handled_total":       5,
		"consumer_group_retried_total":       1,
		"consumer_group_dead_lettered_total": 1,
		"consumer_group_lag":                 0,
		"consumer_group_in_flight":           0,
		"consumer_group_coalesced_total":     0,
		"consumer_group_reordered_total":     0,
		"consumer_group_parked_total":        0,
		"consumer_group_parked_objects":      0,
		"consumer_group_partitions":          8, // all of testConfig's
		"consumer_group_partitions_unowned":  0,
		"consumer_group_joined":              1,
	})
}

// TestLagWithoutDeliveries: a member that gets no deliveries (here: its
// one slot held by a slow handler) still reports the backlog waiting on
// the server, read from its consumer on every heartbeat; the lag of the
// last delivery alone would say 0 while events pile up.
func TestLagWithoutDeliveries(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	sc := newScraper(t)
	entered := make(chan string, 4) // more than the test's events: never blocks
	release := make(chan struct{})
	cfg := testConfig("a")
	cfg.Meter = sc.mp.Meter("group-test")
	cfg.MaxInFlight = 1
	startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		entered <- m.Event.GetObjectId()
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	waitMembers(t, js, "a")
	publish(t, js, "s1", 1)
	waitEntered(t, entered, "s1") // delivered with nothing behind it: lag 0
	for _, id := range []string{"s2", "s3", "s4"} {
		publish(t, js, id, 1)
	}
	waitWorkQueue(t, js, 4) // sourced into the group's stream: pending
	// s2 waits in its lane for the slot (the consumer's head-room for
	// lanes in backoff); s3 and s4 are never delivered.
	sc.want(t, testGroup, map[string]float64{"consumer_group_lag": 2, "consumer_group_in_flight": 2})
	// Per partition: s1 (being handled) and s2..s4 (waiting) are the
	// work queue's backlog, each counted under its own partition.
	sc.want(t, testGroup, map[string]float64{"consumer_group_partition_backlog": 4})
	if b := cfg.Stats.Snapshot().Backlog; len(b) != cfg.Partitions {
		t.Errorf("backlog reported for %d partitions, want all %d this member owns: %v", len(b), cfg.Partitions, b)
	}
	close(release)
	sc.want(t, testGroup, map[string]float64{"consumer_group_lag": 0, "consumer_group_handled_total": 4})
}

// TestUnownedPartitions: while only a canary is alive, the partitions it
// is not pinned to have no member, and its metrics say how many; once a
// sharing member joins, none.
func TestUnownedPartitions(t *testing.T) {
	t.Parallel()
	srv, _ := setup(t)
	sc := newScraper(t)
	canary := testConfig("canary")
	canary.MemberPartitions = []int{0, 1}
	canary.Meter = sc.mp.Meter("group-test")
	h := func(context.Context, group.Message) error { return nil }
	startMember(t, srv, canary, h)
	sc.want(t, testGroup, map[string]float64{"consumer_group_partitions": 2, "consumer_group_partitions_unowned": 6})
	startMember(t, srv, testConfig("a"), h)
	sc.want(t, testGroup, map[string]float64{"consumer_group_partitions": 2, "consumer_group_partitions_unowned": 0})
}

func waitEntered(t *testing.T, entered <-chan string, want string) {
	t.Helper()
	select {
	case got := <-entered:
		if got != want {
			t.Fatalf("handler entered for %s, want %s", got, want)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("handler not entered for %s", want)
	}
}

// waitWorkQueue waits until the group's work-queue stream holds n messages
// (sourcing from the events stream is asynchronous).
func waitWorkQueue(t *testing.T, js jetstream.JetStream, n uint64) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, func() error {
		s, err := js.Stream(t.Context(), group.WorkStreamName(events.StreamName, testGroup))
		if err != nil {
			return err
		}
		info, err := s.Info(t.Context())
		if err != nil {
			return err
		}
		if info.State.Msgs != n {
			return fmt.Errorf("work queue holds %d messages, want %d", info.State.Msgs, n)
		}
		return nil
	})
}
