package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// goneClasses are the errors the classifiers know, with their class:
// "gone" (StoreGone), "maybe" (StoreMaybeGone) or "" (neither).
var goneClasses = []struct {
	err   error
	class string
}{
	{jetstream.ErrStreamNotFound, "gone"},
	{jetstream.ErrBucketNotFound, "gone"},
	{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound, Code: 404, Description: "stream not found"}, "gone"},
	{jetstream.ErrNoStreamResponse, "maybe"},
	{nats.ErrNoResponders, "maybe"},
	{jetstream.ErrKeyValueConfigRequired, ""}, // a bucket created without a config: a caller's mistake
	{jetstream.ErrJetStreamNotEnabled, ""},
	{jetstream.ErrConsumerNotFound, ""},
	{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeConsumerNotFound, Code: 404}, ""},
	{jetstream.ErrKeyNotFound, ""},
	{jetstream.ErrKeyExists, ""},
	{jetstream.ErrMsgNotFound, ""},
	{nats.ErrTimeout, ""},
	{nats.ErrConnectionReconnecting, ""},
	{nats.ErrConnectionClosed, ""},
	{context.DeadlineExceeded, ""},
	{errors.New("stream not found"), ""}, // the text alone says nothing
}

func class(err error) string {
	gone, maybe := bus.StoreGone(err), bus.StoreMaybeGone(err)
	switch {
	case gone && maybe:
		return "both"
	case gone:
		return "gone"
	case maybe:
		return "maybe"
	}
	return ""
}

func TestStoreGoneClasses(t *testing.T) {
	t.Parallel()
	if got := class(nil); got != "" {
		t.Errorf("nil: class %q", got)
	}
	for _, tc := range goneClasses {
		for _, err := range []error{
			tc.err,
			fmt.Errorf("publish: %w", tc.err),
			fmt.Errorf("heartbeat a: %w", fmt.Errorf("put: %w", tc.err)),
			fmt.Errorf("%w: %w", errors.New("context"), tc.err),
			errors.Join(errors.New("other"), tc.err),
		} {
			if got := class(err); got != tc.class {
				t.Errorf("%v: class %q, want %q", err, got, tc.class)
			}
		}
	}
}

// TestStoreGoneRealAnswers classifies what a real server answers for a
// stream and a bucket that do not exist, and for one that does while its
// JetStream is stopped (as during a restart, before the connections
// close).
func TestStoreGoneRealAnswers(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	kv, err := bus.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	_, pubErr := js.Publish(ctx, "nothing.captures.this", []byte("x"))
	_, putErr := kv.Put(ctx, "k", []byte("v"))
	_, getErr := kv.Get(ctx, "k")
	_, streamErr := js.Stream(ctx, "NONE")
	_, bucketErr := js.KeyValue(ctx, "gone")
	_, statusErr := kv.Status(ctx)
	_, consumerErr := js.CreateOrUpdateConsumer(ctx, "NONE", jetstream.ConsumerConfig{})
	for _, tc := range []struct {
		name  string
		err   error
		class string
	}{
		{"publish to no stream", pubErr, "maybe"},
		{"put into a deleted bucket", putErr, "maybe"},
		{"get from a deleted bucket", getErr, "maybe"},
		{"stream lookup", streamErr, "gone"},
		{"bucket lookup", bucketErr, "gone"},
		{"deleted bucket's status", statusErr, "gone"},
		{"consumer on no stream", consumerErr, "gone"},
	} {
		if got := class(tc.err); got != tc.class {
			t.Errorf("%s: %v: class %q, want %q", tc.name, tc.err, got, tc.class)
		}
	}

	// A stream that exists, with JetStream stopped: only "maybe" answers,
	// never a "gone" one, or a restart would look like a lost store.
	if _, err := bus.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "kept"}); err != nil {
		t.Fatal(err)
	}
	kept, err := js.KeyValue(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.NATS().ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	_, putErr = kept.Put(ctx, "k", []byte("v"))
	if got := class(putErr); got != "maybe" {
		t.Errorf("put with JetStream stopped: %v: class %q, want maybe", putErr, got)
	}
	// The API does not answer at all then: the lookup ends on its
	// deadline.
	lctx, lcancel := context.WithTimeout(ctx, time.Second)
	defer lcancel()
	_, bucketErr = js.KeyValue(lctx, "kept")
	if bucketErr == nil || bus.StoreGone(bucketErr) {
		t.Errorf("bucket lookup with JetStream stopped: %v, want an error that is not StoreGone", bucketErr)
	}
}

// FuzzStoreGone: however an error is wrapped, its class stays that of
// the error wrapped, and an error made of text alone is in no class.
func FuzzStoreGone(f *testing.F) {
	f.Add(uint8(0), uint8(1), "publish")
	f.Add(uint8(3), uint8(0), "")
	f.Add(uint8(200), uint8(7), "no response from stream")
	f.Fuzz(func(t *testing.T, pick, depth uint8, text string) {
		tc := goneClasses[int(pick)%len(goneClasses)]
		err := tc.err
		for i := range int(depth % 8) {
			if i%2 == 0 {
				err = fmt.Errorf("%s: %w", text, err)
			} else {
				err = errors.Join(errors.New(text), err)
			}
		}
		if got := class(err); got != tc.class {
			t.Fatalf("%v: class %q, want %q", err, got, tc.class)
		}
		if got := class(errors.New(text)); got != "" {
			t.Fatalf("text %q: class %q", text, got)
		}
	})
}
