package demorunner

import (
	"bufio"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEventsStreamSeesOthersRuns: a watcher on GET / (the proxy's
// /agui/events) gets every event of a run someone else started, in order,
// and nothing from before it subscribed.
func TestEventsStreamSeesOthersRuns(t *testing.T) {
	t.Parallel()
	_, url := startServer(t, Config{SessionID: "s1", WordDelay: time.Millisecond, Repeat: 1})
	before := postRun(t.Context(), t, url, "before the watcher")
	readEvents(t, before.Body)
	before.Body.Close()

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	watch, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Body.Close()
	if watch.StatusCode != http.StatusOK || watch.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET / = %d %q, want 200 text/event-stream", watch.StatusCode, watch.Header.Get("Content-Type"))
	}

	run := postRun(t.Context(), t, url, "hello brave world")
	want := readEvents(t, run.Body)
	run.Body.Close()
	if len(want) == 0 || want[len(want)-1].Type != EventRunFinished {
		t.Fatalf("run sent %v", want)
	}
	var got []Event
	sc := bufio.NewScanner(watch.Body)
	for sc.Scan() && len(got) < len(want) {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("frame %q: %v", line, err)
		}
		got = append(got, ev)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("watcher got %v\nthe run sent %v", got, want)
	}
}

// TestSlowWatcherIsDropped: a watcher that falls a buffer behind is ended,
// so a run never waits for it; the others keep everything.
func TestSlowWatcherIsDropped(t *testing.T) {
	t.Parallel()
	f := newFanout()
	slow, fast := f.subscribe(), f.subscribe()
	var kept int
	for range watcherBuffer + 1 {
		f.publish([]byte("data: {}\n\n"))
		select {
		case <-fast.frames:
			kept++
		default:
			t.Fatal("a frame did not reach the watcher that keeps up")
		}
	}
	select {
	case <-slow.gone:
	default:
		t.Fatalf("the watcher %d frames behind was not ended", watcherBuffer+1)
	}
	if kept != watcherBuffer+1 || f.count() != 1 {
		t.Fatalf("kept %d frames, %d watchers left; want %d and 1", kept, f.count(), watcherBuffer+1)
	}
}
