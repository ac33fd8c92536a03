package status

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

const updateStatus = ambientv1.SessionService_UpdateSessionStatus_FullMethodName

// writer returns an in-memory API, a client of it and a Writer on the client.
func writer(t *testing.T) (*memapi.Server, *apiclient.Client, *Writer) {
	t.Helper()
	api := testenv.API(t)
	client := testenv.APIClient(t, api)
	w, err := New(client, nil)
	if err != nil {
		t.Fatal(err)
	}
	return api, client, w
}

// Write retries what may pass later (Unavailable), four calls without a
// deadline and until the deadline with one; it does not retry what never
// passes (InvalidArgument); a deleted session is no error.
func TestWriteRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fail      int
		code      codes.Code
		deadline  time.Duration // 0: none
		wantCalls int
		wantErr   bool
	}{
		{"transient then ok", 2, codes.Unavailable, 0, 3, false},
		{"four tries without a deadline", 10, codes.Unavailable, 0, 4, true},
		{"until the deadline", 5, codes.Unavailable, 30 * time.Second, 6, false},
		{"invalid is not retried", 3, codes.InvalidArgument, 0, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			api, client, w := writer(t)
			s, err := client.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "s", ProjectId: proto.String("p")})
			if err != nil {
				t.Fatal(err)
			}
			api.FailNext(updateStatus, tc.fail, tc.code)
			ctx := t.Context()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			err = w.Write(ctx, s.GetMetadata().GetId(), Update{Phase: session.PhaseRunning})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Write = %v, want error %v", err, tc.wantErr)
			}
			if n := api.CountCalls(updateStatus); n != tc.wantCalls {
				t.Fatalf("%d calls, want %d", n, tc.wantCalls)
			}
		})
	}
	t.Run("deleted session", func(t *testing.T) {
		t.Parallel()
		w, err := New(testenv.APIClient(t, testenv.API(t)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(t.Context(), "gone", Update{Phase: session.PhaseRunning}); err != nil {
			t.Fatalf("Write on a deleted session = %v, want nil", err)
		}
	})
}

// Fail and Stopped write the final phase with a completion time, keeping
// the session's other conditions.
func TestFinalPhases(t *testing.T) {
	t.Parallel()
	_, client, w := writer(t)
	log := slog.New(slog.DiscardHandler)
	other := session.Conditions{}.Set(session.Condition{Type: "Other", Status: session.StatusTrue}, time.Now()).JSON()
	for _, tc := range []struct {
		name  string
		write func(id string)
		phase session.Phase
		want  string // RunnerStarted reason
	}{
		{"fail", func(id string) {
			s, err := client.GetSession(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			conds := Conditions(s).Set(session.Condition{Type: CondRunnerStarted, Status: session.StatusFalse, Reason: ReasonRunnerLost}, time.Now())
			w.Fail(t.Context(), log, id, conds, ReasonRunnerLost)
		}, session.PhaseFailed, ReasonRunnerLost},
		{"stopped", func(id string) {
			if err := w.Stopped(t.Context(), log, id); err != nil {
				t.Fatal(err)
			}
		}, session.PhaseStopped, ReasonStopped},
	} {
		s, err := client.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: tc.name, ProjectId: proto.String("p")})
		if err != nil {
			t.Fatal(err)
		}
		id := s.GetMetadata().GetId()
		// Stopping: Stopped writes only over a stop (TestStoppedOnlyOverStopping).
		if _, err := client.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: &other,
			Phase: session.PhaseStopping.Ptr()}); err != nil {
			t.Fatal(err)
		}
		tc.write(id)
		got, err := client.GetSession(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		c, ok := Conditions(got).Get(CondRunnerStarted)
		if session.PhaseOf(got) != tc.phase || got.GetCompletionTime() == nil || !ok || c.Reason != tc.want {
			t.Errorf("%s: phase %q completion %v conditions %s", tc.name, got.GetPhase(), got.GetCompletionTime(), got.GetConditions())
		}
		if _, ok := Conditions(got).Get("Other"); !ok {
			t.Errorf("%s: the session's other condition is gone: %s", tc.name, got.GetConditions())
		}
	}
}

