package group_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestOnDeadLetterPanicDoesNotStopTheMember: a service's OnDeadLetter that
// panics (a nil map in its report, say) is user code running on the
// object's lane, as the handler is. The handler's panics are failed tries;
// the report's must not take the member down either: the letter is in the
// DLQ already, the object's next event and the next dead letter still
// follow. Before, the panic ended the process.
func TestOnDeadLetterPanicDoesNotStopTheMember(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	cfg := testConfig("a")
	var reports atomic.Int32
	cfg.OnDeadLetter = func(context.Context, group.Message, string, error) {
		reports.Add(1)
		panic("report: assignment to entry in nil map")
	}
	m := startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
		v := version(m)
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: v, attempt: m.Attempt, ok: v == 2})
		if v != 2 {
			return group.Terminal(errors.New("invalid name"))
		}
		return nil
	})
	waitMembers(t, js, "a")
	for v := 1; v <= 3; v++ {
		publish(t, js, "s1", v)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.DeadLettered != 2 || reports.Load() != 2 || j.successes() != 1 {
			return fmt.Errorf("%d dead letters, %d reports, %d successes; want 2, 2, 1", st.DeadLettered, reports.Load(), j.successes())
		}
		return nil
	})
	checkOrder(t, j.snapshot())
	if n := len(dlqMessages(t, js)); n != 2 {
		t.Errorf("dlq holds %d letters, want 2", n)
	}
	select {
	case err := <-m.done:
		m.done <- err
		t.Fatalf("member stopped after a panicking report: %v", err)
	default:
	}
}
