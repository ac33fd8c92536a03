package bus_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReadStream: the messages matching the filter from the start sequence
// to the end, in order, and the consumer it used is gone afterwards.
func TestReadStream(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"a.>", "b.>"}})
	if err != nil {
		t.Fatal(err)
	}
	read := func(filter string, start uint64) []string {
		t.Helper()
		var got []string
		if err := bus.ReadStream(ctx, s, filter, start, func(m jetstream.Msg) { got = append(got, string(m.Data())) }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := read("a.>", 1); len(got) != 0 {
		t.Fatalf("empty stream: %v", got)
	}
	for i := range 1200 { // more than one fetch
		subj := "a.x"
		if i%2 == 1 {
			subj = "b.x"
		}
		if _, err := js.Publish(ctx, subj, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	got := read("a.>", 1)
	if len(got) != 600 || got[0] != "0" || got[599] != "1198" {
		t.Fatalf("a.> from 1: %d messages, first %v last %v", len(got), got[:1], got[len(got)-1:])
	}
	if got := read("b.>", 1198); !slices.Equal(got, []string{"1197", "1199"}) {
		t.Fatalf("b.> from 1198 = %v, want [1197 1199]", got)
	}
	if got := read("a.>", 5000); len(got) != 0 {
		t.Fatalf("past the end: %v", got)
	}
	names := s.ConsumerNames(ctx)
	var left []string
	for n := range names.Name() {
		left = append(left, n)
	}
	if len(left) != 0 {
		t.Fatalf("consumers left behind: %v", left)
	}
}

// TestReadLastPerSubject: one message per subject matching the filter,
// its last, in stream order, however many the subject holds; and the
// consumer it used is gone afterwards.
func TestReadLastPerSubject(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"a.>", "b.>"}})
	if err != nil {
		t.Fatal(err)
	}
	read := func(filter string) []string {
		t.Helper()
		var got []string
		err := bus.ReadLastPerSubject(ctx, s, filter, func(m jetstream.Msg) { got = append(got, m.Subject()+"="+string(m.Data())) })
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := read("a.>"); len(got) != 0 {
		t.Fatalf("empty stream: %v", got)
	}
	// 1,200 subjects (more than one fetch), each written 3 times, and
	// subjects of another filter between them.
	const subjects = 1200
	for round := range 3 {
		for i := range subjects {
			if _, err := js.Publish(ctx, fmt.Sprintf("a.%d", i), fmt.Append(nil, round)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := js.Publish(ctx, "b.x", fmt.Append(nil, round)); err != nil {
			t.Fatal(err)
		}
	}
	got := read("a.>")
	if len(got) != subjects || got[0] != "a.0=2" || got[subjects-1] != fmt.Sprintf("a.%d=2", subjects-1) {
		t.Fatalf("a.>: %d messages, first %v last %v; want %d, each subject's last (2)", len(got), got[:min(1, len(got))], got[max(0, len(got)-1):], subjects)
	}
	if got := read("b.>"); !slices.Equal(got, []string{"b.x=2"}) {
		t.Fatalf("b.> = %v, want [b.x=2]", got)
	}
	names := s.ConsumerNames(ctx)
	var left []string
	for n := range names.Name() {
		left = append(left, n)
	}
	if len(left) != 0 {
		t.Fatalf("consumers left behind: %v", left)
	}
}
