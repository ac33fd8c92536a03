package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// hookAPI is the API with a hook in front of each UpdateSessionStatus: a
// hook returning an error fails the call without it reaching the API.
type hookAPI struct {
	sessionAPI
	mu   sync.Mutex
	hook func(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) error // guarded by mu
}

func (a *hookAPI) setHook(h func(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) error) {
	a.mu.Lock()
	a.hook = h
	a.mu.Unlock()
}

func (a *hookAPI) UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	a.mu.Lock()
	h := a.hook
	a.mu.Unlock()
	if h != nil {
		if err := h(ctx, req); err != nil {
			return nil, err
		}
	}
	return a.sessionAPI.UpdateSessionStatus(ctx, req)
}

// The runner exits and its final phase's first try fails; before the
// retry, rm-b takes the session over and writes its new run's Running.
// The retry must not write the old end over it: the owner is read again
// before each retry. Before, the owner was read once, and the retry
// (up to finalWriteTimeout later) wrote Failed over rm-b's Running.
func TestFinalPhaseRetryAfterTakeover(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	api := &hookAPI{sessionAPI: e.client}
	// No record watch: only the owner reads in the write path can tell.
	rp := e.replica(replicaOpts{member: "rm-a", api: api, noRun: true})
	id := e.create("retried").GetMetadata().GetId()
	rec := e.startRunning(rp, e.get(id))
	var (
		once    sync.Once
		hookErr error
	)
	api.setHook(func(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) error {
		if req.GetPhase() != string(session.PhaseFailed) {
			return nil
		}
		taken := false
		once.Do(func() {
			taken = true
			cur, err := registry.Get(ctx, e.runners, id)
			if err != nil {
				hookErr = err
				return
			}
			ep := cur.Endpoint
			ep.Owner, ep.PID, ep.PIDStart, ep.Port, ep.State, ep.Final = "rm-b", 1, 0, 1, registry.StateRunning, nil
			if _, err := registry.Register(ctx, e.runners, ep, cur.Revision); err != nil {
				hookErr = err
				return
			}
			if _, err := e.client.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: session.PhaseRunning.Ptr()}); err != nil {
				hookErr = err
			}
		})
		if taken {
			return grpcstatus.Error(codes.Unavailable, "first try fails")
		}
		return nil
	})
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if rp.rec.sup.Get(id) != nil {
			return errors.New("the runner is not reported yet")
		}
		return nil
	})
	if hookErr != nil {
		t.Fatalf("takeover: %v", hookErr)
	}
	if got := e.get(id); session.PhaseOf(got) != session.PhaseRunning {
		t.Errorf("phase %s (conditions %s), want rm-b's Running", got.GetPhase(), got.GetConditions())
	}
	if got, err := registry.Get(t.Context(), e.runners, id); err != nil || got.Owner != "rm-b" {
		t.Errorf("record %+v (%v), want rm-b's", got.Endpoint, err)
	}
}

// The API accepts calls and never answers. The Creating write of a new
// runner holds the session's lock while it waits; it is bounded, so the
// lock is free again within seconds and the sweep retries the write.
// Before, the write had no deadline: the API client's 30 s default per
// call, four calls, with the session locked (and the sweep, the resync
// and the queue waiting on it) all that time.
func TestLiveWriteToHangingAPIBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	api := &hookAPI{sessionAPI: e.client}
	hung := make(chan struct{})
	var hangOnce sync.Once
	api.setHook(func(ctx context.Context, _ *ambientv1.UpdateSessionStatusRequest) error {
		hangOnce.Do(func() { close(hung) })
		// As a hung API through the client: the call ends with its ctx,
		// or after the client's default timeout.
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		<-cctx.Done()
		return grpcstatus.Error(codes.DeadlineExceeded, cctx.Err().Error())
	})
	rp := e.replica(replicaOpts{member: "rm-a", api: api, noRun: true})
	id := e.create("hung").GetMetadata().GetId()
	e.handle(rp, added, e.get(id))
	select {
	case <-hung: // the Creating write is waiting, under the session lock
	case <-time.After(10 * time.Second):
		t.Fatal("no status write reached the API")
	}
	start := time.Now()
	testenv.Eventually(t, 10*time.Second, func() error {
		unlock, ok := rp.rec.sup.TryLock(id)
		if !ok {
			return fmt.Errorf("session still locked after %v", time.Since(start).Round(time.Millisecond))
		}
		unlock()
		return nil
	})
	api.setHook(nil) // the sweep's retries may go through now
}
