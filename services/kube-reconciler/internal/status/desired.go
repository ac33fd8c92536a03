package status

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// FromCR returns the UpdateSessionStatusRequest that carries cr's status to
// its session: kube_cr_uid, kube_namespace, and every status field.
// Unparsable fields are skipped and listed in bad, so one bad timestamp from
// an operator does not block the rest.
//
// The real UpdateSessionStatus keeps every field the request leaves unset
// and stores every field it sets as given (docs/architecture.md, "What
// UpdateSessionStatus does with the fields"), so a field the CR no longer
// has (absent, null or "") is sent as the API's empty value, or it would
// keep a past run's value forever: sdk_session_id "", sdk_restart_count 0,
// reconciled_repos and reconciled_workflow "". Phase, start_time and
// completion_time cannot be cleared by this request (an empty phase is
// InvalidArgument, a timestamp set is a time): those stay unset and the API
// keeps its value. Conditions are the CR's list ("[]" for none); it is not
// the request's value yet: conditionsFor merges it with the other writers'
// conditions of the session.
func FromCR(cr *unstructured.Unstructured) (req *ambientv1.UpdateSessionStatusRequest, bad []string) {
	req = &ambientv1.UpdateSessionStatusRequest{
		Id:            cr.GetAnnotations()[spec.AnnotationSessionID],
		KubeCrUid:     ptr(string(cr.GetUID())),
		KubeNamespace: ptr(cr.GetNamespace()),
	}
	st, _ := cr.Object["status"].(map[string]any) // none yet: every field empty
	str := func(k string) *string {
		if v, ok := st[k].(string); ok && v != "" {
			return &v
		}
		if v := st[k]; v != nil { // null is no value, as absent
			if _, isStr := v.(string); !isStr {
				bad = append(bad, k)
			}
		}
		return nil
	}
	ts := func(k string) *timestamppb.Timestamp {
		v := str(k)
		if v == nil {
			return nil
		}
		t, err := time.Parse(time.RFC3339, *v)
		if err != nil {
			bad = append(bad, k)
			return nil
		}
		return timestamppb.New(t)
	}
	// js returns the field as JSON; ok is false only for one that does not
	// encode (skipped: the API keeps its value).
	js := func(k string) (v *string, ok bool) {
		raw, present := st[k]
		if !present || raw == nil {
			return nil, true
		}
		b, err := json.Marshal(raw) // map keys sorted: deterministic
		if err != nil {
			bad = append(bad, k)
			return nil, false
		}
		return ptr(string(b)), true
	}
	req.Phase = str("phase")
	if req.Phase != nil && !session.Phase(*req.Phase).Valid() {
		// The API refuses a request with a phase none of the seven
		// (InvalidArgument, a permanent error): skipped, the rest still
		// reaches it. The operator's CRD has the enum; an older one not.
		bad = append(bad, "phase")
		req.Phase = nil
	}
	req.StartTime = ts("startTime")
	req.CompletionTime = ts("completionTime")
	req.SdkSessionId = str("sdkSessionId")
	if req.SdkSessionId == nil && !slices.Contains(bad, "sdkSessionId") {
		req.SdkSessionId = ptr("")
	}
	req.SdkRestartCount = ptr(int32(0))
	if v := st["sdkRestartCount"]; v != nil {
		switch n := v.(type) {
		case int64:
			if n >= math.MinInt32 && n <= math.MaxInt32 {
				req.SdkRestartCount = ptr(int32(n))
			} else {
				bad = append(bad, "sdkRestartCount")
				req.SdkRestartCount = nil
			}
		default:
			bad = append(bad, "sdkRestartCount")
			req.SdkRestartCount = nil
		}
	}
	req.Conditions = orEmpty(js, "conditions", "[]")
	req.ReconciledRepos = orEmpty(js, "reconciledRepos", "")
	req.ReconciledWorkflow = orEmpty(js, "reconciledWorkflow", "")
	return req, bad
}

// Differs reports whether applying req to s would change anything. Times are
// compared at second precision (RFC 3339 in the CR), JSON by value. This is
// the loop guard: the echo of our own write compares equal.
func Differs(req *ambientv1.UpdateSessionStatusRequest, s *ambientv1.Session) bool {
	if s == nil {
		return true
	}
	strDiff := func(want *string, got string) bool { return want != nil && *want != got }
	// "" (cleared) is no JSON: equal strings are equal first.
	jsonDiff := func(want *string, got string) bool { return want != nil && *want != got && !jsonEqual(*want, got) }
	timeDiff := func(want, got *timestamppb.Timestamp) bool {
		if want == nil {
			return false
		}
		return got == nil || !want.AsTime().Truncate(time.Second).Equal(got.AsTime().Truncate(time.Second))
	}
	return strDiff(req.Phase, s.GetPhase()) ||
		timeDiff(req.StartTime, s.GetStartTime()) ||
		timeDiff(req.CompletionTime, s.GetCompletionTime()) ||
		strDiff(req.SdkSessionId, s.GetSdkSessionId()) ||
		// Unset reads as 0, the count a cleared field is written as.
		(req.SdkRestartCount != nil && *req.SdkRestartCount != s.GetSdkRestartCount()) ||
		jsonDiff(req.Conditions, s.GetConditions()) ||
		jsonDiff(req.ReconciledRepos, s.GetReconciledRepos()) ||
		jsonDiff(req.ReconciledWorkflow, s.GetReconciledWorkflow()) ||
		strDiff(req.KubeCrUid, s.GetKubeCrUid()) ||
		strDiff(req.KubeNamespace, s.GetKubeNamespace())
}

