package controller_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/controller"
)

// TestSessionPhase: the phase read from the cache's bytes is the decoded
// session's, with and without a phase and next to other fields.
func TestSessionPhase(t *testing.T) {
	t.Parallel()
	for _, s := range []*ambientv1.Session{
		{},
		{Name: "a"},
		{Name: "a", Phase: proto.String("Running"), Prompt: proto.String("p")},
		{Phase: proto.String("")},
		{Phase: proto.String("Stopping"), Metadata: &ambientv1.ObjectReference{Id: "x"}},
	} {
		st, err := events.Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := controller.SessionPhase(st.Raw)
		if !ok || got != s.GetPhase() {
			t.Errorf("SessionPhase(%v) = %q, %v; want %q", s, got, ok, s.GetPhase())
		}
	}
	if _, ok := controller.SessionPhase([]byte{0xaa}); ok {
		t.Error("SessionPhase of a truncated tag: ok")
	}
}

// FuzzSessionPhase: for any bytes that decode as a session, SessionPhase
// agrees with the decoded phase (last occurrence wins); for any bytes it
// does not panic.
func FuzzSessionPhase(f *testing.F) {
	for _, s := range []*ambientv1.Session{{}, {Phase: proto.String("Running"), Name: "n"}} {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xaa, 0x01, 0x01, 'x', 0xaa, 0x01, 0x01, 'y'})
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := controller.SessionPhase(raw)
		var s ambientv1.Session
		if err := proto.Unmarshal(raw, &s); err != nil {
			return
		}
		if !ok || got != s.GetPhase() {
			t.Fatalf("SessionPhase = %q, %v; decoded phase %q", got, ok, s.GetPhase())
		}
	})
}
