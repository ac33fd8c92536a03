package demorunner

import (
	"log/slog"
	"net/http"
	"sync"
)

// The events stream (GET /) carries every event of every run, as it is
// sent to the run's caller, to watchers of the session who did not start
// the run: the original runner's events endpoint, which agui-proxy serves
// as /sessions/{id}/agui/events. A watcher gets what happens after it
// subscribed. One that falls watcherBuffer frames behind is ended rather
// than waited for, so a slow browser never slows a run; it reconnects.
const watcherBuffer = 256

// watcher is one open events stream.
type watcher struct {
	frames chan []byte   // SSE frames, in the order the runs sent them
	gone   chan struct{} // closed when the watcher fell behind and was dropped
}

// fanout copies run events to the watchers. Safe for concurrent use.
type fanout struct {
	mu       sync.Mutex
	watchers map[*watcher]struct{} // guarded by mu
}

func newFanout() *fanout { return &fanout{watchers: map[*watcher]struct{}{}} }

func (f *fanout) subscribe() *watcher {
	w := &watcher{frames: make(chan []byte, watcherBuffer), gone: make(chan struct{})}
	f.mu.Lock()
	f.watchers[w] = struct{}{}
	f.mu.Unlock()
	return w
}

func (f *fanout) unsubscribe(w *watcher) {
	f.mu.Lock()
	delete(f.watchers, w)
	f.mu.Unlock()
}

// publish hands frame to every watcher without blocking. frame must not
// change afterwards: the watchers write it as is.
func (f *fanout) publish(frame []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for w := range f.watchers {
		select {
		case w.frames <- frame:
		default:
			delete(f.watchers, w)
			close(w.gone)
		}
	}
}

func (f *fanout) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers)
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "streaming unsupported"})
		return
	}
	sub := s.events.subscribe()
	defer s.events.unsubscribe(sub)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The headers go at once: a watcher that has them is subscribed.
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.gone:
			s.log.Info("events watcher fell behind, ended", slog.Int("buffer", watcherBuffer))
			return
		case frame := <-sub.frames:
			if _, err := w.Write(frame); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
