package app

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestStatusSoonAfterAPIOutage: a CR status change made while the API is
// unreachable reaches the API within seconds of its return. The retries of
// the failed write back off to at most status.MaxRetryDelay; with
// client-go's default (doubling up to 1000 s) the retry that follows a 24 s
// outage came about 17 s after it ended, and after a 90 s outage, 2m36s.
func TestStatusSoonAfterAPIOutage(t *testing.T) {
	h := newHarness(t)
	link := testenv.NewLink(t, h.api.GRPCAddr())
	r := h.start(t, "apiout", nil, map[string]string{apiclient.EnvGRPCAddr: link.Addr()})
	ctx := t.Context()
	name := unique("apiout")
	p := h.project(t, name)
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(p.GetMetadata().GetId())})
	if err != nil {
		t.Fatal(err)
	}
	id, crName := s.GetMetadata().GetId(), lower(s.GetKubeCrName())
	h.waitCR(t, name, crName, nil)
	h.waitSession(t, id, func(s *ambientv1.Session) error {
		if s.GetKubeNamespace() != name {
			return fmt.Errorf("ns %q", s.GetKubeNamespace())
		}
		return nil
	})
	h.quiesce(t, r)

	link.Cut()
	cut := time.Now()
	h.setCRStatus(t, name, crName, map[string]any{"phase": "Running"})
	// Long enough for the old backoff to grow past the outage: its retries
	// came 5 ms x (2^n - 1) after the first failure, the last within the
	// outage at about 20.5 s, the next at 41 s.
	const outage = 24 * time.Second
	testenv.Eventually(t, outage+wait, func() error {
		if n := len(r.logs.Lines(t, "status write-back failed, retrying", nil)); n == 0 {
			return errors.New("no failed write-back yet")
		}
		if d := time.Since(cut); d < outage {
			return fmt.Errorf("outage for %s of %s", d.Round(time.Second), outage)
		}
		return nil
	})
	link.Restore()
	back := time.Now()
	// The retry's cap, the gRPC client's reconnect (at most
	// apiclient.DefaultReconnectMaxDelay) and a loaded machine's slack.
	const bound = 12 * time.Second
	testenv.Eventually(t, bound, func() error {
		got, err := h.cl.GetSession(ctx, id)
		if err != nil {
			return err
		}
		if got.GetPhase() != "Running" {
			return fmt.Errorf("phase %q %s after the API returned", got.GetPhase(), time.Since(back).Round(100*time.Millisecond))
		}
		return nil
	})
	t.Logf("status written %s after the API returned (outage %s)", time.Since(back).Round(100*time.Millisecond), outage)
	// One warning for the outage, not one per retry: the retries after
	// the first are debug lines, and the write that got through ends them
	// with one line.
	testenv.Eventually(t, wait, func() error {
		if len(r.logs.Lines(t, "status write-back: no failing CR left", nil)) != 1 {
			return errors.New("the end of the write-back failures not logged")
		}
		return nil
	})
	var warnings, retries int
	for _, rec := range r.logs.Lines(t, "status write-back failed, retrying", nil) {
		retries++
		if rec["level"] == "WARN" {
			warnings++
		}
	}
	if warnings != 1 {
		t.Fatalf("%d warnings for the failed write-backs of one outage (%d retries logged), want 1", warnings, retries)
	}
}