// orEmpty returns field k of a status by js, or empty when the CR has
// none (absent or null), nil when it does not encode.
func orEmpty(js func(string) (*string, bool), k, empty string) *string {
	v, ok := js(k)
	if !ok {
		return nil
	}
	if v == nil {
		return &empty
	}
	return v
}

func ptr[T any](v T) *T { return &v }

// othersCondition reports whether a condition of type typ on a session is
// written by another writer of this control plane, read-modify-write, not
// by this write-back: the informer's EventsPublished and the event path's
// Reconciled (reconcile.ConditionReconciled). runner-manager's conditions
// are on sessions it runs, which have no AgenticSession.
func othersCondition(typ string) bool {
	return typ == session.ConditionEventsPublished || typ == reconcile.ConditionReconciled
}

// entry is one condition of a list, kept as written.
type entry struct {
	typ string
	raw json.RawMessage
}

// entries reads a conditions field; ok is false for one that is no JSON
// list ("" and null are empty). An element that is no object has type "".
func entries(js string) (out []entry, ok bool) {
	var list []json.RawMessage
	if js != "" && json.Unmarshal([]byte(js), &list) != nil {
		return nil, false
	}
	for _, raw := range list {
		var c session.RawCondition
		_ = json.Unmarshal(raw, &c) // not an object: kept with type ""
		out = append(out, entry{typ: c.Type, raw: raw})
	}
	return out, true
}

// conditionsFor returns req (from FromCR, req.Conditions the CR's list) as
// the request to write to s: conditions become the CR's merged with the
// other writers' of s, or unset when s has them already. The real
// UpdateSessionStatus replaces the whole list with what it is sent (no
// merge by type), so the merge is the writer's:
//
//   - every condition of the CR, in its order: a condition the operator
//     dropped or changed (a message cleared) is dropped or changed on the
//     session, and a type the CR has is the CR's (the operator also writes
//     a Reconciled; kube-reconciler writes its Reconciled=False only on
//     sessions without a CR);
//   - then the other writers' conditions (othersCondition) of types the
//     CR lacks, in the session's order. Everything else on the session
//     goes: it came from an earlier status of the CR.
//
// The result is a fixed point (merged again with itself it is the same),
// so the echo of the write compares equal. A session whose conditions are
// no JSON list has none of the other writers' to keep.
func conditionsFor(req *ambientv1.UpdateSessionStatusRequest, s *ambientv1.Session) *ambientv1.UpdateSessionStatusRequest {
	if req.Conditions == nil {
		return req // the CR's did not encode: left as they are
	}
	crs, ok := entries(req.GetConditions())
	if !ok {
		return req // not a list: sent as it is
	}
	cur, curOK := entries(s.GetConditions())
	out := make([]json.RawMessage, 0, len(crs)+len(cur))
	taken := make(map[string]bool, len(crs))
	for _, e := range crs {
		taken[e.typ] = true
		out = append(out, e.raw)
	}
	for _, e := range cur {
		if othersCondition(e.typ) && !taken[e.typ] {
			taken[e.typ] = true // a duplicate type: the first one
			out = append(out, e.raw)
		}
	}
	merged := "[]"
	if len(out) > 0 {
		b, err := json.Marshal(out)
		if err != nil {
			return req // entries read from JSON always encode
		}
		merged = string(b)
	}
	res := proto.CloneOf(req)
	res.Conditions = &merged
	if (curOK && len(cur) == 0 && len(out) == 0) || jsonEqual(merged, s.GetConditions()) {
		res.Conditions = nil // s has them: the list is not touched
	}
	return res
}

// jsonEqual compares two JSON documents by value; invalid JSON is never equal.
func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	ax, errA := json.Marshal(x) // re-encoding sorts object keys
	by, errB := json.Marshal(y)
	return errA == nil && errB == nil && string(ax) == string(by)
}

// describe is a short form of a request for debug logs (ids and phase only:
// conditions may hold user text).
func describe(req *ambientv1.UpdateSessionStatusRequest) string {
	return fmt.Sprintf("phase=%q uid=%s ns=%s", req.GetPhase(), req.GetKubeCrUid(), req.GetKubeNamespace())
}
