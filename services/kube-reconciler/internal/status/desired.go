package status

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// FromCR returns the UpdateSessionStatusRequest that carries cr's status to
// its session: kube_cr_uid, kube_namespace, and every status field the CR
// has. Fields absent from the CR stay unset (the API keeps its value).
// Unparsable fields are skipped and listed in bad, so one bad timestamp from
// an operator does not block the rest.
func FromCR(cr *unstructured.Unstructured) (req *ambientv1.UpdateSessionStatusRequest, bad []string) {
	req = &ambientv1.UpdateSessionStatusRequest{
		Id:            cr.GetAnnotations()[spec.AnnotationSessionID],
		KubeCrUid:     ptr(string(cr.GetUID())),
		KubeNamespace: ptr(cr.GetNamespace()),
	}
	st, ok := cr.Object["status"].(map[string]any)
	if !ok {
		return req, nil
	}
	str := func(k string) *string {
		if v, ok := st[k].(string); ok && v != "" {
			return &v
		}
		if _, present := st[k]; present {
			if _, isStr := st[k].(string); !isStr {
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
	js := func(k string) *string {
		v, present := st[k]
		if !present || v == nil {
			return nil
		}
		b, err := json.Marshal(v) // map keys sorted: deterministic
		if err != nil {
			bad = append(bad, k)
			return nil
		}
		return ptr(string(b))
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
	if v, present := st["sdkRestartCount"]; present {
		switch n := v.(type) {
		case int64:
			if n >= math.MinInt32 && n <= math.MaxInt32 {
				req.SdkRestartCount = ptr(int32(n))
			} else {
				bad = append(bad, "sdkRestartCount")
			}
		default:
			bad = append(bad, "sdkRestartCount")
		}
	}
	req.Conditions = js("conditions")
	req.ReconciledRepos = js("reconciledRepos")
	req.ReconciledWorkflow = js("reconciledWorkflow")
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
	jsonDiff := func(want *string, got string) bool { return want != nil && !jsonEqual(*want, got) }
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
		(req.SdkRestartCount != nil && (s.SdkRestartCount == nil || *req.SdkRestartCount != s.GetSdkRestartCount())) ||
		jsonDiff(req.Conditions, s.GetConditions()) ||
		jsonDiff(req.ReconciledRepos, s.GetReconciledRepos()) ||
		jsonDiff(req.ReconciledWorkflow, s.GetReconciledWorkflow()) ||
		strDiff(req.KubeCrUid, s.GetKubeCrUid()) ||
		strDiff(req.KubeNamespace, s.GetKubeNamespace())
}

func ptr[T any](v T) *T { return &v }

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
