package service_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRunLateDeclarationStopsTheService: a part, server or consumer group
// declared once the parts run, or a bad check name added then, is a
// programming error that used to be recorded where nobody read it (the
// part never ran; Consume's check failed /readyz for ever). Run now stops
// and returns it.
func TestRunLateDeclarationStopsTheService(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	noop := func(context.Context) error { return nil }
	tests := []struct {
		name    string
		declare func(rt *service.Runtime)
		want    string // in Run's error
	}{
		{name: "part", declare: func(rt *service.Runtime) { rt.Go("late", noop) }, want: `part "late"`},
		{name: "server", declare: func(rt *service.Runtime) {
			rt.Serve("late server", &http.Server{ReadHeaderTimeout: time.Second}, nil, health.Graceful{})
		}, want: `part "late server"`},
		{name: "consumer group", declare: func(rt *service.Runtime) {
			rt.Consume(group.Config{Group: "svc-late", Member: "m-0"}, func(context.Context, group.Message) error { return nil })
		}, want: "consumer group svc-late"},
		{name: "duplicate check", declare: func(rt *service.Runtime) { rt.Check(service.CheckNATS, noop) }, want: service.CheckNATS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}}, func(_ context.Context, rt *service.Runtime) error {
				rt.Go("declarer", func(ctx context.Context) error {
					tc.declare(rt)
					<-ctx.Done()
					return nil
				})
				return nil
			})
			select {
			case err := <-r.done:
				r.done <- err // for start's Cleanup
				if !errors.Is(err, service.ErrInvalidOptions) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Run = %v, want %v naming %s", err, service.ErrInvalidOptions, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run still running 10s after a declaration after start, want it stopped with the error")
			}
		})
	}
}

// TestRunCheckAfterStart: a good check added while the service runs is
// served, and does not stop it.
func TestRunCheckAfterStart(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	added := make(chan struct{})
	r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}}, func(_ context.Context, rt *service.Runtime) error {
		rt.Go("declarer", func(ctx context.Context) error {
			rt.Check("late", func(context.Context) error { return errors.New("warming up") })
			close(added)
			<-ctx.Done()
			return nil
		})
		return nil
	})
	base := r.url(t)
	select {
	case <-added:
	case <-time.After(10 * time.Second):
		t.Fatal("the declarer part did not run")
	}
	if code, rep := readyz(t, base); code != http.StatusServiceUnavailable || len(rep.Failing) != 1 || rep.Failing[0] != "late" {
		t.Errorf("/readyz = %d %+v, want 503 failing late", code, rep)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil after a requested stop", err)
	}
}
