package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/route"
)

// ErrProxyStopped is the cancel cause of a detached run still draining when
// the proxy stops (Run returned).
var ErrProxyStopped = errors.New("agui-proxy stopped")

// errDetachedTimeout is the cancel cause of a detached run that outlived
// Config.DetachedRunTimeout.
var errDetachedTimeout = errors.New("detached run timed out")

// errClientLeft is the cancel cause of a detached run whose client left
// before the runner accepted it: nobody learns its ids, so a caller that
// retries (the platform's runner does) must not find a second run going.
var errClientLeft = errors.New("client left before the runner answered")

// detachedRuns tracks the runs the backend-compatible run path drains in
// the background, so that the proxy's Run ends them (ErrProxyStopped) and
// waits for their goroutines before it returns. Safe for concurrent use.
type detachedRuns struct {
	mu      sync.Mutex
	stopped bool                               // guarded by mu: no run starts once set
	next    uint64                             // guarded by mu
	cancels map[uint64]context.CancelCauseFunc // guarded by mu
	wg      sync.WaitGroup
}

func newDetachedRuns() *detachedRuns {
	return &detachedRuns{cancels: map[uint64]context.CancelCauseFunc{}}
}

// start registers a run and returns its context, derived from parent
// without its cancellation (the request's trace and attributes stay; the
// request's end does not end the run), and done, which the run's owner
// calls exactly once when it is over. It returns false once stop ran.
func (d *detachedRuns) start(parent context.Context) (ctx context.Context, cancel context.CancelCauseFunc, done func(), ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return nil, nil, nil, false
	}
	ctx, cancel = context.WithCancelCause(context.WithoutCancel(parent))
	id := d.next
	d.next++
	d.cancels[id] = cancel
	d.wg.Add(1)
	return ctx, cancel, func() {
		cancel(nil)
		d.mu.Lock()
		delete(d.cancels, id)
		d.mu.Unlock()
		d.wg.Done()
	}, true
}

