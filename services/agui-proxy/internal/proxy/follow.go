package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/route"
)

// The delay before re-opening a tap that ended without finishing a turn
// (no event, or a turn cut short): it doubles from tapBackoffMin up to
// tapBackoffMax while taps keep ending so, so that a runner that ends its
// tap at once cannot make the proxy dial it in a loop. A tap that ended
// after its turn's RUN_FINISHED or RUN_ERROR is re-opened at once, and
// resets the delay.
const (
	tapBackoffMin = 100 * time.Millisecond
	tapBackoffMax = 2 * time.Second
)

// threadParam is the events route's optional query parameter naming the
// thread to follow on a runner without GET / (default: the session id).
const threadParam = "thread_id"

// followTap serves a GET of the events route whose runner answered 405
// (refused): the platform's runner serves no GET /, and its live view is
// its tap of a thread, GET /events/{thread_id}, which ends with each turn.
// When the runner answers the tap of the session's thread (or of the
// thread_id query parameter) with 200 in an AG-UI encoding, the client's
// one stream follows that tap, re-opened after every turn, and followTap
// returns true. Otherwise (no tap either, a failed call) it returns false
// with refused untouched, to be relayed as the events route relays every
// answer: a runner with neither is answered as before. An invalid
// thread_id is answered 400, and followTap returns true.
func (p *Proxy) followTap(ctx context.Context, cancel context.CancelCauseFunc, w *recorder, rc *http.ResponseController, r *http.Request,
	t route.Target, ep registry.Endpoint, refused *http.Response, endRefused func(), log *slog.Logger,
) bool {
	thread := t.SessionID
	if q := r.URL.Query(); q.Has(threadParam) {
		thread = q.Get(threadParam)
	}
	tt, err := t.Tap(thread)
	if err != nil {
		closeBody(refused.Body)
		endRefused()
		WriteError(w, http.StatusBadRequest, "invalid thread id")
		return true
	}
	log = log.With(slog.String("thread_id", thread))
	tap, endTap, err := p.call(ctx, r, tt, ep, nil) //nolint:bodyclose // closed below, or by follow
	if err != nil {
		log.Debug("runner has no GET / and its tap failed: its answer relayed", slog.Any(logkey.Err, err))
		return false
	}
	if tap.StatusCode != http.StatusOK || encodingOf(tap.Header.Get("Content-Type")) == encodingOther {
		// Not a tap: a 404 (a runner without one), or the platform
		// runner's answer for a bridge without taps (a JSON body).
		log.Debug("runner has no GET / and no tap: its answer relayed", slog.Int("tap_status", tap.StatusCode))
		closeBody(tap.Body)
		endTap()
		return false
	}
	closeBody(refused.Body)
	endRefused()
	p.follow(ctx, cancel, w, rc, r, tt, ep, tap, endTap, log)
	return true
}

