package session_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func TestWithheld(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, conds string
		want        bool
	}{
		{"no conditions", "", false},
		{"other conditions", `[{"type":"Ready","status":"False","reason":"EventsPublished"}]`, false},
		{"the informer's condition", `[{"type":"Ready","status":"True"},{"type":"EventsPublished","status":"False","reason":"ObjectTooLarge","message":"m"}]`, true},
		{"published again", `[{"type":"EventsPublished","status":"True"}]`, false},
		{"a bad time elsewhere is no reason to run", `[{"type":"Ready","lastTransitionTime":"yesterday"},{"type":"EventsPublished","status":"False"}]`, true},
		{"not a list", `{"type":"EventsPublished","status":"False"}`, false},
		{"not JSON", `EventsPublished`, false},
		{"an entry that is no object", `["EventsPublished",{"type":"EventsPublished","status":"False"}]`, true},
	} {
		s := &ambientv1.Session{Conditions: proto.String(tc.conds)}
		if got := session.Withheld(s); got != tc.want {
			t.Errorf("%s: Withheld(%s) = %v, want %v", tc.name, tc.conds, got, tc.want)
		}
	}
	if session.Withheld(nil) {
		t.Error("Withheld(nil) = true")
	}
}

func FuzzWithheld(f *testing.F) {
	f.Add(`[{"type":"EventsPublished","status":"False"}]`)
	f.Add(`[1,{"type":"EventsPublished"}]`)
	f.Fuzz(func(t *testing.T, conds string) {
		s := &ambientv1.Session{Conditions: proto.String(conds)}
		// Only the informer's own condition holds a session back.
		if session.Withheld(s) && !strings.Contains(conds, session.ConditionEventsPublished) {
			t.Fatalf("Withheld(%q) = true without the informer's condition", conds)
		}
	})
}
