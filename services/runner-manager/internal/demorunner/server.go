// Package demorunner is a small AG-UI runner for the dev stack and tests. It
// echoes the last user message word by word as an SSE stream, streams every
// run's events to watchers (GET /), and serves the side endpoints a real
// runner has (/health, /interrupt, /mcp/status, /repos/add, /repos/remove,
// /repos/status). It uses only the standard library.
package demorunner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errInterrupted is the cancel cause of runs ended by POST /interrupt.
var errInterrupted = errors.New("interrupted")

// maxBody bounds a RunAgentInput body.
const maxBody = 4 << 20

// Stats are counters exposed at GET /debug/stats so tests (and the proxy's
// tests) can see what happened to runs.
type Stats struct {
	RunsStarted     int64 `json:"runs_started"`
	RunsFinished    int64 `json:"runs_finished"`
	RunsCancelled   int64 `json:"runs_cancelled"`
	RunsInterrupted int64 `json:"runs_interrupted"`
	ActiveRuns      int64 `json:"active_runs"`
	// InitialPromptBytes and InitialPromptSHA256 describe the prompt the
	// runner was given (INITIAL_PROMPT_FILE or INITIAL_PROMPT).
	InitialPromptBytes  int    `json:"initial_prompt_bytes"`
	InitialPromptSHA256 string `json:"initial_prompt_sha256"`
	// ReposAdded and ReposRemoved count the POST /repos/add and
	// /repos/remove calls answered 200 (runner-manager's spec changes).
	ReposAdded   int64 `json:"repos_added"`
	ReposRemoved int64 `json:"repos_removed"`
	// ReposFailed counts the POST /repos/add and /repos/remove calls
	// answered with an error because ReposFailFile exists.
	ReposFailed int64 `json:"repos_failed"`
}

// ReposFailFile is the file in the workspace that makes POST /repos/add
// and /repos/remove answer 500 while it exists, or the 4xx/5xx status its
// content names ("400"): how tests make a runner fail to apply a spec
// change (the platform's runner answers 500 when a clone fails, 400 for a
// request without a URL).
const ReposFailFile = ".demo-repos-fail"

// Repo is one repository the runner was told to add (POST /repos/add), as
// GET /repos/status lists it.
type Repo struct {
	URL    string `json:"url"`
	Name   string `json:"name"`
	Branch string `json:"currentActiveBranch"`
}

// Server is the demo runner. Safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger

	started, finished, cancelled, interrupted, active atomic.Int64
	reposAdded, reposRemoved, reposFailed             atomic.Int64

	events *fanout // every run's events, for GET /

	mu     sync.Mutex
	runs   map[uint64]context.CancelCauseFunc // guarded by mu
	nextID uint64                             // guarded by mu
	repos  []Repo                             // guarded by mu; added by POST /repos/add, by name
}

// New returns a server for cfg.
func New(cfg Config, log *slog.Logger) *Server {
	return &Server{cfg: cfg, log: log, events: newFanout(), runs: map[uint64]context.CancelCauseFunc{}}
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("GET /{$}", s.handleEvents)
	mux.HandleFunc("POST /{$}", s.handleRun)
	mux.HandleFunc("POST /interrupt", s.handleInterrupt)
	mux.HandleFunc("GET /mcp/status", s.handleMCP)
	mux.HandleFunc("GET /repos/status", s.handleRepos)
	mux.HandleFunc("POST /repos/add", s.handleRepoAdd)
	mux.HandleFunc("POST /repos/remove", s.handleRepoRemove)
	mux.HandleFunc("GET /debug/stats", s.handleStats)
	return mux
}

// Run serves on cfg.Host:cfg.Port until ctx ends, then stops: open SSE
// streams are cancelled (their ctx derives from the server's base ctx) and
// Run returns nil after the handlers finished.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener (closed on return).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	srv.RegisterOnShutdown(cancelBase)
	s.log.Info("runner listening", slog.String("addr", ln.Addr().String()), slog.String("session_id", s.cfg.SessionID))
	errc := make(chan error, 1)           // buffered: read once below
	go func() { errc <- srv.Serve(ln) }() // owned by Serve; ends on Shutdown
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	s.log.Info("runner stopped")
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The client may be gone; nothing else to do with the error.
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "healthy", "session_id": s.cfg.SessionID})
}