// stop cancels every run with ErrProxyStopped, refuses new ones and waits
// until every run's done was called.
func (d *detachedRuns) stop() {
	d.mu.Lock()
	d.stopped = true
	for _, c := range d.cancels {
		c(ErrProxyStopped)
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// runAccepted is the answer of the backend-compatible run path: the
// platform backend's (HandleAGUIRunProxy: gin.H{"runId", "threadId"}),
// which the platform's runner reads with resp.json().
type runAccepted struct {
	RunID    string `json:"runId"`
	ThreadID string `json:"threadId"`
}

// detached serves the backend-compatible run path
// (/projects/{project}/agentic-sessions/{id}/agui/run). The platform's
// runner POSTs its INITIAL_PROMPT there and expects 200 with the run's ids
// as JSON, not the run's stream: its backend answers so and consumes the
// stream itself, and browsers see the events through their own stream of
// the session. So the proxy starts the run on the runner's POST / as the
// run route does, answers 200 {"runId","threadId"} once the runner has
// answered 200, and reads the run's stream to its end in the background,
// bounded by DetachedRunTimeout, the runner's endpoint leaving the table
// and the proxy's stop. Any other runner answer passes through as on the
// run route, and the proxy's own errors are JSON; either way no run goes
// on in the background.
func (p *Proxy) detached(w *recorder, r *http.Request, t route.Target, ep registry.Endpoint, body []byte, log *slog.Logger) {
	ids, body, err := runIDs(body, t.SessionID)
	if err != nil {
		// The platform's backend answers a body it cannot bind so.
		WriteError(w, http.StatusBadRequest, "invalid input: "+err.Error())
		return
	}
	ctx, cancel, done, ok := p.detachedRuns.start(r.Context())
	if !ok {
		WriteError(w, http.StatusServiceUnavailable, "agui-proxy is shutting down")
		return
	}
	handedOver := false
	defer func() {
		if !handedOver {
			done()
		}
	}()
	ctx, stopTimeout := context.WithTimeoutCause(ctx, p.cfg.DetachedRunTimeout, errDetachedTimeout)
	untrack := p.streams.add(t.SessionID, ep, cancel)
	// Until the runner has answered, the run is the request's: a client
	// that leaves gets no ids, and its retry must not find this run going.
	stopWatch := context.AfterFunc(r.Context(), func() { cancel(errClientLeft) })
	resp, endCall, err := p.call(ctx, r, t, ep, body) //nolint:bodyclose // closed below, or by the drain's goroutine
	watching := stopWatch()
	if err != nil {
		untrack()
		stopTimeout()
		switch cause := context.Cause(ctx); {
		case r.Context().Err() != nil:
			p.upstreamFailed(w, r, err, ctx, log) // client gone, or the server's shutdown grace over
		case errors.Is(cause, ErrProxyStopped):
			WriteError(w, http.StatusServiceUnavailable, "agui-proxy is shutting down")
		case errors.Is(cause, errDetachedTimeout):
			log.Warn("runner timed out", slog.Any(logkey.Err, err))
			WriteError(w, http.StatusGatewayTimeout, "runner timed out")
		default:
			p.upstreamFailed(w, r, err, ctx, log)
		}
		return
	}
	if resp.StatusCode != http.StatusOK || !watching {
		// Not accepted (its answer is the client's, as on the run route),
		// or accepted for a client that left: the run ends with this
		// request, its body closed unread.
		untrack()
		if watching {
			// A short answer, as on the side routes: UpstreamTimeout,
			// not the run's bound, limits reading it.
			bound := time.AfterFunc(p.cfg.UpstreamTimeout, func() { cancel(context.DeadlineExceeded) })
			p.relayAnswer(w, r, resp, log)
			bound.Stop()
		}
		closeBody(resp.Body)
		endCall()
		stopTimeout()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// A client gone by now still started the run, as with the backend.
	_ = json.NewEncoder(w).Encode(ids)
	log = log.With(slog.String("run_id", ids.RunID), slog.String("thread_id", ids.ThreadID))
	log.Info("detached run started")
	ended := p.metrics.streamStarted(ctx, t.Endpoint.Name)
	handedOver = true
	go func() { // ends with the runner's stream; done lets detachedRuns.stop wait for it
		defer done()
		defer stopTimeout()
		defer untrack()
		defer endCall()
		defer closeBody(resp.Body)
		n, err := io.Copy(io.Discard, resp.Body)
		ended(n)
		cause := context.Cause(ctx)
		switch {
		case err == nil:
			log.Info("detached run drained", slog.Int64("bytes", n))
		case cause != nil:
			log.Info("detached run ended by the proxy", slog.Int64("bytes", n), slog.String(logkey.Reason, cause.Error()))
		default:
			log.Warn("detached run: runner connection failed", slog.Int64("bytes", n), slog.Any(logkey.Err, err))
		}
	}()
}

// relayAnswer passes a runner's answer to the client as it is, as forward
// does: headers, status and body, and a body the runner cut fails the
// client's response too.
func (p *Proxy) relayAnswer(w *recorder, r *http.Request, resp *http.Response, log *slog.Logger) {
	copyResponseHeader(w.Header(), resp.Header, false)
	w.WriteHeader(resp.StatusCode)
	buf := p.bufs.get()
	defer p.bufs.put(buf)
	res := copyChunks(resp.Body, buf[:], func(b []byte) error {
		_, err := w.Write(b)
		return err
	})
	if res.UpstreamErr == nil || res.ClientErr != nil {
		return // complete, or the client left
	}
	// An answer cut by the runner, by a timeout or by a shutdown must not
	// reach the client as a complete one (for a client that left meanwhile
	// the abort closes a dead connection).
	if r.Context().Err() == nil {
		log.Warn("runner response cut", slog.Any(logkey.Err, res.UpstreamErr))
	} else {
		log.Debug("response cut: request ended", slog.Any(logkey.Err, res.UpstreamErr))
	}
	if err := abortResponse(http.NewResponseController(w)); err != nil {
		log.Debug("abort response", slog.Any(logkey.Err, err))
	}
}

// runIDs reads the run's threadId and runId from a RunAgentInput body and
// fills in those it lacks (missing, null or empty) as the platform's
// backend does: the thread is the session's, the run a new UUID. The body
// goes on unchanged when it has both, re-encoded with them otherwise, so
// that the runner runs under the ids the client is told. A body that is
// not a JSON object, or whose ids are not strings, is an error.
func runIDs(body []byte, sessionID string) (runAccepted, []byte, error) {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(body, &in); err != nil {
		return runAccepted{}, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if in == nil {
		return runAccepted{}, nil, errors.New("not a JSON object")
	}
	var ids runAccepted
	changed := false
	for _, f := range []struct {
		name string
		dst  *string
		def  func() (string, error)
	}{
		{name: "threadId", dst: &ids.ThreadID, def: func() (string, error) { return sessionID, nil }},
		{name: "runId", dst: &ids.RunID, def: newUUID},
	} {
		if raw, ok := in[f.name]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return runAccepted{}, nil, fmt.Errorf("%s: want a string: %w", f.name, err)
			}
		}
		if *f.dst != "" {
			continue
		}
		v, err := f.def()
		if err != nil {
			return runAccepted{}, nil, err
		}
		*f.dst = v
		raw, err := json.Marshal(v)
		if err != nil {
			return runAccepted{}, nil, fmt.Errorf("encode %s: %w", f.name, err)
		}
		in[f.name] = raw
		changed = true
	}
	if !changed {
		return ids, body, nil
	}
	out, err := json.Marshal(in)
	if err != nil {
		return runAccepted{}, nil, fmt.Errorf("encode input: %w", err)
	}
	return ids, out, nil
}

// newUUID returns a random (version 4) UUID, as the platform's backend
// gives a run without an id.
func newUUID() (string, error) {
	id, err := uuid.NewRandom()
	if err != nil {
		return "", fmt.Errorf("run id: %w", err)
	}
	return id.String(), nil
}

// detachedRunTimeoutDefault bounds a detached run when Config does not:
// a turn of the platform's runner (an agent working through a task) can
// take an hour or more, and its backend set no bound at all.
const detachedRunTimeoutDefault = 4 * time.Hour
