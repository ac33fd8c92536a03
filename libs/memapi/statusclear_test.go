package memapi_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestUpdateSessionStatusStoresWhatIsSent pins what the real server's
// UpdateSessionStatus does with each field (ambient-v1-wire.json: every
// field of UpdateSessionStatusRequest but id is proto3 "optional", so
// presence is on the wire; the real service's UpdateStatus copies each
// present field as given and leaves the others: docs/architecture.md,
// "What UpdateSessionStatus does with the fields"), which kube-reconciler's
// write-back relies on to clear fields:
//   - an unset field keeps the session's value;
//   - a set field is stored as sent, "" and 0 included (that is how a field
//     is cleared);
//   - conditions are replaced whole: no merge by type, so a writer that
//     must keep others' conditions merges them itself;
//   - the phase cannot be cleared ("" is InvalidArgument and changes
//     nothing), nor can a time (a set Timestamp is a time).
func TestUpdateSessionStatusStoresWhatIsSent(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx := t.Context()
	s, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	at := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if _, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Running"), StartTime: at,
		CompletionTime: at, SdkSessionId: proto.String("sdk"), SdkRestartCount: proto.Int32(2),
		Conditions:      proto.String(`[{"type":"Ready","status":"True"},{"type":"EventsPublished","status":"False"}]`),
		ReconciledRepos: proto.String(`[{"url":"u"}]`), ReconciledWorkflow: proto.String(`{"gitUrl":"w"}`)}); err != nil {
		t.Fatal(err)
	}

	got, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, SdkSessionId: proto.String(""),
		SdkRestartCount: proto.Int32(0), Conditions: proto.String(`[{"type":"Ready","status":"False"}]`),
		ReconciledRepos: proto.String(""), ReconciledWorkflow: proto.String("")})
	if err != nil {
		t.Fatal(err)
	}
	if got.SdkSessionId == nil || got.GetSdkSessionId() != "" || got.SdkRestartCount == nil || got.GetSdkRestartCount() != 0 ||
		got.ReconciledRepos == nil || got.GetReconciledRepos() != "" || got.ReconciledWorkflow == nil || got.GetReconciledWorkflow() != "" {
		t.Errorf("cleared fields = sdk_session_id %v, sdk_restart_count %v, reconciled_repos %v, reconciled_workflow %v; want \"\", 0, \"\", \"\" (set)",
			got.SdkSessionId, got.SdkRestartCount, got.ReconciledRepos, got.ReconciledWorkflow)
	}
	if got.GetConditions() != `[{"type":"Ready","status":"False"}]` {
		t.Errorf("conditions = %s, want the list sent, whole (EventsPublished not merged back)", got.GetConditions())
	}
	if got.GetPhase() != "Running" || !proto.Equal(got.GetStartTime(), at) || !proto.Equal(got.GetCompletionTime(), at) {
		t.Errorf("unset fields changed: phase %q, start %v, completion %v", got.GetPhase(), got.GetStartTime(), got.GetCompletionTime())
	}

	_, err = c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String(""), SdkSessionId: proto.String("new")})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty phase: %v, want InvalidArgument", err)
	}
	if now, err := c.GetSession(ctx, id); err != nil || now.GetPhase() != "Running" || now.GetSdkSessionId() != "" {
		t.Errorf("after the refused request: phase %q, sdk_session_id %q (%v); want nothing changed", now.GetPhase(), now.GetSdkSessionId(), err)
	}
}