func (s *Server) handleMCP(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"session_id": s.cfg.SessionID, "servers": []string{}, "total": 0})
}

func (s *Server) handleRepos(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	repos := append([]Repo{}, s.repos...)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"session_id": s.cfg.SessionID, "workspace": s.cfg.Workspace, "repos": repos})
}

// repoRequest is the body of POST /repos/add ({url, branch, name}) and
// /repos/remove ({name}), as the platform's runner reads them.
type repoRequest struct {
	URL    string `json:"url"`
	Branch string `json:"branch"`
	Name   string `json:"name"`
}

// readRepoRequest decodes the body, answering 400 or, while
// ReposFailFile exists, 500 (then ok is false). Nothing is cloned or
// deleted: the demo only records what it was told.
func (s *Server) readRepoRequest(w http.ResponseWriter, r *http.Request) (req repoRequest, ok bool) {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "invalid body: " + err.Error()})
		return req, false
	}
	if s.cfg.Workspace != "" {
		if b, err := os.ReadFile(filepath.Join(s.cfg.Workspace, ReposFailFile)); err == nil {
			code, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || code < 400 || code > 599 {
				code = http.StatusInternalServerError
			}
			s.reposFailed.Add(1)
			writeJSON(w, code, map[string]string{"detail": "repo change refused: " + ReposFailFile + " exists"})
			return req, false
		}
	}
	return req, true
}

func (s *Server) handleRepoAdd(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readRepoRequest(w, r)
	if !ok {
		return
	}
	if req.URL == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "Repository URL is required"})
		return
	}
	if req.Name == "" {
		req.Name = strings.TrimSuffix(path.Base(req.URL), ".git")
	}
	s.mu.Lock()
	s.repos = slices.DeleteFunc(s.repos, func(o Repo) bool { return o.Name == req.Name })
	s.repos = append(s.repos, Repo{URL: req.URL, Name: req.Name, Branch: req.Branch})
	s.mu.Unlock()
	s.reposAdded.Add(1)
	s.log.Info("repo added", slog.String("url", req.URL), slog.String("branch", req.Branch), slog.String("name", req.Name))
	writeJSON(w, http.StatusOK, map[string]any{"message": "Repository added", "name": req.Name, "newly_cloned": true})
}

func (s *Server) handleRepoRemove(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readRepoRequest(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	s.repos = slices.DeleteFunc(s.repos, func(o Repo) bool { return o.Name == req.Name })
	s.mu.Unlock()
	s.reposRemoved.Add(1)
	s.log.Info("repo removed", slog.String("name", req.Name))
	writeJSON(w, http.StatusOK, map[string]any{"message": "Repository removed"})
}

// StatsSnapshot returns the current counters.
func (s *Server) StatsSnapshot() Stats {
	sum := sha256.Sum256([]byte(s.cfg.Prompt))
	return Stats{
		RunsStarted: s.started.Load(), RunsFinished: s.finished.Load(), RunsCancelled: s.cancelled.Load(),
		RunsInterrupted: s.interrupted.Load(), ActiveRuns: s.active.Load(),
		InitialPromptBytes: len(s.cfg.Prompt), InitialPromptSHA256: hex.EncodeToString(sum[:]),
		ReposAdded: s.reposAdded.Load(), ReposRemoved: s.reposRemoved.Load(), ReposFailed: s.reposFailed.Load(),
	}
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.StatsSnapshot())
}

func (s *Server) handleInterrupt(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	n := len(s.runs)
	for _, cancel := range s.runs {
		cancel(errInterrupted)
	}
	s.mu.Unlock()
	s.log.Info("interrupt requested", slog.Int("runs", n))
	writeJSON(w, http.StatusOK, map[string]any{"status": "interrupted", "runs": n})
}

