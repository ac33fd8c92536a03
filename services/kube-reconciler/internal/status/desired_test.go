package status

import (
	"testing"
	"time"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func cr(status map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetNamespace("ns")
	u.SetName("n")
	u.SetUID("uid-1")
	u.SetAnnotations(map[string]string{spec.AnnotationSessionID: "S1"})
	if status != nil {
		u.Object["status"] = status
	}
	return u
}

func TestFromCRAndDiffers(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	full := map[string]any{
		"phase": "Running", "startTime": "2026-01-02T03:04:05Z", "sdkSessionId": "sdk", "sdkRestartCount": int64(3),
		"conditions": []any{map[string]any{"type": "Ready", "status": "True"}},
	}
	matching := &ambientv1.Session{Phase: proto.String("Running"), StartTime: timestamppb.New(start.Add(300 * time.Millisecond)),
		SdkSessionId: proto.String("sdk"), SdkRestartCount: proto.Int32(3), Conditions: proto.String(`[ {"status":"True","type":"Ready"} ]`),
		KubeCrUid: proto.String("uid-1"), KubeNamespace: proto.String("ns")}
	tests := []struct {
		name    string
		status  map[string]any
		session *ambientv1.Session
		differs bool
		bad     int
	}{
		{"no status, nothing known", nil, nil, true, 0},
		{"no status, uid known", nil, &ambientv1.Session{KubeCrUid: proto.String("uid-1"), KubeNamespace: proto.String("ns")}, false, 0},
		{"equal content, other JSON spelling and sub-second time", full, matching, false, 0},
		{"phase changed", map[string]any{"phase": "Completed"}, matching, true, 0},
		{"restart count changed", map[string]any{"sdkRestartCount": int64(4)}, matching, true, 0},
		{"conditions changed", map[string]any{"conditions": []any{}}, matching, true, 0},
		{"bad time skipped", map[string]any{"startTime": "yesterday", "phase": "Running"}, matching, false, 1},
		{"bad type skipped", map[string]any{"phase": int64(1)}, matching, false, 1},
		// A phase none of the seven (a CRD without the operator's enum):
		// the API refuses the whole request with it (InvalidArgument), so
		// the uid, namespace and the rest would be lost with it.
		{"unknown phase skipped", map[string]any{"phase": "Paused", "sdkRestartCount": int64(3)}, matching, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, bad := FromCR(cr(tc.status))
			if req.GetId() != "S1" || req.GetKubeCrUid() != "uid-1" || req.GetKubeNamespace() != "ns" {
				t.Errorf("ids = %q %q %q", req.GetId(), req.GetKubeCrUid(), req.GetKubeNamespace())
			}
			if len(bad) != tc.bad {
				t.Errorf("bad = %v, want %d", bad, tc.bad)
			}
			if got := Differs(req, tc.session); got != tc.differs {
				t.Errorf("Differs = %v, want %v", got, tc.differs)
			}
		})
	}
}

// TestTrimKeepsWhatIsCompared: the trimmed copy the write-back remembers
// compares exactly like the whole session, for every status field, and
// drops the fields that can be large.
func TestTrimKeepsWhatIsCompared(t *testing.T) {
	t.Parallel()
	at := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "S1", UpdatedAt: at}, Name: "n", Prompt: proto.String("long prompt"),
		Repos: proto.String(`[{"url":"u"}]`), Phase: proto.String("Running"), StartTime: at, CompletionTime: at,
		SdkSessionId: proto.String("sdk"), SdkRestartCount: proto.Int32(2), Conditions: proto.String(`[{"type":"Ready"}]`),
		ReconciledRepos: proto.String(`[{"url":"u"}]`), ReconciledWorkflow: proto.String(`{"gitUrl":"w"}`),
		KubeCrUid: proto.String("uid-1"), KubeNamespace: proto.String("ns")}
	other := "x"
	reqs := []*ambientv1.UpdateSessionStatusRequest{
		{Id: "S1"},
		{Id: "S1", Phase: s.Phase, StartTime: at, CompletionTime: at, SdkSessionId: s.SdkSessionId, SdkRestartCount: s.SdkRestartCount,
			Conditions: s.Conditions, ReconciledRepos: s.ReconciledRepos, ReconciledWorkflow: s.ReconciledWorkflow, KubeCrUid: s.KubeCrUid, KubeNamespace: s.KubeNamespace},
		{Id: "S1", Phase: &other}, {Id: "S1", SdkSessionId: &other}, {Id: "S1", Conditions: &other}, {Id: "S1", ReconciledRepos: &other},
		{Id: "S1", ReconciledWorkflow: &other}, {Id: "S1", KubeCrUid: &other}, {Id: "S1", KubeNamespace: &other},
		{Id: "S1", SdkRestartCount: proto.Int32(9)}, {Id: "S1", StartTime: timestamppb.Now()}, {Id: "S1", CompletionTime: timestamppb.Now()},
	}
	tr := trim(s)
	for i, req := range reqs {
		if got, want := Differs(req, tr), Differs(req, s); got != want {
			t.Errorf("request %d: Differs(trimmed) = %v, whole session %v", i, got, want)
		}
	}
	if tr.Prompt != nil || tr.Repos != nil || tr.GetName() != "" {
		t.Errorf("trim kept spec fields: %v", tr)
	}
	if newer(tr, s) != newer(s, s) || newer(s, tr) != newer(s, s) {
		t.Error("trim changed the updated_at order")
	}
}

