package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// counts is ADDED/MODIFIED/DELETED per resource.
type counts map[string]map[string]int

// streamCounts reads AMBIENT_EVENTS from the start and counts what is in it.
func (s *stack) streamCounts() counts {
	s.t.Helper()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort))
	if err != nil {
		s.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	total := int(info.NumPending)
	got := counts{}
	for i := 0; i < total; i++ {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			s.t.Fatal(err)
		}
		_, ev, err := events.Decode(ctx, msg.Headers(), msg.Data())
		if err != nil {
			s.t.Fatal(err)
		}
		r := events.ResourceToken(ev.GetResource())
		if got[r] == nil {
			got[r] = map[string]int{}
		}
		got[r][events.TypeName(ev.GetType())]++
	}
	return got
}

// tallyCounts reads event-tally's /tally document.
func (s *stack) tallyCounts() (counts, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/tally", s.base+4))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() //nolint:errcheck // read-only
	var doc struct {
		Resources map[string]struct {
			Added    int `json:"added"`
			Modified int `json:"modified"`
			Deleted  int `json:"deleted"`
		} `json:"resources"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, err
	}
	got := counts{}
	for r, c := range doc.Resources {
		for k, v := range map[string]int{"ADDED": c.Added, "MODIFIED": c.Modified, "DELETED": c.Deleted} {
			if v == 0 {
				continue // the stream side has no entry for what never happened
			}
			if got[r] == nil {
				got[r] = map[string]int{}
			}
			got[r][k] = v
		}
	}
	return got, nil
}

func (c counts) String() string {
	b, _ := json.Marshal(c) //nolint:errcheck // map of ints
	return string(b)
}

// idOf reads the id of a REST object: flat, like the real server's.
func idOf(obj map[string]any) string {
	id, _ := obj["id"].(string) //nolint:errcheck // checked by the caller's use
	return id
}

// TestFullFlow is acceptance 1 and 2 of the dev-stack issue: the whole flow
// through every service, then kill -9 of the informer and runner-manager.
func TestFullFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := startStack(t)

	s.rest(http.MethodPost, "/projects", map[string]any{"name": "e2e"})
	a := idOf(s.rest(http.MethodPost, "/sessions", map[string]any{"name": "alpha", "project_id": "e2e", "prompt": "hi"}))

	got := s.waitPhase(a, 60*time.Second, "Running")
	if got["start_time"] == nil {
		t.Fatalf("Running without start_time: %v", got)
	}
	if n := len(runnerPIDs(a)); n != 1 {
		t.Fatalf("session %s has %d runner processes, want 1", a, n)
	}

	// Chat through the real proxy with the real CLI: the demo runner echoes.
	testenv.Eventually(t, 10*time.Second, func() error {
		out, err := s.ambientctl("chat", a, "hello from the e2e test")
		if err != nil {
			return fmt.Errorf("chat: %v: %s", err, out)
		}
		if !strings.Contains(out, "hello from the e2e test") {
			return fmt.Errorf("chat output %q", out)
		}
		return nil
	})

	// A follower sees the runs others start: ambientctl follow reads
	// /agui/events through the proxy, which is the runner's GET /.
	requireFollowerSees(t, s, a)

	// A running session cannot be started again (the API's guard, through
	// the CLI), and stops through the API's REST stop.
	if out, err := s.ambientctl("sessions", "start", a); err == nil || !strings.Contains(out, `cannot start session in phase "Running"`) {
		t.Fatalf("start of a Running session: %v: %s", err, out)
	}
	if out, err := s.ambientctl("sessions", "stop", a); err != nil {
		t.Fatalf("stop: %v: %s", err, out)
	}
	got = s.waitPhase(a, 30*time.Second, "Stopped")
	if got["completion_time"] == nil {
		t.Fatalf("Stopped without completion_time: %v", got)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := len(runnerPIDs(a)); n != 0 {
			return fmt.Errorf("%d runner processes left after stop", n)
		}
		return nil
	})
	s.rest(http.MethodDelete, "/sessions/"+a, nil)

	// A second session is deleted while Running: its runner is killed and
	// the proxy stops routing to it.
	b := idOf(s.rest(http.MethodPost, "/sessions", map[string]any{"name": "beta", "project_id": "e2e"}))
	s.waitPhase(b, 60*time.Second, "Running")
	s.rest(http.MethodDelete, "/sessions/"+b, nil)
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := len(runnerPIDs(b)); n != 0 {
			return fmt.Errorf("%d runner processes left after delete", n)
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/sessions/%s/health", s.proxyPort, b))
		if err != nil {
			return err
		}
		_ = resp.Body.Close() //nolint:errcheck // status only
		if resp.StatusCode != http.StatusNotFound {
			return fmt.Errorf("proxy answers %s for a deleted session", resp.Status)
		}
		return nil
	})

	// event-tally saw exactly what the informer published, and that is what
	// was done: one project, two sessions added and deleted, and phase
	// changes in between.
	testenv.Eventually(t, 20*time.Second, func() error {
		want := s.streamCounts()
		got, err := s.tallyCounts()
		if err != nil {
			return err
		}
		if want.String() != got.String() {
			return fmt.Errorf("tally %s, stream %s", got, want)
		}
		if want["projects"]["ADDED"] != 1 || want["sessions"]["ADDED"] != 2 || want["sessions"]["DELETED"] != 2 || want["sessions"]["MODIFIED"] < 4 {
			return fmt.Errorf("stream holds %s, want 1 project added, 2 sessions added and deleted, >= 4 session changes", want)
		}
		return nil
	})

	t.Run("kill -9 informer and runner-manager", func(t *testing.T) {
		c := idOf(s.rest(http.MethodPost, "/sessions", map[string]any{"name": "gamma", "project_id": "e2e"}))
		s.waitPhase(c, 60*time.Second, "Running")
		before := s.streamCounts()

		informerPID, managerPID := s.pid("informer"), s.pid("runner-manager")
		for _, pid := range []int{informerPID, managerPID} {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		// Changes while both are down (devstack restarts them within ~1 s,
		// so these race the restart either way).
		d := idOf(s.rest(http.MethodPost, "/sessions", map[string]any{"name": "delta", "project_id": "e2e"}))
		s.rest(http.MethodPatch, "/projects/e2e", map[string]any{"description": "changed while the informer was down"})

		testenv.Eventually(t, 30*time.Second, func() error {
			for name, old := range map[string]int{"informer": informerPID, "runner-manager": managerPID} {
				if pid, err := s.pidOf(name); err != nil || pid == old {
					return fmt.Errorf("%s not restarted yet (%v)", name, err)
				}
			}
			return nil
		})
		s.waitPhase(d, 60*time.Second, "Running")
		// gamma was running when its manager died: afterwards it runs exactly
		// once (kept or restarted) or is Failed with nothing behind it.
		testenv.Eventually(t, 30*time.Second, func() error {
			phase := s.session(c)["phase"]
			n := len(runnerPIDs(c))
			switch {
			case phase == "Running" && n == 1, phase == "Failed" && n == 0:
				return nil
			default:
				return fmt.Errorf("gamma: phase %v with %d runner processes", phase, n)
			}
		})
		if n := len(runnerPIDs(d)); n != 1 {
			t.Fatalf("delta has %d runner processes, want 1", n)
		}
		testenv.Eventually(t, 20*time.Second, func() error {
			after := s.streamCounts()
			if got := after["sessions"]["ADDED"] - before["sessions"]["ADDED"]; got != 1 {
				return fmt.Errorf("%d sessions ADDED after the restart, want exactly 1 (delta)", got)
			}
			if got := after["projects"]["MODIFIED"] - before["projects"]["MODIFIED"]; got != 1 {
				return fmt.Errorf("%d project changes published, want exactly 1", got)
			}
			tally, err := s.tallyCounts()
			if err != nil {
				return err
			}
			if tally.String() != after.String() {
				return fmt.Errorf("tally %s, stream %s", tally, after)
			}
			return nil
		})
	})

	// Ctrl-C stops everything, runners included.
	runners := []string{}
	for _, obj := range listItems(s) {
		runners = append(runners, idOf(obj))
	}
	s.stop()
	for _, id := range runners {
		if n := len(runnerPIDs(id)); n != 0 {
			t.Errorf("session %s left %d orphan runner processes after Ctrl-C", id, n)
		}
	}
}

func listItems(s *stack) []map[string]any {
	s.t.Helper()
	out := s.rest(http.MethodGet, "/sessions?size=500", nil)
	raw, _ := out["items"].([]any) //nolint:errcheck // empty when absent
	items := make([]map[string]any, 0, len(raw))
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok {
			items = append(items, m)
		}
	}
	return items
}

// requireFollowerSees runs `ambientctl follow ID --runs 1` and chats until
// the follower has printed a run: a chat sent before the follower's stream
// reached the runner is not one it sees, so the chat is repeated.
func requireFollowerSees(t *testing.T, s *stack, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer // written by the command until Wait returns
	follow := s.ambientctlCmd(ctx, nil, "follow", id, "--runs", "1")
	follow.Stdout, follow.Stderr = &out, &out
	if err := follow.Start(); err != nil {
		t.Fatalf("start follow: %v", err)
	}
	done := make(chan error, 1)           // Wait's result, read once below
	go func() { done <- follow.Wait() }() // ends when follow exits or ctx kills it
	testenv.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("follow: %v: %s", err, out.String())
			}
			return nil
		default:
		}
		if chat, err := s.ambientctl("chat", id, "seen by a follower"); err != nil {
			return fmt.Errorf("chat: %v: %s", err, chat)
		}
		return errors.New("the follower has printed no run yet")
	})
	if !strings.Contains(out.String(), "seen by a follower") {
		t.Fatalf("follow printed %q, want the chat's echo", out.String())
	}
}
