package group_test

import (
	"context"
	"errors"
	"testing"
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/nats-io/nats.go"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestDeadLetter: failures end in the DLQ with the original data and
// headers plus the reason, and the object's next event is still handled.
func TestDeadLetter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		handlerErr   error // returned for version 1
		raw          []byte
		wantReason   string
		wantAttempts string
		wantRetried  uint64
	}{
		{name: "retries exhausted", handlerErr: errors.New("backend down"), wantReason: group.ReasonExhausted, wantAttempts: "3", wantRetried: 2},
		{name: "terminal error", handlerErr: group.Terminal(errors.New("invalid name")), wantReason: group.ReasonTerminal, wantAttempts: "1"},
		{name: "undecodable payload", raw: []byte("\xff not a protobuf"), wantReason: group.ReasonUndecodable, wantAttempts: "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, js := setup(t)
			var j journal
			h := func(_ context.Context, m group.Message) error {
				v := version(m)
				j.add(call{member: "a", object: m.Event.GetObjectId(), version: v, attempt: m.Attempt, ok: v != 1 || tc.handlerErr == nil})
				if v == 1 {
					return tc.handlerErr
				}
				return nil
			}
			cfg := testConfig("a")
			type report struct {
				m      group.Message
				reason string
				cause  error
			}
			reports := make(chan report, 4)
			cfg.OnDeadLetter = func(_ context.Context, m group.Message, reason string, cause error) {
				reports <- report{m, reason, cause}
			}
			startMember(t, srv, cfg, h)
			waitMembers(t, js, "a")

			subject := events.Subject(events.SubjectPrefix, eventsv1.Resource_RESOURCE_SESSIONS, "p1", "s1")
			if tc.raw != nil {
				msg := nats.NewMsg(subject)
				msg.Data = tc.raw
				msg.Header.Set("Nats-Msg-Id", "raw-1")
				msg.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
				if _, err := js.PublishMsg(t.Context(), msg); err != nil {
					t.Fatalf("publish raw: %v", err)
				}
			} else {
				publishCtx(t, tracedCtx(t), js, "s1", 1)
			}
			publish(t, js, "s1", 2)

			testenv.Eventually(t, 10*time.Second, func() error {
				for _, c := range j.snapshot() {
					if c.version == 2 && c.ok {
						return nil
					}
				}
				return errors.New("version 2 not handled")
			})
			dl := dlqMessages(t, js)
			if len(dl) != 1 {
				t.Fatalf("dlq holds %d messages, want 1", len(dl))
			}
			d := dl[0]
			if want := "ambient.dlq." + testGroup + ".sessions.p1.s1"; d.Subject != want {
				t.Errorf("dlq subject = %q, want %q", d.Subject, want)
			}
			for k, want := range map[string]string{
				group.HeaderDLQReason:   tc.wantReason,
				group.HeaderDLQAttempts: tc.wantAttempts,
				group.HeaderDLQGroup:    testGroup,
				group.HeaderDLQMember:   "a",
				group.HeaderDLQSubject:  subject,
			} {
				if got := d.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if d.Header.Get(group.HeaderDLQError) == "" || d.Header.Get("traceparent") == "" {
				t.Errorf("dlq headers lack the error or the original traceparent: %v", d.Header)
			}
			if tc.raw != nil && string(d.Data) != string(tc.raw) {
				t.Errorf("dlq data = %q, want original %q", d.Data, tc.raw)
			}
			st := cfg.Stats.Snapshot()
			if st.DeadLettered != 1 || st.Retried != tc.wantRetried {
				t.Errorf("stats = %+v, want 1 dead letter, %d retries", st, tc.wantRetried)
			}
			// Backoff: the tries of version 1 are spaced by at least 20ms, 40ms.
			var tries []time.Time
			for _, c := range j.snapshot() {
				if c.version == 1 {
					tries = append(tries, c.at)
				}
			}
			for i := 1; i < len(tries); i++ {
				if gap, want := tries[i].Sub(tries[i-1]), cfg.Backoff[i-1]; gap < want {
					t.Errorf("try %d came %s after the previous, want >= %s", i+1, gap, want)
				}
			}
			checkOrder(t, j.snapshot())

			// The service hears of the dead letter once, with the event
			// (none for an undecodable payload) and the handler's error.
			var got []report
			for len(reports) > 0 {
				got = append(got, <-reports)
			}
			switch {
			case tc.raw != nil && len(got) != 0:
				t.Errorf("OnDeadLetter called %d times for an undecodable payload, want never", len(got))
			case tc.raw == nil && len(got) != 1:
				t.Errorf("OnDeadLetter called %d times, want once", len(got))
			case tc.raw == nil:
				r := got[0]
				if r.reason != tc.wantReason || r.m.Event.GetObjectId() != "s1" || version(r.m) != 1 || r.m.Subject != subject ||
					!errors.Is(r.cause, errors.Unwrap(tc.handlerErr)) && !errors.Is(r.cause, tc.handlerErr) {
					t.Errorf("OnDeadLetter(%s v%d %s, %q, %v), want s1 v1 %s, %q and the handler's error %v",
						r.m.Event.GetObjectId(), version(r.m), r.m.Subject, r.reason, r.cause, subject, tc.wantReason, tc.handlerErr)
				}
			}
		})
	}
}
