package service_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestConsume: a member declared before the events stream exists waits for
// it (not ready meanwhile), then handles events, and its consumer_group
// metrics are on /metrics without the service registering any.
func TestConsume(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	got := make(chan string, 16) // more than the test publishes
	r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}}, func(_ context.Context, rt *service.Runtime) error {
		rt.Consume(group.Config{Group: "svc-test", Member: "m-0", MemberTTL: time.Second, AckWait: 2 * time.Second, StopGrace: time.Second},
			func(_ context.Context, m group.Message) error {
				got <- m.Event.GetObjectId()
				return nil
			})
		return nil
	})
	base := r.url(t)
	if code, rep := readyz(t, base); code != http.StatusServiceUnavailable || !slices.Equal(rep.Failing, []string{service.CheckConsumerGroup}) {
		t.Fatalf("/readyz without the stream = %d %+v, want 503 failing %s", code, rep, service.CheckConsumerGroup)
	}
	// Not in its group yet (no group.Run so far): the metric says so
	// rather than being absent.
	if v, ok := joinedMetric(t, base, "svc-test"); !ok || v != 0 {
		t.Errorf("consumer_group_joined without the stream = %v (on /metrics: %t), want 0", v, ok)
	}

	_, js := testenv.JetStream(t, srv)
	if _, err := bus.EnsureEventsStream(t.Context(), js, 1, 0); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, rep := readyz(t, base); code != http.StatusOK {
			return fmt.Errorf("/readyz = %d %+v", code, rep)
		}
		return nil
	})
	if v, ok := joinedMetric(t, base, "svc-test"); !ok || v != 1 {
		t.Errorf("consumer_group_joined once ready = %v (on /metrics: %t), want 1", v, ok)
	}
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "s1", UpdatedAt: timestamppb.New(time.Unix(1, 0))}, ProjectId: proto.String("p1")}
	msg, err := events.NewMsg(t.Context(), events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-got:
		if id != "s1" {
			t.Errorf("handled %q, want s1", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("event not handled")
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		_, body := get(t, base+health.PathMetrics)
		if want := `consumer_group_handled_total{group="svc-test"`; !strings.Contains(body, want) {
			return fmt.Errorf("/metrics lacks %s", want)
		}
		return nil
	})
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}

// TestConsumeReadyOnlyOnceJoined: the events stream existing is not
// enough; /readyz passes once the member is in its group. Its join is
// held off by a stream that already stores the group's dead-letter
// subjects (the member cannot create the DLQ stream and keeps rejoining);
// once that stream is gone the member joins and /readyz passes.
func TestConsumeReadyOnlyOnceJoined(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	if _, err := bus.EnsureEventsStream(t.Context(), js, 1, 0); err != nil {
		t.Fatal(err)
	}
	const blocker = "DLQ_SUBJECTS_TAKEN"
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: blocker, Subjects: []string{events.DLQPrefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	stats := &group.Stats{}
	r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}}, func(_ context.Context, rt *service.Runtime) error {
		rt.Consume(group.Config{Group: "svc-ready", Member: "m-0", MemberTTL: time.Second, AckWait: 2 * time.Second, StopGrace: time.Second, Stats: stats},
			func(context.Context, group.Message) error { return nil })
		return nil
	})
	base := r.url(t)
	// The stream exists: the check used to pass here.
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, err := js.Stream(t.Context(), bus.DLQStreamName); !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("dlq stream lookup = %v, want not found", err)
		}
		if code, rep := readyz(t, base); code != http.StatusServiceUnavailable || !slices.Equal(rep.Failing, []string{service.CheckConsumerGroup}) {
			return fmt.Errorf("/readyz = %d %+v, want 503 failing %s", code, rep, service.CheckConsumerGroup)
		}
		return nil
	})
	if stats.Snapshot().Joined {
		t.Fatal("Stats.Joined set while the member cannot join")
	}
	// Between two tries the member is outside any group.Run: the metric
	// stays, at 0, through every scrape.
	for range 5 {
		if v, ok := joinedMetric(t, base, "svc-ready"); !ok || v != 0 {
			t.Fatalf("consumer_group_joined while rejoining = %v (on /metrics: %t), want 0", v, ok)
		}
	}

	if err := js.DeleteStream(t.Context(), blocker); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if code, rep := readyz(t, base); code != http.StatusOK {
			return fmt.Errorf("/readyz = %d %+v", code, rep)
		}
		return nil
	})
	if !stats.Snapshot().Joined {
		t.Error("/readyz passed before Stats.Joined")
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v", err)
	}
	if stats.Snapshot().Joined {
		t.Error("Stats.Joined still set after Run returned")
	}
}

// TestConsumeInvalidConfig: a group config that can never work stops the
// service instead of rejoining forever.
func TestConsumeInvalidConfig(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	if _, err := bus.EnsureEventsStream(t.Context(), js, 1, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := service.Run(ctx, service.Options{Name: "svc-test", Logger: testLogger(),
		Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}, MetricsAddr: "127.0.0.1:0"}},
		func(_ context.Context, rt *service.Runtime) error {
			rt.Consume(group.Config{Group: "svc-test", Member: "bad member"}, func(context.Context, group.Message) error { return nil })
			return nil
		})
	if !errors.Is(err, group.ErrInvalidConfig) {
		t.Errorf("Run = %v, want %v", err, group.ErrInvalidConfig)
	}
}

// joinedMetric reads consumer_group_joined of group (one member) from
// base's /metrics, and whether it is there at all.
func joinedMetric(t *testing.T, base, groupName string) (float64, bool) {
	t.Helper()
	_, body := get(t, base+health.PathMetrics)
	return testenv.MetricSum(body, "consumer_group_joined", `group="`+groupName+`"`)
}

// TestConsumeReplicasBeyondTheServerStopsTheService: GROUP_REPLICAS=3 on a
// single, non-clustered server can never be kept. group.Run says so with a
// configuration error naming GROUP_REPLICAS, and the service must stop with
// it (exit 1, docs/configuration.md) instead of rejoining for ever, not
// ready, with nothing but a warning in its log.
func TestConsumeReplicasBeyondTheServerStopsTheService(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	if _, err := bus.EnsureEventsStream(t.Context(), js, 1, 0); err != nil {
		t.Fatal(err)
	}
	r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}}, func(_ context.Context, rt *service.Runtime) error {
		rt.Consume(group.Config{Group: "svc-replicas", Member: "m-0", Replicas: 3, MemberTTL: time.Second, AckWait: 2 * time.Second, StopGrace: time.Second},
			func(context.Context, group.Message) error { return nil })
		return nil
	})
	select {
	case err := <-r.done:
		r.done <- err // for start's Cleanup
		var ve *envconfig.VarError
		if !errors.As(err, &ve) || ve.Name != group.EnvReplicas {
			t.Fatalf("Run = %v, want a configuration error naming %s", err, group.EnvReplicas)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Run still rejoining 15s after a %s the server can never hold, want it to stop with a configuration error", group.EnvReplicas)
	}
}
