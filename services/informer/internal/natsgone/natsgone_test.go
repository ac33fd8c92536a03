package natsgone

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestIs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("boom"), false},
		{context.DeadlineExceeded, false},
		{nats.ErrTimeout, false},
		{jetstream.ErrKeyExists, false},
		{fmt.Errorf("publish: %w", jetstream.ErrNoStreamResponse), true},
		{fmt.Errorf("load: %w", jetstream.ErrBucketNotFound), true},
		{fmt.Errorf("tail: %w", jetstream.ErrStreamNotFound), true},
		{fmt.Errorf("get: %w", nats.ErrNoResponders), true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound, Code: 404}, true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeConsumerNotFound, Code: 404}, false},
	} {
		if got := Is(tc.err); got != tc.want {
			t.Errorf("Is(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
