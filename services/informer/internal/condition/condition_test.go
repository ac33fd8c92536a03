package condition

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

const msg = "over the limit"

// TestSync runs the writer against the in-memory API: it sets the
// condition, keeps the other writers' conditions byte for byte, writes
// nothing when the session already says it (the echo of its own write),
// removes it again, and calls a deleted session's write terminal.
func TestSync(t *testing.T) {
	t.Parallel()
	api := testenv.API(t)
	c := testenv.APIClient(t, api)
	ctx := context.Background()
	s, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	other := `[{"type":"RunnerStarted","status":"True","reason":"Started","extra":{"kept":1}}]`
	if _, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: proto.String(other)}); err != nil {
		t.Fatal(err)
	}
	w := New(c)
	w.now = func() time.Time { return time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC) }
	const update = ambientv1.SessionService_UpdateSessionStatus_FullMethodName
	writes := api.CallCount(update)

	if err := w.Sync(ctx, id, true, msg); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(got.GetConditions()), &list); err != nil || len(list) != 2 {
		t.Fatalf("conditions %s: %v", got.GetConditions(), err)
	}
	if string(list[0]) != `{"type":"RunnerStarted","status":"True","reason":"Started","extra":{"kept":1}}` {
		t.Errorf("other condition changed: %s", list[0])
	}
	if want := `{"type":"EventsPublished","status":"False","reason":"ObjectTooLarge","message":"over the limit","lastTransitionTime":"2026-12-01T10:00:00Z"}`; string(list[1]) != want {
		t.Errorf("condition = %s, want %s", list[1], want)
	}
	if Needed(got, true, msg) || !Needed(got, false, msg) || !Needed(got, true, "another limit") {
		t.Error("Needed disagrees with the written condition")
	}
	if err := w.Sync(ctx, id, true, msg); err != nil {
		t.Fatal(err)
	}
	if n := api.CallCount(update) - writes; n != 1 {
		t.Fatalf("%d status writes, want 1: the second Sync must write nothing", n)
	}

	if err := w.Sync(ctx, id, false, msg); err != nil {
		t.Fatal(err)
	}
	if got, err = c.GetSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got.GetConditions() != `[{"type":"RunnerStarted","status":"True","reason":"Started","extra":{"kept":1}}]` {
		t.Errorf("after removal: %s", got.GetConditions())
	}
	if err := c.DeleteSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx, id, true, msg); !errors.Is(err, ErrTerminal) {
		t.Fatalf("deleted session: err = %v, want ErrTerminal", err)
	}
	api.FailNext(ambientv1.SessionService_GetSession_FullMethodName, 1, codes.Unavailable)
	if err := w.Sync(ctx, "any", true, msg); err == nil || errors.Is(err, ErrTerminal) {
		t.Fatalf("unavailable API: err = %v, want a retryable error", err)
	}
}

// TestNeeded pins the cheap check that runs for every published session.
func TestNeeded(t *testing.T) {
	t.Parallel()
	mine := `[{"type":"EventsPublished","status":"False","reason":"ObjectTooLarge","message":"over the limit"}]`
	tests := []struct {
		name     string
		conds    string
		tooLarge bool
		want     bool
	}{
		{name: "fits, no conditions", conds: "", want: false},
		{name: "fits, other conditions", conds: `[{"type":"Ready","status":"True"}]`, want: false},
		{name: "fits, condition present", conds: mine, want: true},
		{name: "too large, nothing yet", conds: "", tooLarge: true, want: true},
		{name: "too large, present", conds: mine, tooLarge: true, want: false},
		{name: "too large, malformed conditions", conds: `{ObjectTooLarge`, tooLarge: true, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &ambientv1.Session{Conditions: proto.String(tc.conds)}
			if got := Needed(s, tc.tooLarge, msg); got != tc.want {
				t.Fatalf("Needed = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSyncKeepsForeignConditions: conditions that are not a JSON list are
// someone else's problem; the writer refuses to overwrite them.
func TestSyncKeepsForeignConditions(t *testing.T) {
	t.Parallel()
	w := New(nil)
	if _, err := w.merge(`{"not":"a list"}`, true, msg); err == nil {
		t.Fatal("merge overwrote conditions that are not a list")
	}
}
