package chaos

import (
	"testing"
	"time"
)

// TestAfterOutageAt: the NATS outage's after-snapshot comes its whole
// settle time after NATS answered again, also when the outage started late
// (the faults before it overran their plan, as in a run with a 3m node
// loss: NATS back 6.7 s before the plan's end), and never before the plan's
// end; an outage that never came back falls back to the plan's end.
func TestAfterOutageAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	planned := Fault{Kind: FaultNATSOutage, At: 732 * time.Second, Down: 4 * time.Minute, Settle: natsOutageSettle}
	plannedEnd := t0.Add(1002 * time.Second)
	for _, tc := range []struct {
		name     string
		restored time.Time
		want     time.Time
	}{
		{"started late, back 6.7 s before the plan's end", t0.Add(995300 * time.Millisecond), t0.Add(1025300 * time.Millisecond)},
		{"on time: back before the plan's end less the settle time", t0.Add(971 * time.Second), plannedEnd},
		{"never back", time.Time{}, plannedEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := faultRecord{Fault: planned, Restored: tc.restored}
			got := afterOutageAt(rec, t0)
			if !got.Equal(tc.want) {
				t.Errorf("afterOutageAt = t0+%s, want t0+%s", got.Sub(t0), tc.want.Sub(t0))
			}
			if !tc.restored.IsZero() && got.Sub(tc.restored) < planned.Settle {
				t.Errorf("snapshot %s after NATS was back, want at least the settle time %s", got.Sub(tc.restored), planned.Settle)
			}
		})
	}
}
