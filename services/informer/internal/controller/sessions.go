package controller

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-code/control-plane/libs/events"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
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

// sessionLister is what the session gauges read: the sessions controller,
// whose cache holds each session encoded (see diff.Store.Range).
type sessionLister interface {
	Range(fn func(events.Encoded))
}

var _ sessionLister = (*Resource[*ambientv1.Session])(nil)

// phaseField is the field number of Session.phase, from the generated
// descriptor rather than written here.
var phaseField = (&ambientv1.Session{}).ProtoReflect().Descriptor().Fields().ByName("phase").Number()

// SessionPhase returns the phase of the session encoded in raw without
// decoding the session: the gauges read every cached session on each
// collection, under the cache's lock. The last occurrence wins, as in
// proto.Unmarshal. ok is false for bytes that are not a valid encoding.
func SessionPhase(raw []byte) (phase string, ok bool) {
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return "", false
		}
		raw = raw[n:]
		if num == phaseField && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(raw)
			if m < 0 {
				return "", false
			}
			phase, raw = string(v), raw[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, raw)
		if m < 0 {
			return "", false
		}
		raw = raw[m:]
	}
	return phase, true
}

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
		// oldest is the smallest updated_at (microseconds) per phase; 0:
		// none of the phase's sessions has one.
		oldest := map[string]int64{}
		sessions.Range(func(st events.Encoded) {
			phase, ok := SessionPhase(st.Raw)
			if !ok {
				return // not possible for bytes the cache encoded itself
			}
			if phase == "" {
				phase = phaseNone
			}
			n[phase]++
			if t := st.Micros; t > 0 && (oldest[phase] == 0 || t < oldest[phase]) {
				oldest[phase] = t
			}
		})
		at := now()
		for phase, c := range n {
			set := metric.WithAttributes(attribute.String(attrPhase, phase))
			o.ObserveInt64(count, c, set)
			if t := oldest[phase]; t > 0 {
				o.ObserveFloat64(idle, max(at.Sub(time.UnixMicro(t)).Seconds(), 0), set)
			}
		}
		return nil
	}, count, idle)
	if err != nil {
		return fmt.Errorf("register session gauges: %w", err)
	}
	return nil
}