// Malformed conditions read as none (runner-manager rewrites its own).
func TestConditionsOfMalformed(t *testing.T) {
	t.Parallel()
	if cs := Conditions(&ambientv1.Session{Conditions: proto.String("{bad")}); cs != nil {
		t.Fatalf("Conditions = %v", cs)
	}
	req := Update{Conditions: session.Conditions{}}.request("x")
	if req.Phase != nil || !strings.HasPrefix(req.GetConditions(), "[") {
		t.Fatalf("request = %v", req)
	}
}

// TestStoppedOnlyOverStopping: Stopped leaves a session that is no longer
// Stopping alone (a user started it again after a peer finished the stop:
// a Stopped would undo the start), and a deleted one too.
func TestStoppedOnlyOverStopping(t *testing.T) {
	t.Parallel()
	_, client, w := writer(t)
	log := slog.New(slog.DiscardHandler)
	s, err := client.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "restarted", ProjectId: proto.String("p")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	if _, err := client.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: session.PhasePending.Ptr()}); err != nil {
		t.Fatal(err)
	}
	if err := w.Stopped(t.Context(), log, id); err != nil {
		t.Fatal(err)
	}
	got, err := client.GetSession(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if session.PhaseOf(got) != session.PhasePending || got.GetCompletionTime() != nil {
		t.Fatalf("phase %q completion %v after Stopped over Pending, want Pending untouched", got.GetPhase(), got.GetCompletionTime())
	}
	if err := client.DeleteSession(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if err := w.Stopped(t.Context(), log, id); err != nil {
		t.Fatalf("Stopped of a deleted session: %v, want nothing to do", err)
	}
}

// A write of a runner's conditions (RunnerConditions) keeps the session's
// other conditions as they are when it writes, not as the runner's copy
// has them: the runner's own types come from the update, every other one
// from a read just before the write, itself retried as the write is; a
// session deleted meanwhile gets nothing and is no error.
func TestRunnerConditionsMerged(t *testing.T) {
	t.Parallel()
	api, client, w := writer(t)
	s, err := client.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "s", ProjectId: proto.String("p")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	stale := session.Condition{Type: CondReconciled, Status: session.StatusFalse, Reason: ReasonRepoReconciliationFailed, LastTransitionTime: at}
	now := session.Condition{Type: CondReconciled, Status: session.StatusTrue, Reason: ReasonSpecApplied, LastTransitionTime: at.Add(time.Minute)}
	other := session.Condition{Type: "S3Available", Status: session.StatusTrue, LastTransitionTime: at}
	onSession := session.Conditions{now, other}.JSON()
	if _, err := client.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: &onSession}); err != nil {
		t.Fatal(err)
	}
	started := session.Condition{Type: CondRunnerStarted, Status: session.StatusFalse, Reason: ReasonStopped, LastTransitionTime: at.Add(2 * time.Minute)}
	copyOf := session.Conditions{stale, started} // the runner's copy: an old Reconciled
	api.FailNext(ambientv1.SessionService_GetSession_FullMethodName, 1, codes.Unavailable)
	if err := w.WriteFinal(t.Context(), id, Update{Phase: session.PhaseStopped, Conditions: copyOf, RunnerConditions: true}, "", nil); err != nil {
		t.Fatal(err)
	}
	got := Conditions(mustGet(t, client, id))
	for _, want := range []session.Condition{now, other, started} {
		if c, ok := got.Get(want.Type); !ok || c != want {
			t.Errorf("%s = %+v, want %+v (conditions %s)", want.Type, c, want, got.JSON())
		}
	}

	if err := client.DeleteSession(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	writes := api.CountCalls(updateStatus)
	if err := w.WriteFinal(t.Context(), id, Update{Phase: session.PhaseStopped, Conditions: copyOf, RunnerConditions: true}, "", nil); err != nil {
		t.Fatalf("write on a deleted session: %v", err)
	}
	if n := api.CountCalls(updateStatus) - writes; n != 0 {
		t.Fatalf("%d writes on a deleted session, want none", n)
	}
}

func mustGet(t *testing.T, client *apiclient.Client, id string) *ambientv1.Session {
	t.Helper()
	s, err := client.GetSession(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
