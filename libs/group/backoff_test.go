package group_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestBackoffDoesNotStallOtherObjects: MaxInFlight objects failing at once
// (one tenant's broken objects) wait out a long backoff without holding
// the member's other objects back: a healthy object's events are handled
// while both failing ones are still at their first try. The failing ones
// are then retried in place, dead-lettered after MaxDeliver tries, and
// their next events handled after that, as before.
func TestBackoffDoesNotStallOtherObjects(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	p := &stallProbe{bad: []string{"bad-0", "bad-1"}, fails: func(v int) bool { return v == 1 }}
	cfg := testConfig("a")
	cfg.MaxInFlight = len(p.bad)
	cfg.MaxDeliver = 2
	cfg.Backoff = []time.Duration{stallBackoff}
	startMember(t, srv, cfg, p.handle)
	waitMembers(t, js, "a")
	// Both fail once and wait out their backoff, holding MaxInFlight
	// messages.
	const versions = 3
	p.handledBesideBackoffs(t, js, cfg.Stats, versions)

	// The failing objects' next events queue behind them, and run only
	// once their v1 is dead-lettered.
	for _, b := range p.bad {
		publish(t, js, b, 2)
	}
	testenv.Eventually(t, stallBackoff+20*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.DeadLettered != uint64(len(p.bad)) || st.Acked != versions+uint64(len(p.bad)) || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want %d dead-lettered and every other event handled", st, len(p.bad))
		}
		return nil
	})
	for _, b := range p.bad {
		if got := p.attempts(b, 1); got != "[1 2]" {
			t.Errorf("%s v1 tried %s, want [1 2] (retried in place, then dead-lettered)", b, got)
		}
	}
	seen := checkOrder(t, p.calls.snapshot())
	for _, b := range p.bad {
		if got := fmt.Sprint(seen[b]); got != "[2]" {
			t.Errorf("%s handled %s, want [2]", b, got)
		}
		var v1Tries int
		for _, c := range p.calls.snapshot() {
			switch {
			case c.object == b && c.version == 1:
				v1Tries++
			case c.object == b && c.version == 2 && v1Tries != cfg.MaxDeliver:
				t.Errorf("%s v2 handled after %d tries of v1, want after all %d", b, v1Tries, cfg.MaxDeliver)
			}
		}
	}
	if fmt.Sprint(seen["ok"]) != "[1 2 3]" {
		t.Errorf("ok handled %v, want [1 2 3]", seen["ok"])
	}
	letters := dlqMessages(t, js)
	if len(letters) != len(p.bad) {
		t.Fatalf("%d dead letters, want %d", len(letters), len(p.bad))
	}
	for _, d := range letters {
		if got := d.Header.Get(group.HeaderDLQAttempts); got != "2" {
			t.Errorf("dead letter %s attempts %s, want 2", d.Subject, got)
		}
	}
}

// TestHandlerCallsBoundedByMaxInFlight: the member holds more messages
// than MaxInFlight (head-room for lanes in backoff), but never runs more
// than MaxInFlight handler calls at once.
func TestHandlerCallsBoundedByMaxInFlight(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var mu sync.Mutex
	running, most := 0, 0 // guarded by mu
	release := make(chan struct{})
	cfg := testConfig("a")
	cfg.MaxInFlight = 2
	startMember(t, srv, cfg, func(ctx context.Context, _ group.Message) error {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		defer func() {
			mu.Lock()
			running--
			mu.Unlock()
		}()
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	waitMembers(t, js, "a")
	const objects = 6
	for o := range objects {
		publish(t, js, fmt.Sprintf("o-%d", o), 1)
	}
	// The member holds more than MaxInFlight, and the calls it runs wait
	// for release: any beyond MaxInFlight would have started by now.
	testenv.Eventually(t, 15*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := cfg.Stats.Snapshot().InFlight; n <= uint64(cfg.MaxInFlight) || running != cfg.MaxInFlight {
			return fmt.Errorf("holding %d, running %d: want more than %d held and %d running", n, running, cfg.MaxInFlight, cfg.MaxInFlight)
		}
		return nil
	})
	close(release)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != objects {
			return fmt.Errorf("%d of %d handled", n, objects)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if most > cfg.MaxInFlight {
		t.Fatalf("%d handler calls at once, want at most MaxInFlight %d", most, cfg.MaxInFlight)
	}
}

// TestRetryAndDeadLetterLogsCarryProject: the retry and dead-letter log
// lines name the event's project (logkey.ProjectID), so one tenant's
// failures can be told from another's.
func TestRetryAndDeadLetterLogsCarryProject(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var logs testenv.Buffer
	cfg := testConfig("a")
	cfg.MaxDeliver = 2
	nc, mjs := testenv.JetStream(t, srv)
	runMember(t, nc, mjs, cfg, func(context.Context, group.Message) error {
		return errors.New("backend down")
	}, slog.New(slog.NewJSONHandler(&logs, nil)))
	waitMembers(t, js, "a")
	publish(t, js, "s1", 1) // project p1
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().DeadLettered; n != 1 {
			return fmt.Errorf("%d dead-lettered, want 1", n)
		}
		return nil
	})
	want := map[string]bool{"event handling failed, retrying": false, "event dead-lettered": false}
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msg, _ := rec[slog.MessageKey].(string)
		if _, ok := want[msg]; !ok {
			continue
		}
		want[msg] = true
		if got := rec[logkey.ProjectID]; got != "p1" {
			t.Errorf("log %q has %s %v, want p1: %s", msg, logkey.ProjectID, got, line)
		}
	}
	for msg, seen := range want {
		if !seen {
			t.Errorf("no log line %q in:\n%s", msg, logs.String())
		}
	}
}
