package controller

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// Session gauges: what the leader's cache says about every session, the
// one view of all of them the control plane has.
const (
	metricSessions        = "informer.sessions"
	metricSessionsIdleMax = "informer.sessions.idle_max"
	attrPhase             = "phase"
	// phaseNone labels sessions without a phase (created, never started).
	phaseNone = "none"
)

// sessionLister is what the session gauges read: the sessions controller.
type sessionLister interface {
	Range(fn func(*ambientv1.Session))
}

var _ sessionLister = (*Resource[*ambientv1.Session])(nil)

// ObserveSessions exports, per phase, the number of cached sessions and
// how long the least recently updated of them has not changed (seconds
// since its updated_at): a session stuck in Stopping or Creating shows as
// a growing idle_max of that phase. Only the leader has a cache; standby
// replicas report nothing. now is the clock (time.Now).
func (m *Metrics) ObserveSessions(sessions sessionLister, now func() time.Time) error {
	count, err := m.meter.Int64ObservableGauge(metricSessions, metric.WithDescription("Sessions in the informer cache, by phase (leader only)."))
	if err != nil {
		return fmt.Errorf("create instruments: %w", err)
	}
	idle, err := m.meter.Float64ObservableGauge(metricSessionsIdleMax, metric.WithUnit("s"),
		metric.WithDescription("Seconds since the least recently updated session of each phase last changed (leader only)."))
	if err != nil {
		return fmt.Errorf("create instruments: %w", err)
	}
	_, err = m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		n := map[string]int64{}
		oldest := map[string]time.Time{}
		sessions.Range(func(s *ambientv1.Session) {
			phase := s.GetPhase()
			if phase == "" {
				phase = phaseNone
			}
			n[phase]++
			if t := diff.UpdatedAt(s); !t.IsZero() && (oldest[phase].IsZero() || t.Before(oldest[phase])) {
				oldest[phase] = t
			}
		})
		at := now()
		for phase, c := range n {
			set := metric.WithAttributes(attribute.String(attrPhase, phase))
			o.ObserveInt64(count, c, set)
			if t := oldest[phase]; !t.IsZero() {
				o.ObserveFloat64(idle, max(at.Sub(t).Seconds(), 0), set)
			}
		}
		return nil
	}, count, idle)
	if err != nil {
		return fmt.Errorf("register session gauges: %w", err)
	}
	return nil
}
