package status

import (
	"maps"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
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
	full := func(changes map[string]any) map[string]any {
		st := map[string]any{
			"phase": "Running", "startTime": "2026-01-02T03:04:05Z", "sdkSessionId": "sdk", "sdkRestartCount": int64(3),
			"conditions": []any{map[string]any{"type": "Ready", "status": "True"}},
		}
		maps.Copy(st, changes)
		return st
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
		{"equal content, other JSON spelling and sub-second time", full(nil), matching, false, 0},
		{"phase changed", full(map[string]any{"phase": "Completed"}), matching, true, 0},
		{"restart count changed", full(map[string]any{"sdkRestartCount": int64(4)}), matching, true, 0},
		{"conditions changed", full(map[string]any{"conditions": []any{}}), matching, true, 0},
		{"bad time skipped", full(map[string]any{"startTime": "yesterday"}), matching, false, 1},
		{"bad type skipped", full(map[string]any{"phase": int64(1)}), matching, false, 1},
		// A phase none of the seven (a CRD without the operator's enum):
		// the API refuses the whole request with it (InvalidArgument), so
		// the uid, namespace and the rest would be lost with it.
		{"unknown phase skipped", full(map[string]any{"phase": "Paused"}), matching, false, 1},
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
			if got := Differs(conditionsFor(req, tc.session), tc.session); got != tc.differs {
				t.Errorf("Differs = %v, want %v", got, tc.differs)
			}
		})
	}
}

// TestFromCRClearsDroppedFields: a status field the CR no longer has
// (absent, null or "") is sent as the API's empty value, since the real
// UpdateSessionStatus keeps every field a request leaves unset; the three
// fields that request cannot clear (an empty phase is InvalidArgument, a
// timestamp set is a time) stay unset. The session that holds the cleared
// values then compares equal: no write loop.
func TestFromCRClearsDroppedFields(t *testing.T) {
	t.Parallel()
	at := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	before := &ambientv1.Session{Phase: proto.String("Running"), StartTime: at, CompletionTime: at, SdkSessionId: proto.String("sdk"),
		SdkRestartCount: proto.Int32(2), Conditions: proto.String(`[{"type":"Ready","status":"True","message":"m"}]`),
		ReconciledRepos: proto.String(`[{"url":"u"}]`), ReconciledWorkflow: proto.String(`{"gitUrl":"w"}`),
		KubeCrUid: proto.String("uid-1"), KubeNamespace: proto.String("ns")}
	for name, st := range map[string]map[string]any{
		"no status":    nil,
		"empty status": {},
		"null and empty values": {"phase": "", "startTime": nil, "completionTime": "", "sdkSessionId": "", "sdkRestartCount": nil,
			"conditions": nil, "reconciledRepos": nil, "reconciledWorkflow": nil},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			req, bad := FromCR(cr(st))
			if len(bad) > 0 {
				t.Errorf("bad = %v", bad)
			}
			req = conditionsFor(req, before)
			if req.Phase != nil || req.StartTime != nil || req.CompletionTime != nil {
				t.Errorf("phase %v, start %v, completion %v set: the API cannot clear them", req.Phase, req.StartTime, req.CompletionTime)
			}
			if req.SdkSessionId == nil || req.GetSdkSessionId() != "" || req.SdkRestartCount == nil || req.GetSdkRestartCount() != 0 ||
				req.ReconciledRepos == nil || req.GetReconciledRepos() != "" || req.ReconciledWorkflow == nil || req.GetReconciledWorkflow() != "" {
				t.Errorf("request = %v, want sdk_session_id \"\", sdk_restart_count 0, reconciled_repos and reconciled_workflow \"\"", req)
			}
			if req.GetConditions() != "[]" {
				t.Errorf("conditions = %q, want []", req.GetConditions())
			}
			if !Differs(req, before) {
				t.Error("Differs = false for a session holding the dropped values")
			}
			after := proto.CloneOf(before)
			after.SdkSessionId, after.SdkRestartCount, after.ReconciledRepos, after.ReconciledWorkflow = req.SdkSessionId, req.SdkRestartCount,
				req.ReconciledRepos, req.ReconciledWorkflow
			after.Conditions = req.Conditions
			if again := conditionsFor(req, after); Differs(again, after) {
				t.Errorf("Differs = true for the session the request made: %v", again)
			}
			// A session that never had them: nothing to write.
			fresh := &ambientv1.Session{KubeCrUid: proto.String("uid-1"), KubeNamespace: proto.String("ns")}
			if Differs(conditionsFor(req, fresh), fresh) {
				t.Error("Differs = true for a session without any of the fields")
			}
		})
	}
}

