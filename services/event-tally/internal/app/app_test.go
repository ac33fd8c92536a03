package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/tally"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/event-tally/internal/app"
	"github.com/ambient-code/control-plane/services/event-tally/internal/config"
)

func publish(t *testing.T, js jetstream.JetStream, prefix string, typ eventsv1.EventType, id string, us int64) {
	t.Helper()
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(time.UnixMicro(us))}}
	msg, err := events.NewMsg(t.Context(), prefix, events.NewEvent(typ, s, nil, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
}

func TestTallyCountsStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		stream string
		prefix string
	}{
		{name: "live", stream: events.StreamName, prefix: events.SubjectPrefix},
		{name: "shadow", stream: events.ShadowStreamName, prefix: events.ShadowSubjectPrefix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testenv.NATS(t)
			_, js := testenv.JetStream(t, srv)
			if _, err := bus.EnsureStream(t.Context(), js, bus.EventsStream(tc.stream, tc.prefix, 1, time.Hour)); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(envconfig.Map(map[string]string{
				bus.EnvNATSURL: srv.ClientURL(), group.EnvMemberID: "tally-0", service.EnvMetricsAddr: "127.0.0.1:0",
				group.EnvStream: tc.stream, group.EnvSubjectPrefix: tc.prefix,
			}))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var addr string // guarded by mu
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1) // Run's result
			// Owned by the test: cancelled and awaited in Cleanup.
			go func() {
				done <- app.Run(ctx, cfg, slog.New(slog.DiscardHandler), app.WithListening(func(a string) {
					mu.Lock()
					addr = a
					mu.Unlock()
				}))
			}()
			t.Cleanup(func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("Run: %v", err)
					}
				case <-time.After(20 * time.Second):
					t.Error("Run did not stop")
				}
			})
			for i := range 5 {
				publish(t, js, tc.prefix, eventsv1.EventType_EVENT_TYPE_ADDED, fmt.Sprintf("s%d", i), 1)
			}
			publish(t, js, tc.prefix, eventsv1.EventType_EVENT_TYPE_MODIFIED, "s0", 2)
			publish(t, js, tc.prefix, eventsv1.EventType_EVENT_TYPE_DELETED, "s1", 1)
			get := func(path string) (int, []byte, error) {
				mu.Lock()
				a := addr
				mu.Unlock()
				if a == "" {
					return 0, nil, errors.New("not listening")
				}
				resp, err := http.Get("http://" + a + path)
				if err != nil {
					return 0, nil, err
				}
				defer resp.Body.Close()
				var b json.RawMessage
				err = json.NewDecoder(resp.Body).Decode(&b)
				return resp.StatusCode, b, err
			}
			testenv.Eventually(t, 30*time.Second, func() error {
				code, body, err := get(app.PathTally)
				if err != nil {
					return err
				}
				var s tally.Snapshot
				if err := json.Unmarshal(body, &s); err != nil || code != http.StatusOK {
					return fmt.Errorf("tally %d %s: %v", code, body, err)
				}
				got := s.Resources["sessions"]
				if got.Added != 5 || got.Modified != 1 || got.Deleted != 1 || got.IDs != 5 || s.Events != 7 {
					return fmt.Errorf("tally = %+v", s)
				}
				return nil
			})
			code, body, err := get("/readyz")
			if err != nil || code != http.StatusOK {
				t.Fatalf("readyz %d %s: %v", code, body, err)
			}
		})
	}
}
