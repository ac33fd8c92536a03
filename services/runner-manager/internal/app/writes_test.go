package app_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// statusWrites returns svc's status writes so far, by phase and result
// ("Running ok", " error" for a write of no phase), from its
// runner_manager_status_writes_total counter. The service counts each
// write once, with its result: a retry within the write counts with it,
// and a write that failed (past its deadline, although the API may have
// taken it) counts apart from the one the sweep sends again. So the "ok"
// counts are the writes the service knows landed, one per thing it
// reported, however often the API was called for it.
func statusWrites(t testing.TB, svc *service) map[string]int {
	t.Helper()
	out := map[string]int{}
	for line := range strings.Lines(httpBody(t, "http://"+svc.metricsAddr+"/metrics")) {
		labels, ok := strings.CutPrefix(line, "runner_manager_status_writes_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(labels, "} ")
		if !ok {
			t.Fatalf("metrics line %q", line)
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[label(labels, "phase")+" "+label(labels, "result")] += int(n)
	}
	return out
}

// label returns the value of label name in labels (`a="x",b="y"`; the
// values here hold no quotes or commas), "" when absent.
func label(labels, name string) string {
	for kv := range strings.SplitSeq(labels, ",") {
		if v, ok := strings.CutPrefix(kv, name+`="`); ok {
			return strings.TrimSuffix(v, `"`)
		}
	}
	return ""
}

// checkStatusWrites fails the test unless the status writes svc knows
// landed (result "ok") are want, by phase ("" for a write of no phase: a
// repos report), and no other write landed. A write that failed is
// allowed: under load its answer can come past its deadline although the
// API took it, and the sweep (or the event's retry) sends it again, one
// more API call for the same report; then the phase has fewer "ok"
// writes than wanted only by as many as failed (a failed Creating is
// superseded by Running, not sent again). A second report of the same
// thing that landed is still one "ok" too many. With no failed write,
// the API's call count must be the sum of want as well. It ends the test
// on a mismatch.
func (w *world) checkStatusWrites(svc *service, want map[string]int) {
	w.t.Helper()
	got := statusWrites(w.t, svc)
	var problems []string
	ok, failed, total := map[string]int{}, 0, 0
	for k, n := range got {
		phase, result, _ := strings.Cut(k, " ")
		switch result {
		case "ok":
			ok[phase] += n
		default:
			failed += n
		}
	}
	for phase, n := range ok {
		if n > want[phase] {
			problems = append(problems, fmt.Sprintf("%d status writes of phase %q landed, want %d", n, phase, want[phase]))
		}
	}
	for phase, n := range want {
		total += n
		if lost := n - ok[phase]; lost > 0 && got[phase+" error"] < lost {
			problems = append(problems, fmt.Sprintf("%d status writes of phase %q landed, want %d (or fewer by those that failed)", ok[phase], phase, n))
		}
	}
	if calls := w.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName); failed == 0 && calls != total {
		problems = append(problems, fmt.Sprintf("UpdateSessionStatus calls = %d with no failed write, want %d", calls, total))
	}
	if len(problems) > 0 {
		slices.Sort(problems) // from map order: the same run reads the same
		w.t.Fatalf("%s (status writes by phase and result: %v)", strings.Join(problems, "; "), got)
	}
}
