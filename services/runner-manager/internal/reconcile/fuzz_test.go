package reconcile

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Conditions and labels are JSON strings from the API: malformed input
// must never panic, and conditions we write read back the same.
func FuzzConditionsAndLabels(f *testing.F) {
	for _, s := range []string{"", "[]", "null", `[{"type":"RunnerStarted","status":"True"}]`, `{"a":"b"}`, `[1,2]`, "\x00"} {
		f.Add(s)
	}
	sel := Selector{Projects: []string{"*"}, Label: "ambient-code.io/runner=local"}
	f.Fuzz(func(t *testing.T, s string) {
		cs := parseConditions(&s)
		cs = cs.set(Condition{Type: CondRunnerStarted, Status: StatusTrue, Reason: ReasonStarted}, time.Unix(1, 0))
		out := cs.json()
		back := parseConditions(&out)
		if c, ok := back.get(CondRunnerStarted); !ok || c.Status != StatusTrue {
			t.Fatalf("round trip lost the condition: %s", out)
		}
		sel.Match(&ambientv1.Session{Labels: proto.String(s), ProjectId: proto.String(s)})
	})
}

func TestSelectorMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		sel    Selector
		proj   string
		labels string
		want   bool
	}{
		{"all", Selector{Projects: []string{"*"}}, "p", "", true},
		{"listed project", Selector{Projects: []string{"a", "p"}}, "p", "", true},
		{"other project", Selector{Projects: []string{"a"}}, "p", "", false},
		{"label match", Selector{Projects: []string{"*"}, Label: "run=local"}, "p", `{"run":"local"}`, true},
		{"label mismatch", Selector{Projects: []string{"*"}, Label: "run=local"}, "p", `{"run":"kube"}`, false},
		{"label missing", Selector{Projects: []string{"*"}, Label: "run=local"}, "p", `{}`, false},
		{"bad labels json", Selector{Projects: []string{"*"}, Label: "run=local"}, "p", `{bad`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &ambientv1.Session{ProjectId: proto.String(tc.proj)}
			if tc.labels != "" {
				s.Labels = proto.String(tc.labels)
			}
			if got := tc.sel.Match(s); got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}
