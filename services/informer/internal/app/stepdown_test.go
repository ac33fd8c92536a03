package app_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// published reports whether the live stream holds an event of object id.
func (h *harness) published(id string) error {
	evs, err := h.tryStreamEvents(live)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		if ev.GetObjectId() == id {
			return nil
		}
	}
	return fmt.Errorf("no event of %s in %d events", id, len(evs))
}

// startSyncedLeader seeds the API with 3 sessions and 1 project, starts
// informer "a" with overrides and opts, and waits until it leads, is
// ready, and the events stream and objects bucket hold the API's state:
// the common start of the tests that then lose or change something. It
// returns a and the events the stream converged on.
func (h *harness) startSyncedLeader(overrides map[string]string, opts ...app.Option) (*informer, []*eventsv1.ResourceEvent) {
	h.t.Helper()
	h.seed(3, 1)
	a := h.start("a", overrides, opts...)
	h.waitLeaderReady(a, 30*time.Second)
	return a, h.waitConverged(live, bucket, 30*time.Second)
}

// deleteEventsStream deletes the events stream, as one deleted by
// mistake or lost on its peers.
func (h *harness) deleteEventsStream() {
	h.t.Helper()
	if err := h.js.DeleteStream(h.t.Context(), live); err != nil {
		h.t.Fatal(err)
	}
}

// TestLeaderCutFromAPIStepsDown: the leader loses its connection to the
// API while NATS stays fine, so it keeps renewing its lease. Once its
// watches stayed unsynced for LEADER_UNSYNCED_TIMEOUT it steps down, the
// standby (which reaches the API) takes over and publishes what changed,
// and the old leader, still cut off, does not take the lease back.
// Before the step-down the leader held the lease for ever and nothing was
// published.
func TestLeaderCutFromAPIStepsDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(2, 1)
	link := testenv.NewLink(t, h.api.GRPCAddr())
	env := map[string]string{config.EnvUnsyncedStepDown: "2s", config.EnvLeaseTTL: "2s"}
	aEnv := map[string]string{apiclient.EnvGRPCAddr: link.Addr()}
	for k, v := range env {
		aEnv[k] = v
	}
	a := h.start("a", aEnv)
	h.waitLeaderReady(a, 30*time.Second)
	b := h.start("b", env)
	h.waitConverged(live, bucket, 30*time.Second)

	link.Cut()
	id := h.createSession("during-partition").GetMetadata().GetId()
	testenv.Eventually(t, 30*time.Second, func() error {
		if !b.isLeader() {
			return fmt.Errorf("b does not lead (a leader=%v)", a.isLeader())
		}
		return h.published(id)
	})
	h.waitLeaderReady(b, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	if got := a.metric("informer_lease_terms_total"); got != 1 {
		t.Errorf("a led %v terms, want 1: cut off from the API, it took the lease back", got)
	}
}

// TestSingleLeaderStepsDownAndRecovers: a lone informer cut off from the
// API steps down like any leader, and with nobody to take over leads again
// once the API answers: it relists and publishes what changed meanwhile.
func TestSingleLeaderStepsDownAndRecovers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(2, 1)
	link := testenv.NewLink(t, h.api.GRPCAddr())
	a := h.start("a", map[string]string{apiclient.EnvGRPCAddr: link.Addr(), config.EnvUnsyncedStepDown: "2s", config.EnvLeaseTTL: "2s"})
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)

	link.Cut()
	testenv.Eventually(t, 30*time.Second, func() error {
		if a.isLeader() {
			return errors.New("a still leads, cut off from the API")
		}
		return nil
	})
	id := h.createSession("during-partition").GetMetadata().GetId()
	link.Restore()
	h.waitLeaderReady(a, 60*time.Second)
	testenv.Eventually(t, 30*time.Second, func() error { return h.published(id) })
	h.waitConverged(live, bucket, 30*time.Second)
	if got := a.metric("informer_lease_terms_total"); got < 2 {
		t.Errorf("a led %v terms, want at least 2 (before the step-down and after)", got)
	}
}

// TestOneFailingResourceKeepsTheLeader: the API answers, sessions and
// projects list and watch fine, but every ListProjectSettings fails (a row
// the server cannot convert: Internal for every caller). Every replica
// would see the same, so stepping down cannot help: the leader keeps its
// term, the other resources' events keep flowing, and the failing resource
// shows on /readyz until its list succeeds again. Before, the leader
// stepped down after LEADER_UNSYNCED_TIMEOUT, took the lease again, and
// did so for ever, relisting everything and pausing every event each time.
func TestOneFailingResourceKeepsTheLeader(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	list := ambientv1.ProjectSettingsService_ListProjectSettings_FullMethodName
	h.api.FailNext(list, 1<<30, codes.Internal)
	inf := h.start("a", map[string]string{config.EnvUnsyncedStepDown: "1s"})
	// At the 200 ms backoff cap, 40 failed lists take many times the 1 s
	// limit of leading time.
	testenv.Eventually(t, 120*time.Second, func() error {
		if n := h.api.CallCount(list); n < 40 {
			return fmt.Errorf("%d project settings lists, want 40", n)
		}
		return nil
	})
	id := h.createSession("while-settings-fail").GetMetadata().GetId()
	testenv.Eventually(t, 30*time.Second, func() error { return h.published(id) })
	code, body, err := inf.httpGet("/readyz")
	if err != nil || code == http.StatusOK || !strings.Contains(body, events.TokenProjectSettings) {
		t.Errorf("/readyz answered %d %q (%v), want not ready naming %s", code, body, err, events.TokenProjectSettings)
	}
	if n := inf.metric("informer_lease_terms_total"); n != 1 {
		t.Errorf("informer_lease_terms_total = %v, want 1: the leader stepped down although only one resource's list fails", n)
	}
	if n := inf.metric("informer_relists_total", `resource="sessions"`); n > 2 {
		t.Errorf("sessions listed %v times, want at most 2 (first list, confirming list)", n)
	}

	h.api.FailNext(list, 0, codes.OK)
	h.waitLeaderReady(inf, 30*time.Second)
	if n := inf.metric("informer_lease_terms_total"); n != 1 {
		t.Errorf("informer_lease_terms_total = %v after the list healed, want 1", n)
	}
}