func (s *Server) track(cancel context.CancelCauseFunc) (untrack func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	id := s.nextID
	s.runs[id] = cancel
	return func() {
		s.mu.Lock()
		delete(s.runs, id)
		s.mu.Unlock()
	}
}

func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	var in RunAgentInput
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid RunAgentInput: " + err.Error()})
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "streaming unsupported"})
		return
	}
	if in.ThreadID == "" {
		in.ThreadID = "thread-" + s.cfg.SessionID
	}
	if in.RunID == "" {
		in.RunID = "run-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	defer s.track(cancel)()
	s.started.Add(1)
	s.active.Add(1)
	defer s.active.Add(-1)
	log := s.log.With(slog.String("run_id", in.RunID), slog.String("thread_id", in.ThreadID))
	// The caller's trace (the proxy passes the client's on): the run's log
	// lines join the trace of the chat that asked for it.
	if tp, ok := parseTraceparent(r.Header.Get("traceparent")); ok {
		log = log.With(slog.String("trace_id", tp.TraceID), slog.String("parent_span_id", tp.ParentID))
	}
	log.Info("run started")

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st := &stream{w: w, fl: fl, tee: s.events}

	err := s.run(ctx, st, in)
	switch {
	case err == nil:
		s.finished.Add(1)
		log.Info("run finished")
	case errors.Is(context.Cause(ctx), errInterrupted):
		s.interrupted.Add(1)
		// The client is still there: end the run the way AG-UI clients accept.
		_ = st.send(Event{Type: EventRunError, Message: "run interrupted", Code: "INTERRUPTED"}) // best effort
		log.Info("run interrupted")
	default:
		s.cancelled.Add(1)
		log.Info("run cancelled", slog.String("err", err.Error()))
	}
}

func (s *Server) run(ctx context.Context, st *stream, in RunAgentInput) error {
	if err := st.send(Event{Type: EventRunStarted, ThreadID: in.ThreadID, RunID: in.RunID}); err != nil {
		return err
	}
	msgID := "msg-" + in.RunID
	if err := st.send(Event{Type: EventTextMessageStart, MessageID: msgID, Role: "assistant"}); err != nil {
		return err
	}
	words := strings.Fields(lastUserText(in.Messages))
	if len(words) == 0 {
		words = []string{"(no", "user", "message)"}
	}
	var timer *time.Timer
	first := true
	for range s.cfg.Repeat {
		for _, word := range words {
			if s.cfg.WordDelay > 0 {
				if timer == nil {
					timer = time.NewTimer(s.cfg.WordDelay)
					defer timer.Stop()
				} else {
					timer.Reset(s.cfg.WordDelay)
				}
				select {
				case <-ctx.Done():
					return context.Cause(ctx)
				case <-timer.C:
				}
			} else if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			delta := word
			if !first {
				delta = " " + word
			}
			first = false
			if err := st.send(Event{Type: EventTextMessageContent, MessageID: msgID, Delta: delta}); err != nil {
				return err
			}
		}
	}
	if err := st.send(Event{Type: EventTextMessageEnd, MessageID: msgID}); err != nil {
		return err
	}
	return st.send(Event{Type: EventRunFinished, ThreadID: in.ThreadID, RunID: in.RunID})
}

// stream writes SSE frames, flushing each, and hands each to tee (the
// events watchers).
type stream struct {
	w   http.ResponseWriter
	fl  http.Flusher
	tee *fanout
}

func (s *stream) send(ev Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode %s: %w", ev.Type, err)
	}
	buf := make([]byte, 0, len(b)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	buf = append(buf, "\n\n"...)
	// Watchers see the event even if the run's caller is gone.
	s.tee.publish(buf)
	if _, err := s.w.Write(buf); err != nil {
		return fmt.Errorf("write %s: %w", ev.Type, err)
	}
	s.fl.Flush()
	return nil
}