// TestConditionsFor: the real UpdateSessionStatus replaces the whole
// conditions list, so the write-back merges: the CR's conditions (those it
// dropped go, a changed message is changed), then the conditions other
// writers of the session own (the informer's EventsPublished, the event
// path's Reconciled) that the CR lacks. The result merged again is the same
// (no write for the echo).
func TestConditionsFor(t *testing.T) {
	t.Parallel()
	const (
		ready       = `{"type":"Ready","status":"True","message":"running"}`
		readyLater  = `{"status":"False","type":"Ready"}`
		podCreated  = `{"type":"PodCreated","status":"True"}`
		published   = `{"type":"EventsPublished","status":"False","reason":"ObjectTooLarge"}`
		reconciled  = `{"type":"Reconciled","status":"True","reason":"Applied"}`
		opReconcile = `{"type":"Reconciled","status":"True","reason":"SpecApplied"}`
	)
	tests := []struct {
		name, cr, session, want string // want "": conditions left unset
	}{
		{"others kept, dropped and changed ones follow the CR", "[" + readyLater + "]",
			"[" + ready + "," + published + "," + podCreated + "," + reconciled + "]", "[" + readyLater + "," + published + "," + reconciled + "]"},
		{"no CR conditions: only the others remain", "[]", "[" + ready + "," + published + "]", "[" + published + "]"},
		{"the CR's type is the CR's", "[" + opReconcile + "]", "[" + reconciled + "]", "[" + opReconcile + "]"},
		{"nothing anywhere: untouched", "[]", "", ""},
		{"already merged: untouched", "[" + ready + "]", "[" + ready + "," + published + "]", ""},
		{"unreadable session list: the CR's", "[" + ready + "]", "not json", "[" + ready + "]"},
		{"unreadable session list, none in the CR: cleared", "[]", "not json", "[]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &ambientv1.Session{Conditions: proto.String(tc.session)}
			got := conditionsFor(&ambientv1.UpdateSessionStatusRequest{Id: "S1", Conditions: proto.String(tc.cr)}, s)
			switch {
			case tc.want == "" && got.Conditions != nil:
				t.Fatalf("conditions = %s, want unset", got.GetConditions())
			case tc.want == "":
				return
			case got.Conditions == nil || !jsonEqual(got.GetConditions(), tc.want):
				t.Fatalf("conditions = %v, want %s", got.Conditions, tc.want)
			}
			s.Conditions = got.Conditions // the write, then its echo
			if again := conditionsFor(&ambientv1.UpdateSessionStatusRequest{Id: "S1", Conditions: proto.String(tc.cr)}, s); again.Conditions != nil {
				t.Errorf("merged again = %s, want unset (a fixed point)", again.GetConditions())
			}
		})
	}
}

// TestOthersConditionNamesTheEventPath: the write-back keeps the event
// path's condition by its type, declared in package reconcile.
func TestOthersConditionNamesTheEventPath(t *testing.T) {
	t.Parallel()
	if !othersCondition(reconcile.ConditionReconciled) || !othersCondition(session.ConditionEventsPublished) {
		t.Errorf("othersCondition(%q) or (%q) = false", reconcile.ConditionReconciled, session.ConditionEventsPublished)
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
