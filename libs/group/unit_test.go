package group

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/nats-io/nats.go"
	"github.com/synadia-io/orbit.go/pcgroups"
	"go.opentelemetry.io/otel/metric/noop"
)

func TestAssign(t *testing.T) {
	t.Parallel()
	mm := func(m string, ps ...int) pcgroups.MemberMapping {
		return pcgroups.MemberMapping{Member: m, Partitions: ps}
	}
	tests := []struct {
		name string
		n    int
		live map[string][]int
		want []pcgroups.MemberMapping
	}{
		{name: "one member", n: 4, live: map[string][]int{"a": nil}, want: []pcgroups.MemberMapping{mm("a", 0, 1, 2, 3)}},
		{name: "two share", n: 5, live: map[string][]int{"b": nil, "a": nil}, want: []pcgroups.MemberMapping{mm("a", 0, 1), mm("b", 2, 3, 4)}},
		{name: "canary slice first", n: 6, live: map[string][]int{"c": {1, 4}, "a": nil, "b": nil}, want: []pcgroups.MemberMapping{mm("a", 0, 2), mm("b", 3, 5), mm("c", 1, 4)}},
		{name: "only canary alive", n: 4, live: map[string][]int{"c": {2}}, want: []pcgroups.MemberMapping{mm("_unassigned", 0, 1, 3), mm("c", 2)}},
		{name: "overlapping canaries: first name wins", n: 3, live: map[string][]int{"c1": {0, 1}, "c2": {1, 2}, "a": nil}, want: []pcgroups.MemberMapping{mm("c1", 0, 1), mm("c2", 2)}},
		{name: "more members than partitions", n: 2, live: map[string][]int{"a": nil, "b": nil, "c": nil}, want: []pcgroups.MemberMapping{mm("b", 0), mm("c", 1)}},
		{name: "out of range slice ignored", n: 2, live: map[string][]int{"c": {7}, "a": nil}, want: []pcgroups.MemberMapping{mm("a", 0, 1)}},
		{name: "nobody", n: 2, live: map[string][]int{}, want: []pcgroups.MemberMapping{mm("_unassigned", 0, 1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := assign(tc.n, tc.live)
			if !mappingsEqual(got, tc.want) {
				t.Fatalf("assign = %v, want %v", got, tc.want)
			}
			// Every partition exactly once: what pcgroups validates.
			var all []int
			for _, m := range got {
				all = append(all, m.Partitions...)
			}
			slices.Sort(all)
			for i, p := range all {
				if p != i {
					t.Fatalf("partitions %v are not 0..%d once each", all, tc.n-1)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := Config{Group: "g", Member: "m-0"}
	tests := []struct {
		name   string
		mutate func(*Config)
		valid  bool
	}{
		{name: "defaults", mutate: func(*Config) {}, valid: true},
		{name: "canary slice", mutate: func(c *Config) { c.MemberPartitions = []int{3, 1} }, valid: true},
		{name: "missing member", mutate: func(c *Config) { c.Member = "" }},
		{name: "dot in group", mutate: func(c *Config) { c.Group = "a.b" }},
		{name: "reserved member", mutate: func(c *Config) { c.Member = "_unassigned" }},
		{name: "slice out of range", mutate: func(c *Config) { c.MemberPartitions = []int{16} }},
		{name: "slice duplicate", mutate: func(c *Config) { c.MemberPartitions = []int{2, 2} }},
		{name: "wildcard prefix", mutate: func(c *Config) { c.SubjectPrefix = "ambient.*" }},
		{name: "short ack wait", mutate: func(c *Config) { c.AckWait = 100 * time.Millisecond }},
		{name: "negative backoff", mutate: func(c *Config) { c.Backoff = []time.Duration{-1} }},
		// A zero wait is a hot retry loop (see validate).
		{name: "zero backoff", mutate: func(c *Config) { c.Backoff = []time.Duration{time.Second, 0} }},
		{name: "unknown resource", mutate: func(c *Config) { c.Resources = []eventsv1.Resource{99} }},
		{name: "replicas as the events stream", mutate: func(c *Config) { c.Replicas = 0 }, valid: true},
		{name: "replicas 5", mutate: func(c *Config) { c.Replicas = 5 }, valid: true},
		{name: "replicas 6", mutate: func(c *Config) { c.Replicas = 6 }},
		{name: "negative replicas", mutate: func(c *Config) { c.Replicas = -1 }},
		{name: "one in flight", mutate: func(c *Config) { c.MaxInFlight = 1 }, valid: true},
		{name: "too many in flight", mutate: func(c *Config) { c.MaxInFlight = MaxMaxInFlight + 1 }},
		{name: "negative in flight", mutate: func(c *Config) { c.MaxInFlight = -1 }},
		{name: "park coalescing failures", mutate: func(c *Config) { c.Coalesce, c.ParkFailures = true, true }, valid: true},
		// Parking drops an old event for a newer one (republishParked).
		{name: "park without coalesce", mutate: func(c *Config) { c.ParkFailures = true }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tc.mutate(&c)
			_, err := c.WithDefaults()
			if tc.valid != (err == nil) {
				t.Fatalf("withDefaults err = %v, want valid=%v", err, tc.valid)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	c := Config{Backoff: []time.Duration{time.Second, 2 * time.Second}}
	for attempt, want := range map[uint64]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 9: 2 * time.Second} {
		if got := c.backoff(attempt); got != want {
			t.Errorf("backoff(%d) = %s, want %s", attempt, got, want)
		}
	}
}

func TestDLQSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg           Config
		subject, want string
	}{
		{Config{Group: "kube-reconciler"}, "ambient.events.sessions.p1.s1", "ambient.dlq.kube-reconciler.sessions.p1.s1"},
		{Config{Group: "tally", SubjectPrefix: "ambient.shadow.events"}, "ambient.shadow.events.projects._.p1", "ambient.dlq.tally.projects._.p1"},
		{Config{Group: "g"}, "other.subject", "ambient.dlq.g.other.subject"},
	}
	for _, tc := range tests {
		if got := DLQSubject(tc.cfg, tc.subject); got != tc.want {
			t.Errorf("DLQSubject(%q) = %q, want %q", tc.subject, got, tc.want)
		}
	}
}

// TestDLQSubjectBoundsLongTokens: an event published before subjects were
// bounded can carry a project token just under the server's control line
// limit, and its dead letter, longer by the group's name, was over it: the
// server closed the member's connection. Its dead letter now takes the
// digest token, the same one a new event of that object has.
func TestDLQSubjectBoundsLongTokens(t *testing.T) {
	t.Parallel()
	project := strings.Repeat("p", 4000)
	legacy := "ambient.events.sessions." + project + ".s1"
	cfg := Config{Group: "kube-reconciler"}
	got := DLQSubject(cfg, legacy)
	// A project token of at most 128 bytes (events.MaxTokenLen).
	if want := len("ambient.dlq.kube-reconciler.sessions..s1") + 128; len(got) > want {
		t.Fatalf("DLQSubject of a %d-byte subject is %d bytes, want at most %d", len(legacy), len(got), want)
	}
	current := events.Subject(events.SubjectPrefix, eventsv1.Resource_RESOURCE_SESSIONS, project, "s1")
	if want := DLQSubject(cfg, current); got != want {
		t.Fatalf("DLQSubject(legacy) = %q, want %q, the dead letter subject of the event published now", got, want)
	}
}

// TestDLQMsgErrorOneLine: dlqMsg itself puts a multi-line error on one
// line (nats.go would also replace the newlines on the wire, which is why
// TestDeadLetterErrorHeaderHasNoNewline alone cannot tell).
func TestDLQMsgErrorOneLine(t *testing.T) {
	t.Parallel()
	m := dlqMsg(Config{Group: "g", Member: "a"}, "ambient.events.sessions.p1.s1", nats.Header{}, nil, 1, ReasonTerminal,
		errors.New("line one\nline two\r\nline three"))
	if got, want := m.Header.Get(HeaderDLQError), "line one line two  line three"; got != want {
		t.Fatalf("%s = %q, want %q", HeaderDLQError, got, want)
	}
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	base := errors.New("bad name")
	if !IsTerminal(fmt.Errorf("apply: %w", Terminal(base))) {
		t.Error("wrapped terminal not detected")
	}
	if !errors.Is(Terminal(base), base) {
		t.Error("Terminal hides the cause")
	}
	if IsTerminal(base) || Terminal(nil) != nil {
		t.Error("plain error is terminal or Terminal(nil) != nil")
	}
}

func TestPartitionStable(t *testing.T) {
	t.Parallel()
	// FNV-1a 32 values are fixed; these pin the function to the server's.
	for token, want := range map[string]int{"": int(2166136261 % 16), "a": int(0xe40c292c % 16)} {
		if got := Partition(token, 16); got != want {
			t.Errorf("Partition(%q) = %d, want %d", token, got, want)
		}
	}
}

// TestPartitionOfIsSubjectToken: the server partitions by the id token of
// the subject, so PartitionOf must hash that same token, the digest token
// of a long id included, or a member would think it owns objects the
// server hands another (and resync them).
func TestPartitionOfIsSubjectToken(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"2c5YjvN8iZ5xS9bYc1Qk3tPq7wE", "s.1", strings.Repeat("i", 200), strings.Repeat("項", 50)} {
		subj := events.Subject(events.SubjectPrefix, eventsv1.Resource_RESOURCE_SESSIONS, "p1", id)
		tok := subj[strings.LastIndexByte(subj, '.')+1:]
		if got, want := PartitionOf(id, 1024), Partition(tok, 1024); got != want {
			t.Errorf("PartitionOf of a %d-byte id = %d, want %d (the subject's token %q)", len(id), got, want, tok)
		}
	}
}

// TestRegisterMetricsNeedsMeterAndStats: the metrics read Stats through
// the Meter; without either there is nothing to export, and the caller
// learns it instead of getting metrics that never change.
func TestRegisterMetricsNeedsMeterAndStats(t *testing.T) {
	t.Parallel()
	meter := noop.NewMeterProvider().Meter("group-test")
	for name, cfg := range map[string]Config{
		"no meter": {Group: "g", Member: "m", Stats: &Stats{}},
		"no stats": {Group: "g", Member: "m", Meter: meter},
	} {
		if _, err := RegisterMetrics(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: RegisterMetrics = %v, want ErrInvalidConfig", name, err)
		}
	}
	unregister, err := RegisterMetrics(Config{Group: "g", Member: "m", Meter: meter, Stats: &Stats{}})
	if err != nil {
		t.Fatalf("RegisterMetrics = %v", err)
	}
	if err := unregister(); err != nil {
		t.Errorf("unregister = %v", err)
	}
}

// TestAssignmentStateChanged: State's channel closes when the owned
// partitions (or the partition count) change, and only then: Run sets the
// same partitions on every heartbeat, which must not wake State's waiters.
func TestAssignmentStateChanged(t *testing.T) {
	t.Parallel()
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	a := &Assignment{}
	n, owned, changed := a.State()
	if n != 0 || owned != nil || closed(changed) {
		t.Fatalf("zero Assignment: State = %d, %v, closed %v", n, owned, closed(changed))
	}
	a.set(4, []int{3, 1})
	if !closed(changed) {
		t.Fatal("joining did not close the channel")
	}
	n, owned, changed = a.State()
	if n != 4 || !slices.Equal(owned, []int{1, 3}) || closed(changed) {
		t.Fatalf("after join: State = %d, %v, closed %v", n, owned, closed(changed))
	}
	a.set(4, []int{1, 3}) // a heartbeat: nothing moved
	if closed(changed) {
		t.Fatal("an unchanged assignment closed the channel")
	}
	owned[0] = 99 // State returns a copy
	a.set(4, []int{0, 1, 3})
	if !closed(changed) {
		t.Fatal("a gained partition did not close the channel")
	}
	if _, owned, _ = a.State(); !slices.Equal(owned, []int{0, 1, 3}) {
		t.Fatalf("owned = %v", owned)
	}
	_, _, changed = a.State()
	a.set(8, []int{0, 1, 3})
	if !closed(changed) {
		t.Fatal("a new partition count did not close the channel")
	}
	_, _, changed = a.State()
	a.set(8, nil) // left the group
	if !closed(changed) {
		t.Fatal("leaving did not close the channel")
	}
}
