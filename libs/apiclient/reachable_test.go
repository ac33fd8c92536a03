package apiclient_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReachableWithoutCalls: Reachable tells of an API cut off from the
// client without any call being made (the consumer group asks it at every
// heartbeat, and a member that lost its partitions makes few calls), and
// passes again once the API is back.
func TestReachableWithoutCalls(t *testing.T) {
	t.Parallel()
	api := testenv.API(t)
	link := testenv.NewLink(t, api.GRPCAddr())
	c := testenv.APIClient(t, api, func(cfg *apiclient.Config) {
		cfg.Addr, cfg.ReconnectMaxDelay = link.Addr(), 200*time.Millisecond
	})
	if err := c.Check(t.Context()); err != nil {
		t.Fatalf("check: %v", err)
	}
	if err := c.Reachable(); err != nil {
		t.Fatalf("reachable after a call: %v", err)
	}
	link.Cut()
	testenv.Eventually(t, 10*time.Second, func() error {
		if err := c.Reachable(); !errors.Is(err, apiclient.ErrUnreachable) {
			return errors.New("the cut is not seen")
		}
		return nil
	})
	link.Restore()
	testenv.Eventually(t, 10*time.Second, func() error { return c.Reachable() })
	if err := c.Check(t.Context()); err != nil {
		t.Fatalf("check once reachable again: %v", err)
	}
}
