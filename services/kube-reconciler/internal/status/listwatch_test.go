package status

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
)

// fastBackoff keeps the retry tests short; the pacing is not what they test.
var fastBackoff = wait.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 100, Cap: 4 * time.Millisecond}

// TestUntilReachableRetriesAnAbsentServer: a list or watch that fails only
// because the apiserver cannot be reached (refused, reset, a failed dial,
// 503 while it starts) is tried again until the server answers, so the
// reflector never backs off for it (see reconnectBackoff).
func TestUntilReachableRetriesAnAbsentServer(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	absent := []error{
		fmt.Errorf("list: %w", refused),
		&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET},
		&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("i/o timeout")},
		apierrors.NewServiceUnavailable("apiserver is starting"),
	}
	calls := 0
	got, err := untilReachable(t.Context(), fastBackoff, func() (string, error) {
		calls++
		if calls <= len(absent) {
			return "", absent[calls-1]
		}
		return "listed", nil
	})
	if err != nil || got != "listed" || calls != len(absent)+1 {
		t.Fatalf("got %q, %v after %d calls; want the answer after %d", got, err, calls, len(absent)+1)
	}
}

// TestUntilReachablePassesAnswers: an error the server answered with goes
// to the reflector at once, which handles it (a 410 Gone makes it relist).
func TestUntilReachablePassesAnswers(t *testing.T) {
	t.Parallel()
	gr := schema.GroupResource{Group: "vteam.ambient-code", Resource: "agenticsessions"}
	for _, answer := range []error{
		apierrors.NewResourceExpired("too old resource version"),
		apierrors.NewForbidden(gr, "", errors.New("rbac")),
		apierrors.NewTooManyRequests("slow down", 1), // the server's own pacing: the reflector backs off
	} {
		calls := 0
		_, err := untilReachable(t.Context(), fastBackoff, func() (string, error) {
			calls++
			return "", answer
		})
		if !errors.Is(err, answer) || calls != 1 {
			t.Errorf("%v: got %v after %d calls, want it after 1", answer, err, calls)
		}
	}
}

// TestUntilReachableEndsWithCtx: while the server stays away, the call ends
// with ctx and returns the last error.
func TestUntilReachableEndsWithCtx(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	calls := 0
	_, err := untilReachable(ctx, fastBackoff, func() (string, error) {
		calls++
		if calls == 3 {
			cancel()
		}
		return "", refused
	})
	if !errors.Is(err, syscall.ECONNREFUSED) || calls != 3 {
		t.Fatalf("got %v after %d calls, want the refusal after 3", err, calls)
	}
}
