package app_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// natsConns returns the ids of the NATS server's open client connections
// named name (an informer names its connection "informer/<instance>").
func (h *harness) natsConns(name string) []uint64 {
	h.t.Helper()
	cz, err := h.nats.NATS().Connz(nil)
	if err != nil {
		h.t.Fatalf("connz: %v", err)
	}
	var cids []uint64
	for _, c := range cz.Conns {
		if c.Name == name {
			cids = append(cids, c.Cid)
		}
	}
	return cids
}

// wantSameConns fails the test at once when the connections of inf are no
// longer exactly cids: the server closed one (and nats.go gives up on a
// connection the server closed for a protocol violation).
func (h *harness) wantSameConns(inf *informer, cids []uint64, when string) {
	h.t.Helper()
	if got := h.natsConns("informer/" + inf.name); !slices.Equal(got, cids) {
		h.t.Fatalf("%s: informer %s's NATS connections are %v, were %v: the server closed its connection", when, inf.name, got, cids)
	}
}

// TestLongProjectIDKeepsPublishing: the API accepts any project_id on a
// session, and the subject carried it escaped and unbounded. 5,000 ASCII
// characters, or 500 CJK ones (3 escapes of 3 bytes each), made the PUB
// line longer than nats-server's max_control_line (4096): the server
// closed the informer's connection ("Maximum Control Line Exceeded"),
// nats.go never reconnected, the informer lost its lease, and a restart
// published the same object and died again, so no tenant's event went out.
// Now such a token is a digest token: the long sessions are published, a
// normal session of another project is published and consumed, and the
// informer keeps its one connection, also after a restart.
func TestLongProjectIDKeepsPublishing(t *testing.T) {
	t.Parallel()
	// A subject of the layout with both tokens at their longest.
	const maxSubject = len(events.SubjectPrefix+".project_settings..") + 2*128
	h := newHarness(t)
	a := h.start("a", nil)
	h.waitLeaderReady(a, 30*time.Second)
	tl := h.runTally(live, events.SubjectPrefix)
	cids := h.natsConns("informer/a")
	if len(cids) == 0 {
		t.Fatal("no NATS connection named informer/a")
	}

	ctx := context.Background()
	create := func(name, project string) string {
		t.Helper()
		s, err := h.c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: name, ProjectId: proto.String(project), Prompt: proto.String("hello")})
		if err != nil {
			t.Fatal(err)
		}
		return s.GetMetadata().GetId()
	}
	long := map[string]string{ // session id -> project id
		create("long-ascii", strings.Repeat("p", 5000)): strings.Repeat("p", 5000),
		create("long-cjk", strings.Repeat("項", 500)):    strings.Repeat("項", 500),
	}
	normal := create("normal", "other")

	// The normal session of another project is published and consumed.
	testenv.Eventually(t, 30*time.Second, func() error {
		h.wantSameConns(a, cids, "after the long project ids")
		seen := tl.Snapshot(true).Resources[events.TokenSessions].SeenIDs
		if !slices.Contains(seen, normal) {
			return fmt.Errorf("the tally has not seen session %s (seen %v)", normal, seen)
		}
		return nil
	})
	// So are the long ones, on a bounded subject that still names the
	// object, with the whole project id in the event.
	for id, project := range long {
		testenv.Eventually(t, 30*time.Second, func() error {
			if !slices.Contains(tl.Snapshot(true).Resources[events.TokenSessions].SeenIDs, id) {
				return fmt.Errorf("the tally has not seen session %s", id)
			}
			return nil
		})
		m, ev := h.lastEvent(id)
		want := events.Subject(events.SubjectPrefix, eventsv1.Resource_RESOURCE_SESSIONS, project, id)
		if m.Subject != want || len(m.Subject) > maxSubject {
			t.Fatalf("session %s published on %q (%d bytes), want %q", id, m.Subject, len(m.Subject), want)
		}
		if ev.GetType() != eventsv1.EventType_EVENT_TYPE_ADDED || ev.GetProjectId() != project || ev.GetObject().GetSession().GetProjectId() != project {
			t.Fatalf("session %s: %s event with a project id of %d bytes, want ADDED with the whole project id", id, events.TypeName(ev.GetType()), len(ev.GetProjectId()))
		}
	}
	h.waitLeaderReady(a, 10*time.Second)
	h.wantSameConns(a, cids, "after publishing")

	// A restart loads the same objects and publishes their next change.
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	b := h.start("b", nil)
	h.waitLeaderReady(b, 30*time.Second)
	bcids := h.natsConns("informer/b")
	for id := range long {
		h.updateSession(id, "changed")
	}
	h.updateSession(normal, "changed")
	ids := []string{normal}
	for id := range long {
		ids = append(ids, id)
	}
	for _, id := range ids {
		testenv.Eventually(t, 30*time.Second, func() error {
			h.wantSameConns(b, bcids, "after the restart")
			if _, ev := h.lastEvent(id); ev.GetType() != eventsv1.EventType_EVENT_TYPE_MODIFIED || ev.GetObject().GetSession().GetPrompt() != "changed" {
				return fmt.Errorf("session %s: last event %s, want the MODIFIED", id, events.TypeName(ev.GetType()))
			}
			return nil
		})
	}
	h.waitConverged(live, bucket, 30*time.Second)
}
