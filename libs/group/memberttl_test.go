package group

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// A member with a lower MemberTTL joins while one with a higher TTL runs
// (a rolling update, a canary): the members bucket keeps the higher TTL,
// and the new member beats and fences by it. Before, it set the bucket's
// TTL to its own: the live member, beating every old TTL/3, expired
// between beats and the partitions flapped. A higher TTL raises it.
func TestMembersBucketTTLNeverLowered(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	if _, err := bus.EnsureEventsStream(ctx, js, 1, 0); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, step := range []struct {
		member    string
		ttl, want time.Duration
	}{
		{"a", 3 * time.Second, 3 * time.Second},        // created
		{"b", 600 * time.Millisecond, 3 * time.Second}, // kept
		{"c", 4 * time.Second, 4 * time.Second},        // raised
	} {
		cfg, err := Config{Group: "ttl", Member: step.member, MemberTTL: step.ttl}.WithDefaults()
		if err != nil {
			t.Fatal(err)
		}
		m, err := join(ctx, js, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		st, err := m.members.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTL() != step.want || m.cfg.MemberTTL != step.want {
			t.Errorf("member %s with ttl %v: bucket TTL %v, member beats by %v; want %v", step.member, step.ttl, st.TTL(), m.cfg.MemberTTL, step.want)
		}
	}
}