// follow relays the runner's tap resp (200, an AG-UI encoding) to the
// client and re-opens it each time it ends cleanly at a frame boundary, so
// that the client's stream spans the session's turns as the platform
// backend's session stream does. There is no replay: events between two
// taps (the next turn's first ones, when it starts before the tap is open
// again) are not seen. The response headers are the first tap's; later
// taps must answer 200 in the same encoding. The stream ends as the events
// route's streams end: the client leaving, the endpoint leaving the table
// (a RUN_ERROR unless a turn had just ended), revoked access, the proxy's
// shutdown, or the runner failing (a crashed tap, a tap cut inside a
// frame, a dial failure or a refused re-open: the response is aborted, as
// for a crashed runner).
func (p *Proxy) follow(ctx context.Context, cancel context.CancelCauseFunc, w *recorder, rc *http.ResponseController, r *http.Request,
	tt route.Target, ep registry.Endpoint, resp *http.Response, endCall func(), log *slog.Logger,
) {
	fw := &flusher{w: w, rc: rc, timeout: p.cfg.StreamWriteTimeout}
	aborted := false
	defer clearLastWriteDeadline(rc, &aborted, log)
	copyResponseHeader(w.Header(), resp.Header, true)
	w.WriteHeader(http.StatusOK)
	enc := encodingOf(resp.Header.Get("Content-Type"))
	out := newTapOutput(fw, enc, p.cfg.SSEKeepAlive, func() { cancel(context.Canceled) })
	if out.ka == nil {
		if err := fw.Flush(); err != nil {
			closeBody(resp.Body)
			endCall()
			return // client gone
		}
	}
	ended := p.metrics.streamStarted(ctx, tt.Endpoint.Name)
	buf := p.bufs.get()
	defer p.bufs.put(buf)

	var (
		res     relayResult // how the follow ended
		dialErr error       // a re-open that got no answer
		refusal string      // a re-open the runner refused
		midTap  bool        // a tap that ended inside a frame
		delay   = tapBackoffMin
	)
	for taps := 1; ; taps++ {
		turn := eventFrames{enc: enc} // this tap's events only
		one := copyChunks(resp.Body, buf[:], func(b []byte) error {
			if err := out.write(b); err != nil {
				return err
			}
			turn.add(b)
			return nil
		})
		closeBody(resp.Body)
		endCall()
		res.Bytes += one.Bytes
		if one.ClientErr != nil || one.UpstreamErr != nil {
			res.ClientErr, res.UpstreamErr = one.ClientErr, one.UpstreamErr
			break
		}
		if !out.atBoundary() {
			midTap = true // the next tap's events cannot follow half a frame
			break
		}
		wait := time.Duration(0)
		if turn.terminal() {
			delay = tapBackoffMin
		} else {
			wait, delay = delay, min(2*delay, tapBackoffMax)
		}
		if !waitOrEnd(ctx, wait) {
			break
		}
		log.Debug("re-opening the runner's tap", slog.Int("taps", taps), slog.Duration("after", wait), slog.Bool("turn_ended", wait == 0))
		var err error
		resp, endCall, err = p.call(ctx, r, tt, ep, nil) //nolint:bodyclose // closed at the top of the loop, or below
		if err != nil {
			dialErr = err
			break
		}
		if resp.StatusCode != http.StatusOK || encodingOf(resp.Header.Get("Content-Type")) != enc {
			refusal = fmt.Sprintf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			closeBody(resp.Body)
			endCall()
			break
		}
	}
	pings, kaErr := out.end()
	ended(res.Bytes)
	res.Pings, res.Encoding = pings, enc
	res.AtBoundary, res.Terminal = out.frames.atBoundary(), out.frames.terminal()
	if kaErr != nil && res.ClientErr == nil {
		res.ClientErr, res.UpstreamErr = kaErr, nil // the failed keep-alive stopped the read
	}
	cause := context.Cause(ctx)
	stopping := serverStopping(r.Context())
	switch {
	case res.ClientErr != nil || (r.Context().Err() != nil && !stopping):
		log.Debug("stream ended: client left", slog.Int64("bytes", res.Bytes))
	case ctx.Err() == nil && (dialErr != nil || refusal != "") && !p.stillRouted(tt.SessionID, ep):
		// The runner stopped and the sweep has not ended the stream yet.
		aborted = p.endRun(rc, fw, res, endRunnerGone, log)
	case ctx.Err() == nil && (dialErr != nil || refusal != "" || midTap),
		res.UpstreamErr != nil && !errors.Is(res.UpstreamErr, cause):
		// The runner failed the stream: the client's response fails too,
		// as for a crashed runner, instead of ending as if all was said.
		log.Warn("stream ended: runner failed the tap", slog.Int64("bytes", res.Bytes), slog.Any(logkey.Err, res.UpstreamErr),
			slog.Any("dial_err", dialErr), slog.String("refusal", refusal), slog.Bool("mid_frame", midTap))
		aborted = true
		if err := abortResponse(rc); err != nil {
			log.Debug("abort response", slog.Any(logkey.Err, err))
		}
	case errors.Is(cause, ErrEndpointGone):
		aborted = p.endRun(rc, fw, res, endRunnerGone, log)
	case errors.Is(cause, ErrAccessRevoked):
		aborted = p.endRun(rc, fw, res, endRevoked, log)
	case stopping:
		aborted = p.endRun(rc, fw, res, endShutdown, log)
	default:
		log.Debug("stream ended", slog.Int64("bytes", res.Bytes), slog.Int("pings", res.Pings))
	}
}

// stillRouted reports whether the table still routes sessionID to the
// runner process of ep.
func (p *Proxy) stillRouted(sessionID string, ep registry.Endpoint) bool {
	now, ok := p.res.Lookup(sessionID)
	return ok && sameRunner(now, ep)
}

// waitOrEnd waits d, or until ctx ends; it reports whether ctx is still live.
func waitOrEnd(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// tapOutput is the client side of a followed tap: one stream made of many
// taps, with one keep-alive timer for all of them, so that the silences
// between taps (a backoff, a dial) get keep-alive comments as any silence
// of a stream does. Not safe for concurrent use (the keepAliver
// serialises its own timer's writes).
type tapOutput struct {
	fw flushWriter
	ka *keepAliver // nil without keep-alives (binary encoding, or SSE_KEEPALIVE 0)
	// frames are the stream's frames without keep-alives; with them, the
	// keepAliver's, copied here by end.
	frames eventFrames
}

func newTapOutput(fw flushWriter, enc streamEncoding, keepAlive time.Duration, stop func()) *tapOutput {
	o := &tapOutput{fw: fw, frames: eventFrames{enc: enc}}
	if keepsAlive(enc, keepAlive) {
		// Its first run flushes the response headers unless a chunk has.
		o.ka = startKeepAlive(fw, keepAlive, stop)
	}
	return o
}

func (o *tapOutput) write(b []byte) error {
	if o.ka != nil {
		return o.ka.write(b)
	}
	if err := writeFlush(o.fw, b); err != nil {
		return err
	}
	o.frames.add(b)
	return nil
}

// atBoundary reports whether the stream so far ends between two frames.
func (o *tapOutput) atBoundary() bool {
	if o.ka == nil {
		return o.frames.atBoundary()
	}
	o.ka.mu.Lock()
	defer o.ka.mu.Unlock()
	return o.ka.frames.atBoundary()
}

// end stops the keep-alives (nothing writes to the client once it
// returns), leaves the stream's frames in o.frames and returns the pings
// written and the error of a failed one.
func (o *tapOutput) end() (int, error) {
	if o.ka == nil {
		return 0, nil
	}
	pings, err := o.ka.end()
	o.frames = o.ka.frames // the timer no longer touches them
	return pings, err
}