// TestDiffersEachField: Differs is the loop guard, so a change in any single
// field the request can carry must count on its own (a missed field would
// leave the API stale forever, since the echo then compares equal). The
// table is keyed by the request's proto field names and checked against the
// descriptor, so a field added to the request without a case here fails.
func TestDiffersEachField(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	req := &ambientv1.UpdateSessionStatusRequest{Id: "S1", Phase: proto.String("Running"), StartTime: timestamppb.New(at),
		CompletionTime: timestamppb.New(at.Add(time.Hour)), SdkSessionId: proto.String("sdk"), SdkRestartCount: proto.Int32(2),
		Conditions: proto.String(`[{"type":"Ready"}]`), ReconciledRepos: proto.String(`[{"url":"u"}]`),
		ReconciledWorkflow: proto.String(`{"gitUrl":"w"}`), KubeCrUid: proto.String("uid-1"), KubeNamespace: proto.String("ns")}
	equal := func() *ambientv1.Session {
		return &ambientv1.Session{Phase: req.Phase, StartTime: req.StartTime, CompletionTime: req.CompletionTime,
			SdkSessionId: req.SdkSessionId, SdkRestartCount: req.SdkRestartCount, Conditions: req.Conditions,
			ReconciledRepos: req.ReconciledRepos, ReconciledWorkflow: req.ReconciledWorkflow,
			KubeCrUid: req.KubeCrUid, KubeNamespace: req.KubeNamespace}
	}
	// Each change is to another valid value of the field's kind (JSON stays
	// valid JSON, times differ by whole seconds), so only the value differs.
	tests := map[string]func(s *ambientv1.Session){
		"phase":               func(s *ambientv1.Session) { s.Phase = proto.String("Completed") },
		"start_time":          func(s *ambientv1.Session) { s.StartTime = timestamppb.New(at.Add(-time.Second)) },
		"completion_time":     func(s *ambientv1.Session) { s.CompletionTime = timestamppb.New(at.Add(time.Hour + time.Second)) },
		"sdk_session_id":      func(s *ambientv1.Session) { s.SdkSessionId = proto.String("sdk-2") },
		"sdk_restart_count":   func(s *ambientv1.Session) { s.SdkRestartCount = proto.Int32(3) },
		"conditions":          func(s *ambientv1.Session) { s.Conditions = proto.String(`[{"type":"Failed"}]`) },
		"reconciled_repos":    func(s *ambientv1.Session) { s.ReconciledRepos = proto.String(`[{"url":"v"}]`) },
		"reconciled_workflow": func(s *ambientv1.Session) { s.ReconciledWorkflow = proto.String(`{"gitUrl":"x"}`) },
		"kube_cr_uid":         func(s *ambientv1.Session) { s.KubeCrUid = proto.String("uid-2") },
		"kube_namespace":      func(s *ambientv1.Session) { s.KubeNamespace = proto.String("ns2") },
	}
	fields := req.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if n := string(fields.Get(i).Name()); n != "id" && tests[n] == nil {
			t.Errorf("request field %q has no case", n)
		}
	}
	if Differs(req, equal()) {
		t.Error("Differs = true for a session equal to the request")
	}
	for name, change := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := equal()
			change(s)
			if !Differs(req, s) {
				t.Errorf("Differs = false with only %s changed", name)
			}
		})
	}
}
