package memapi_test

import (
	"context"
	"fmt"
	"testing"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestConcurrentUse runs writers, listers and a watcher at once (run with
// -race) and checks the final state.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)

	const writers, perWriter = 4, 50
	var wg errgroup.Group
	received := make(chan int, 1) // the watcher's count, sent once
	go func() {
		n := 0
		for {
			if _, err := w.Recv(); err != nil {
				received <- n
				return
			}
			n++
		}
	}()
	for g := range writers {
		wg.Go(func() error {
			for i := range perWriter {
				s, err := c.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("w%d-%d", g, i)})
				if err != nil {
					return err
				}
				id := s.GetMetadata().GetId()
				if _, err := c.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id, Prompt: proto.String("x")}); err != nil {
					return err
				}
				if _, err := c.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Running")}); err != nil {
					return err
				}
				if i%2 == 0 {
					if err := c.DeleteSession(t.Context(), id); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	for range 2 {
		wg.Go(func() error {
			for range 20 {
				if _, err := c.ListSessions(t.Context()); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := wg.Wait(); err != nil {
		t.Fatal(err)
	}
	srv.EndWatches()
	n := <-received
	t.Logf("watcher received %d events before its end", n)
	got, err := c.ListSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := writers * perWriter / 2; len(got) != want {
		t.Errorf("%d sessions left, want %d", len(got), want)
	}
	for _, s := range got {
		if s.GetPhase() != "Running" || s.GetPrompt() != "x" {
			t.Errorf("session %s: phase %q prompt %q", s.GetName(), s.GetPhase(), s.GetPrompt())
		}
	}
}
