package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// interleavedKV is a real bucket that calls between once, right after the
// first Get: a write that lands between a caller's read and its next step.
type interleavedKV struct {
	jetstream.KeyValue
	once    sync.Once
	between func()
}

func (k *interleavedKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := k.KeyValue.Get(ctx, key)
	k.once.Do(k.between)
	return e, err
}

// TestReleaseLosesToNewerRecord: a record rewritten after Release read it
// is not deleted (Release deletes the revision it checked the owner of);
// Release says ErrConflict and the newer record stays.
func TestReleaseLosesToNewerRecord(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ambient-runners", LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts []registry.Option
	}{
		{"delete", nil},
		{"purge with marker ttl", []registry.Option{registry.WithMarkerTTL(time.Second)}},
	}
	for _, tc := range tests {
		id := "s-" + tc.name
		rev, err := registry.Claim(ctx, kv, ep(id, "m"))
		if err != nil {
			t.Fatal(err)
		}
		newer := ep(id, "m")
		newer.Host, newer.Port, newer.State = "10.0.0.1", 9100, registry.StateRunning
		var newRev uint64
		racy := &interleavedKV{KeyValue: kv, between: func() {
			r, err := registry.Register(ctx, kv, newer, rev)
			if err != nil {
				t.Errorf("%s: register between read and delete: %v", tc.name, err)
			}
			newRev = r
		}}
		if _, err := registry.Release(ctx, racy, id, "m", tc.opts...); !errors.Is(err, registry.ErrConflict) {
			t.Fatalf("%s: release of a record rewritten meanwhile = %v, want ErrConflict", tc.name, err)
		}
		got, err := registry.Get(ctx, kv, id)
		if err != nil {
			t.Fatalf("%s: newer record gone: %v", tc.name, err)
		}
		if got.Endpoint != newer || got.Revision != newRev {
			t.Fatalf("%s: record = %+v, want %+v at %d", tc.name, got, newer, newRev)
		}
		// Read again, the release succeeds.
		if _, err := registry.Release(ctx, kv, id, "m", tc.opts...); err != nil {
			t.Fatalf("%s: retried release: %v", tc.name, err)
		}
	}
}

// TestListOnlySessionKeys: keys of other key spaces in the bucket (they
// contain a '.') are not session records even when their value decodes
// as one.
func TestListOnlySessionKeys(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx := t.Context()
	if _, err := registry.Claim(ctx, kv, ep("a", "m")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"members.x", "sessions.x.y"} {
		b, err := json.Marshal(ep("x", "m"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, k, b); err != nil {
			t.Fatal(err)
		}
	}
	got, err := registry.List(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].SessionID != "a" {
		t.Fatalf("listed %+v, want only session a", got)
	}
}
