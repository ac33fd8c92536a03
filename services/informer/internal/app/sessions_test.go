package app_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestSessionGauges: the leader exports sessions by phase and how long the
// stalest session of each phase has not changed (what an alert on a
// session stuck in Stopping reads), and its failure and reconnect counters
// exist at 0 before anything failed (an alert on their rate sees 0, not
// no data).
func TestSessionGauges(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ids := make([]string, 4)
	for i := range ids {
		ids[i] = h.createSession(fmt.Sprintf("phase-%d", i)).GetMetadata().GetId()
	}
	for i, phase := range []string{"Running", "Running", "Stopping"} {
		if _, err := h.c.UpdateSessionStatus(context.Background(), &ambientv1.UpdateSessionStatusRequest{Id: ids[i], Phase: proto.String(phase)}); err != nil {
			t.Fatal(err)
		}
	}
	inf := h.start("a", nil)
	testenv.Eventually(t, 30*time.Second, func() error {
		for phase, want := range map[string]float64{"Running": 2, "Stopping": 1, "none": 1} {
			if got := inf.metric("informer_sessions", `phase="`+phase+`"`); got != want {
				return fmt.Errorf("informer_sessions{phase=%q} = %v, want %v", phase, got, want)
			}
		}
		if got := inf.metric("informer_sessions_idle_max_seconds", `phase="Stopping"`); got <= 0 {
			return fmt.Errorf("informer_sessions_idle_max_seconds{phase=\"Stopping\"} = %v, want > 0", got)
		}
		return nil
	})
	_, body, err := inf.httpGet("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"informer_publish_errors_total", "informer_watch_reconnects_total", "informer_watch_stale_total"} {
		if !strings.Contains(body, name+`{`) || inf.metric(name, `resource="sessions"`) != 0 {
			t.Errorf("%s{resource=\"sessions\"} is not exported at 0", name)
		}
	}
}
