package group_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// workStreamGoneAfterJoin is a real JetStream whose look-ups of the
// group's work-queue stream fail once member has joined (its heartbeat key
// exists): a step of Run after the join fails for certain, while the
// server does everything else. Join itself looks the stream up before the
// first heartbeat, so joining still succeeds.
type workStreamGoneAfterJoin struct {
	jetstream.JetStream
	member string
}

func (j workStreamGoneAfterJoin) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if name == group.WorkStreamName(events.StreamName, testGroup) && j.joined(ctx) {
		return nil, fmt.Errorf("work-queue stream withheld by the test: %w", jetstream.ErrStreamNotFound)
	}
	return j.JetStream.Stream(ctx, name)
}

// joined reports whether the member's heartbeat key exists.
func (j workStreamGoneAfterJoin) joined(ctx context.Context) bool {
	kv, err := j.KeyValue(ctx, group.MembersBucketName(events.StreamName, testGroup))
	if err != nil {
		return false
	}
	_, err = kv.Get(ctx, j.member)
	return err == nil
}

// TestRunFailingAfterJoinLeavesGroup: when a step after the join fails
// (here the work-queue stream lookup), Run returns the error and has left
// the group as a graceful stop does: its heartbeat key is gone at once and
// a new member gets every partition without waiting for MemberTTL (a
// minute here, longer than the test waits).
func TestRunFailingAfterJoinLeavesGroup(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := testConfig("a")
	cfg.MemberTTL = time.Minute
	nc, ajs := testenv.JetStream(t, srv)
	a := runMember(t, nc, workStreamGoneAfterJoin{JetStream: ajs, member: "a"}, cfg, noopHandler, testLogger())
	requireRunFails(t, a, jetstream.ErrStreamNotFound, "the work-queue stream lookup failed")
	requireNoHeartbeat(t, js, "a", "Run failed")

	b := testConfig("b")
	b.MemberTTL = cfg.MemberTTL
	startMember(t, srv, b, noopHandler)
	mapping := waitMembers(t, js, "b")
	if got := partitionsIn(mapping, "b"); len(got) != cfg.Partitions {
		t.Fatalf("b owns partitions %v, want all %d", got, cfg.Partitions)
	}
}

// configWithheldAfterHeartbeat is a real JetStream whose consumer-group
// config bucket answers every Get with an error that is not transient once
// member's heartbeat key exists: the join's first reconcile, after the
// heartbeat, fails for good.
type configWithheldAfterHeartbeat struct {
	workStreamGoneAfterJoin
}

func (j configWithheldAfterHeartbeat) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.KeyValue(ctx, bucket)
	if err != nil || bucket != "elastic-consumer-groups" {
		return kv, err
	}
	return withheldConfigs{KeyValue: kv, joined: j.joined}, nil
}

type withheldConfigs struct {
	jetstream.KeyValue
	joined func(context.Context) bool
}

func (kv withheldConfigs) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if kv.joined(ctx) {
		return nil, errConfigWithheld
	}
	return kv.KeyValue.Get(ctx, key)
}

var errConfigWithheld = errors.New("group config withheld by the test")

// TestJoinGivenUpAfterHeartbeatLeaves: the join wrote its heartbeat, then
// its first reconcile failed for good. Run returns that error and the
// heartbeat is gone: peers that saw it would map partitions to a member
// that never consumes them, until MemberTTL (a minute here).
func TestJoinGivenUpAfterHeartbeatLeaves(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := testConfig("a")
	cfg.MemberTTL = time.Minute
	nc, ajs := testenv.JetStream(t, srv)
	a := runMember(t, nc, configWithheldAfterHeartbeat{workStreamGoneAfterJoin{JetStream: ajs, member: "a"}}, cfg, noopHandler, testLogger())
	requireRunFails(t, a, errConfigWithheld, "its first reconcile failed for good")
	requireNoHeartbeat(t, js, "a", "its join was given up")
}

// requireRunFails waits up to 15 s for m's Run to return want (after what
// happened, for the failure message).
func requireRunFails(t *testing.T, m *member, want error, after string) {
	t.Helper()
	select {
	case err := <-m.done:
		m.done <- err // let Cleanup see it too
		if !errors.Is(err, want) {
			t.Fatalf("Run = %v after %s, want %v", err, after, want)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Run did not return after %s", after)
	}
}

// requireNoHeartbeat fails the test unless name's heartbeat key is gone
// from the members bucket (after what happened, for the message).
func requireNoHeartbeat(t *testing.T, js jetstream.JetStream, name, after string) {
	t.Helper()
	members, err := js.KeyValue(t.Context(), group.MembersBucketName(events.StreamName, testGroup))
	if err != nil {
		t.Fatalf("members bucket: %v", err)
	}
	if _, err := members.Get(t.Context(), name); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("heartbeat of %s after %s: Get = %v, want %v (it never left the group)", name, after, err, jetstream.ErrKeyNotFound)
	}
}

func noopHandler(context.Context, group.Message) error { return nil }

// TestGroupReplicasBeyondAServerIsAConfigError: GROUP_REPLICAS=3 on a
// single, non-clustered server can never be kept. Run returns at once with
// a configuration error naming the variable, instead of retrying the join
// for ever with the server's bare refusal.
func TestGroupReplicasBeyondAServerIsAConfigError(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	cfg := testConfig("a")
	cfg.Replicas = 3
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := group.Run(ctx, js, cfg, noopHandler, testLogger())
	var ve *envconfig.VarError
	if !errors.As(err, &ve) || ve.Name != group.EnvReplicas {
		t.Fatalf("Run = %v, want a configuration error naming %s", err, group.EnvReplicas)
	}
}
