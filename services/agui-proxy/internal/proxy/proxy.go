// Package proxy relays AG-UI requests from clients to the runner of a session,
// found in an in-memory routing table. Streaming responses are flushed chunk
// by chunk, never buffered, re-framed or compressed, and have no
// whole-response deadline; the upstream request ends when the client leaves,
// when the runner's endpoint leaves the table (or names another runner
// process), or when the server's shutdown grace is over.
//
// A stream the proxy ends itself must not pass for a finished run: AG-UI
// clients take a response that ends cleanly for a successful run, whether
// or not RUN_FINISHED came. So unless the last event relayed was
// RUN_FINISHED or RUN_ERROR, the proxy adds one RUN_ERROR event saying why
// (code RUNNER_GONE or PROXY_SHUTDOWN), at a frame boundary, in the
// stream's encoding (SSE or AG-UI's binary encoding), and then ends the
// response cleanly. A stream cut inside a frame, or in an encoding the
// proxy cannot add an event to, is aborted instead (see endRun). A runner
// that fails mid-body (crashed, connection closed before the body's end,
// malformed chunk) fails the client's response too (see abortResponse), as
// it would directly.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/authz"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/route"
)

// Resolver finds the runner endpoint of a session. *registry.Table
// implements it; agui-proxy's own answers Lookup by registry.Table.Known.
type Resolver interface {
	// Lookup answers from memory, without network I/O: the stream sweep
	// calls it for every open stream. It may answer from a table that is
	// stale (registry.Table.Known): an open stream is not ended because
	// the proxy lost sight of NATS, only when its route changes.
	Lookup(sessionID string) (registry.Endpoint, bool)
	// Resolve is Lookup that may read a route the table has not seen yet
	// (registry.Table.Resolve): a request calls it. Its error is
	// registry.ErrNoRoute for a session with no route (404), and any
	// other (registry.ErrRouteUnknown, registry.ErrStale) when it cannot
	// tell (503 with Retry-After).
	Resolve(ctx context.Context, sessionID string) (registry.Endpoint, error)
}

var _ Resolver = (*registry.Table)(nil)

// Authorizer decides whether a caller may reach a session. It returns nil
// to allow, or an *authz.Error saying what to answer.
type Authorizer interface {
	Authorize(ctx context.Context, req authz.Request) error
}

var _ Authorizer = (*authz.Authorizer)(nil)

// Config tunes a Proxy. Zero durations take the defaults named on each field.
type Config struct {
	// MaxBodyBytes bounds request bodies; larger ones get 413. Required (> 0).
	MaxBodyBytes int64
	// SSEKeepAlive is the idle time after which an SSE stream gets a
	// ": ping" comment at an event boundary; 0 disables keep-alives.
	SSEKeepAlive time.Duration
	// UpstreamTimeout bounds a whole non-streaming runner call (default 30s).
	UpstreamTimeout time.Duration
	// UpstreamHeaderTimeout bounds the wait for a runner's response headers,
	// streaming or not (default 60s).
	UpstreamHeaderTimeout time.Duration
	// DialTimeout bounds connecting to a runner (default 5s).
	DialTimeout time.Duration
	// SweepInterval is how often streams are checked against the routing
	// table (default 100ms).
	SweepInterval time.Duration
	// Synced reports whether the routing table holds a full snapshot; while
	// it does not, a session missing from the table gets 503 instead of 404
	// (it may exist but not be loaded yet). Nil means always synced.
	Synced func() bool
	// Authorizer, when set, decides every session request after its routing
	// record is found and before its body is read; nil allows everyone who
	// is authenticated.
	Authorizer Authorizer
	// Verifier, when set, is the proxy's authentication (the router's
	// middleware authenticated each request once, at its start); with
	// RecheckEvery an open stream's request is authenticated again.
	Verifier auth.Verifier
	// RecheckEvery, when positive, authenticates (Verifier) and authorizes
	// (Authorizer) an open stream's request again that often, and ends the
	// stream (a RUN_ERROR, code ACCESS_REVOKED) once either refuses it: a
	// revoked grant, a token removed from the tokens file or a JWT that
	// expired. An authority that cannot answer ends nothing. Streams live
	// for hours; a check made only at their start let revoked access
	// stream on for as long as the client stayed connected.
	RecheckEvery time.Duration
	// AllowedNetworks are the networks a runner endpoint may be in
	// (RUNNER_ALLOWED_NETWORKS). A record naming an address outside them is
	// refused with 502 and never dialed; a host name is checked on the
	// address it resolves to, when dialed. Nil allows every address.
	AllowedNetworks []netip.Prefix
	// StreamWriteTimeout bounds each write (and flush) to a streaming
	// client: a client that stops reading ends its stream after it, instead
	// of holding the stream and its runner call forever (default 30s).
	StreamWriteTimeout time.Duration
	// DetachedRunTimeout bounds a run started on the platform backend's
	// run path, whose stream the proxy drains itself with no client to
	// end it: from the request to the end of the runner's stream
	// (default 4h).
	DetachedRunTimeout time.Duration
	// MeterProvider and TracerProvider default to no-ops.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
}

func (c Config) withDefaults() Config {
	if c.UpstreamTimeout <= 0 {
		c.UpstreamTimeout = 30 * time.Second
	}
	if c.UpstreamHeaderTimeout <= 0 {
		c.UpstreamHeaderTimeout = 60 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.StreamWriteTimeout <= 0 {
		c.StreamWriteTimeout = 30 * time.Second
	}
	if c.DetachedRunTimeout <= 0 {
		c.DetachedRunTimeout = detachedRunTimeoutDefault
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 100 * time.Millisecond
	}
	if c.MeterProvider == nil {
		c.MeterProvider = metricnoop.NewMeterProvider()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = tracenoop.NewTracerProvider()
	}
	return c
}

// Proxy is the http.Handler of /sessions/{id}/... routes. Safe for concurrent
// use. Call Run to cancel streams whose endpoint leaves the table.
type Proxy struct {
	cfg     Config
	res     Resolver
	client  *http.Client
	streams *streams
	bufs    *buffers
	metrics *metrics
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
	log     *slog.Logger
	// detachedRuns are the runs of the backend-compatible run path,
	// drained in the background until Run ends them.
	detachedRuns *detachedRuns
}

// New returns a Proxy routing through res. It returns an error for an
// invalid Config (MaxBodyBytes <= 0) or when metrics cannot be created.
func New(cfg Config, res Resolver, log *slog.Logger) (*Proxy, error) {
	if cfg.MaxBodyBytes <= 0 {
		return nil, fmt.Errorf("proxy: MaxBodyBytes must be > 0, got %d", cfg.MaxBodyBytes)
	}
	if res == nil || log == nil {
		return nil, errors.New("proxy: nil resolver or logger")
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	tr := &http.Transport{
		Proxy:                 nil, // runners are dialed directly, never via HTTP_PROXY
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second, Control: dialControl(cfg.AllowedNetworks)}).DialContext,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.UpstreamHeaderTimeout,
		DisableCompression:    true, // never ask for gzip, never transparently gunzip
	}
	client := &http.Client{
		// The runner call's client span is call's own, not otelhttp's
		// transport: otelhttp computed the attributes of its http_client_*
		// metrics on every call even with a no-op MeterProvider (those
		// series carry server_address and server_port, per runner, and
		// grew without bound until a restart, so they are not exported),
		// and it wrapped the response body, one more call per chunk read.
		// agui_proxy_upstream_latency measures the same calls, by route.
		Transport: tr,
		// A redirect could point anywhere; only registered endpoints are dialed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Proxy{
		cfg:     cfg,
		res:     res,
		client:  client,
		streams: newStreams(),
		bufs:    newBuffers(),
		metrics: m,
		tracer:  cfg.TracerProvider.Tracer(meterName),
		prop:    otel.GetTextMapPropagator(),
		log:     log,

		detachedRuns: newDetachedRuns(),
	}, nil
}

// Run cancels in-flight streams whose runner endpoint left the routing table
// (or was replaced by another runner process) until ctx ends; it returns nil
// then. Such a stream gets a RUN_ERROR (code RUNNER_GONE) unless its run
// had ended, and its response then ends cleanly (see endRun). When ctx
// ends, Run also ends the detached runs still draining (ErrProxyStopped),
// refuses new ones and returns once their goroutines have.
func (p *Proxy) Run(ctx context.Context) error {
	p.streams.run(ctx, p.res, p.cfg.SweepInterval, func(n int) {
		p.metrics.evicted.Add(ctx, int64(n))
		p.log.Info("streams ended: runner endpoint removed", slog.Int(logkey.Count, n))
	})
	p.detachedRuns.stop()
	p.client.CloseIdleConnections()
	return nil
}

// ActiveStreams returns the number of streams being relayed.
func (p *Proxy) ActiveStreams() int { return p.streams.len() }

// ServeHTTP serves /sessions/{id}{suffix} for the suffixes of route.Endpoints.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, perr := route.Parse(r.URL.EscapedPath())
	name := routeUnknown
	if perr == nil {
		name = t.Endpoint.Name
	}
	ctx := p.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := p.tracer.Start(ctx, "agui-proxy "+name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String(attrRoute, name)))
	defer span.End()
	if perr == nil {
		// The span, and the runner request's span started under ctx, name
		// the session, so a search for it (ambient.object_id) finds them.
		obj := []attribute.KeyValue{telemetry.AttrResource.String("sessions"), telemetry.AttrObjectID.String(t.SessionID)}
		span.SetAttributes(obj...)
		ctx = telemetry.ContextWithAttributes(ctx, obj...)
	}
	r = r.WithContext(ctx)
	rec := &recorder{ResponseWriter: w}
	defer func() {
		code := rec.status
		if code == 0 {
			code = statusClientClosed
		}
		span.SetAttributes(attribute.Int("http.response.status_code", code))
		if code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(code))
		}
		p.metrics.request(ctx, name, code)
	}()

	ep, body, ok := p.admit(rec, r, t, perr)
	if !ok {
		return
	}
	span.SetAttributes(attribute.String(logkey.SessionID, t.SessionID))
	log := p.log.With(slog.String(logkey.SessionID, t.SessionID), slog.String(logkey.Route, name))
	switch {
	case t.Endpoint.Backend:
		p.detached(rec, r, t, ep, body, log)
		return
	case t.Endpoint.Stream:
		p.stream(rec, r, t, ep, body, log)
		return
	}
	p.forward(rec, r, t, ep, body, log)
}

// admit answers requests the proxy refuses itself (unknown endpoint or
// session, wrong method, table not synced, oversize or unreadable body) and
// returns the session's endpoint and the request body otherwise.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, t route.Target, perr error) (registry.Endpoint, []byte, bool) {
	switch {
	case errors.Is(perr, route.ErrInvalidSessionID):
		WriteError(w, http.StatusNotFound, "unknown session")
		return registry.Endpoint{}, nil, false
	case errors.Is(perr, route.ErrInvalidThreadID):
		WriteError(w, http.StatusBadRequest, "invalid thread id")
		return registry.Endpoint{}, nil, false
	case perr != nil:
		WriteError(w, http.StatusNotFound, "unknown endpoint")
		return registry.Endpoint{}, nil, false
	case !t.Endpoint.Allows(r.Method):
		w.Header().Set("Allow", strings.Join(t.Endpoint.Methods, ", "))
		WriteError(w, http.StatusMethodNotAllowed, "method not allowed")
		return registry.Endpoint{}, nil, false
	}
	// From the table in memory (a removed endpoint is never dialed
	// again), or read through on a miss: a runner registered a moment ago
	// is routed although the table's watch has not brought it yet.
	ep, rerr := p.res.Resolve(r.Context(), t.SessionID)
	ok := rerr == nil
	if ok && t.ProjectID != "" && ep.ProjectID != t.ProjectID {
		// A backend path names the project too: a session of another
		// project is unknown there, so a caller (a runner) of project A
		// cannot start runs in project B by naming B's session.
		WriteError(w, http.StatusNotFound, "unknown session")
		return registry.Endpoint{}, nil, false
	}
	if !ok {
		switch {
		case errors.Is(rerr, registry.ErrStale):
			// Cut off from the bucket too long: its records may route to
			// a port given to another session's runner meanwhile.
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "routing table stale")
			return registry.Endpoint{}, nil, false
		case !errors.Is(rerr, registry.ErrNoRoute):
			// The session may exist (a read failed): not a 404, which
			// tells a client that it does not.
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "session route unknown")
			return registry.Endpoint{}, nil, false
		case p.cfg.Synced != nil && !p.cfg.Synced():
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "routing table not synced")
			return registry.Endpoint{}, nil, false
		}
		if t.ProjectID != "" {
			// The backend path's caller is a runner sending its first
			// prompt, possibly before runner-manager has registered it
			// (it registers a runner once its health check passes; the
			// platform's runner sends after a delay of 1-2 s). The
			// platform's runner retries a 5xx answer, or one that says
			// "not available", and gives up on a 404.
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "runner not available")
			return registry.Endpoint{}, nil, false
		}
		WriteError(w, http.StatusNotFound, "unknown session")
		return registry.Endpoint{}, nil, false
	}
	// After the lookup: kube mode needs the record's project. The price is
	// that a caller without access can tell whether a runner is routed for
	// an id it guessed (docs/operations.md). Before the body: a denied
	// caller never gets to upload anything.
	if !p.authorize(w, r, t, ep) {
		return registry.Endpoint{}, nil, false
	}
	if addr, err := netip.ParseAddr(ep.Host); err == nil && !allowedAddr(p.cfg.AllowedNetworks, addr) {
		p.refuseRunner(r.Context(), w, t.SessionID, ep.Host)
		return registry.Endpoint{}, nil, false
	}
	body, err := readBody(w, r, p.cfg.MaxBodyBytes)
	var ne net.Error
	switch {
	case err == nil:
		return ep, body, true
	case errors.Is(err, errBodyTooLarge):
		WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", p.cfg.MaxBodyBytes))
	case errors.As(err, &ne) && ne.Timeout():
		// Answered even though a failed body read cancels the request
		// context: otherwise the server would send an empty 200. A client
		// that is really gone just makes this write fail.
		WriteError(w, http.StatusRequestTimeout, "request body not received in time")
	default:
		WriteError(w, http.StatusBadRequest, "cannot read request body")
	}
	return registry.Endpoint{}, nil, false
}

// authorize asks the Authorizer, if any, and answers a refusal. Only the
// Authorization header leaves through it (api mode forwards it to the API).
func (p *Proxy) authorize(w http.ResponseWriter, r *http.Request, t route.Target, ep registry.Endpoint) bool {
	if p.cfg.Authorizer == nil {
		return true
	}
	pr, _ := auth.PrincipalFrom(r.Context()) // zero without authentication
	err := p.cfg.Authorizer.Authorize(r.Context(), authzRequest(r, t, ep, pr))
	if err == nil {
		return true
	}
	var ae *authz.Error
	if !errors.As(err, &ae) {
		ae = &authz.Error{Code: http.StatusServiceUnavailable, Reason: "authorization failed", Err: err}
	}
	if ae.Code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="agui-proxy"`)
	}
	writeErrorReason(w, ae.Code, ae.Message(), ae.Reason)
	return false
}

// recheck checks an open stream's request again every Config.RecheckEvery
// (stillAllowed) until the stream's ctx ends or the returned stop is
// called, and cancels the stream with ErrAccessRevoked once it is refused.
// Without RecheckEvery, or with neither a Verifier nor an Authorizer, it
// starts nothing.
func (p *Proxy) recheck(ctx context.Context, r *http.Request, t route.Target, ep registry.Endpoint, cancel context.CancelCauseFunc, log *slog.Logger) (stop func()) {
	every := p.cfg.RecheckEvery
	if every <= 0 || (p.cfg.Verifier == nil && p.cfg.Authorizer == nil) {
		return func() {}
	}
	// Its own ctx: a stream that ends does not wait for a check under way.
	ctx, stopChecks := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { // ends with the stream (stop) or its ctx
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := p.stillAllowed(ctx, r, t, ep); err != nil {
				log.Info("stream ended: access revoked", slog.Any(logkey.Err, err))
				cancel(ErrAccessRevoked)
				return
			}
		}
	})
	return func() {
		stopChecks()
		wg.Wait()
	}
}

// stillAllowed authenticates and authorizes r again, as the middleware and
// admit did at its start. It returns an error only for a refusal (invalid
// credentials, 401 or 403), nil when allowed or when the authority could
// not answer (an outage ends no stream).
func (p *Proxy) stillAllowed(ctx context.Context, r *http.Request, t route.Target, ep registry.Endpoint) error {
	pr, _ := auth.PrincipalFrom(r.Context())
	if p.cfg.Verifier != nil {
		var err error
		if pr, err = p.cfg.Verifier.Verify(ctx, r); err != nil {
			if errors.Is(err, auth.ErrUnauthenticated) {
				return err
			}
			return nil
		}
	}
	if p.cfg.Authorizer == nil {
		return nil
	}
	err := p.cfg.Authorizer.Authorize(ctx, authzRequest(r, t, ep, pr))
	var ae *authz.Error
	if errors.As(err, &ae) && (ae.Code == http.StatusUnauthorized || ae.Code == http.StatusForbidden) {
		return err
	}
	return nil
}

// authzRequest is what the Authorizer decides for r by pr, at its start
// (authorize) and on an open stream (stillAllowed). Only the Authorization
// header leaves through it (api mode forwards it to the API).
func authzRequest(r *http.Request, t route.Target, ep registry.Endpoint, pr auth.Principal) authz.Request {
	return authz.Request{
		SessionID: t.SessionID, ProjectID: ep.ProjectID, Verb: authz.VerbOf(r.Method),
		Principal: pr, Authorization: r.Header.Get("Authorization"),
	}
}

// refuseRunner answers a routing record whose runner address is outside
// AllowedNetworks: a forged or mistaken record must not make the proxy a
// way into the cluster's network.
func (p *Proxy) refuseRunner(ctx context.Context, w http.ResponseWriter, sessionID, host string) {
	p.metrics.refused(ctx, refusedNetwork)
	p.log.Warn("runner address not allowed", slog.String(logkey.SessionID, sessionID), slog.String("host", host))
	writeErrorReason(w, http.StatusBadGateway, "runner address not allowed",
		"the session's runner endpoint is outside RUNNER_ALLOWED_NETWORKS")
}

// readBody reads the whole request body (AG-UI inputs are JSON documents) so
// that oversize bodies are refused before a runner is dialed, and so that the
// server's read deadline only has to cover reading it.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errBodyTooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errBodyTooLarge
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}

// call sends the request to the runner. Only the endpoint's address from the
// routing table and the endpoint's constant path are used to build the URL.
// The call is a client span (its trace context goes to the runner in
// traceparent); end ends it, once the response body is closed, and must be
// called when err is nil.
func (p *Proxy) call(ctx context.Context, r *http.Request, t route.Target, ep registry.Endpoint, body []byte) (resp *http.Response, end func(), err error) {
	u := url.URL{Scheme: "http", Host: ep.Addr(), Path: t.UpstreamPath(), RawQuery: upstreamQuery(r.URL.RawQuery)}
	us := u.String()
	// The attributes otelhttp's client spans had (OpenTelemetry's HTTP
	// client semantic conventions).
	ctx, span := p.tracer.Start(ctx, "HTTP "+r.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("http.request.method", r.Method), attribute.String("url.full", us),
		attribute.String("server.address", ep.Host), attribute.Int("server.port", ep.Port)))
	var rd io.Reader = http.NoBody
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, us, rd)
	if err != nil {
		span.End()
		return nil, nil, fmt.Errorf("build runner request: %w", err)
	}
	req.Header = upstreamHeader(r.Header, t.Endpoint)
	req.ContentLength = int64(len(body))
	p.prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
	start := time.Now()
	resp, err = p.client.Do(req)
	if err != nil {
		span.SetAttributes(attribute.String("error.type", fmt.Sprintf("%T", err)))
		span.SetStatus(codes.Error, err.Error())
		span.End()
		return nil, nil, fmt.Errorf("call runner %s: %w", ep.Addr(), err)
	}
	p.metrics.upstreamLatency(ctx, t.Endpoint.Name, time.Since(start))
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetStatus(codes.Error, "")
	}
	return resp, func() { span.End() }, nil
}

// forward relays a short request/response exchange within UpstreamTimeout.
func (p *Proxy) forward(w *recorder, r *http.Request, t route.Target, ep registry.Endpoint, body []byte, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.UpstreamTimeout)
	defer cancel()
	resp, endCall, err := p.call(ctx, r, t, ep, body)
	if err != nil {
		p.upstreamFailed(w, r, err, nil, log)
		return
	}
	defer endCall()
	defer closeBody(resp.Body)
	p.relayAnswer(w, r, resp, log)
}

// stream relays a long-lived response, flushing each chunk as it arrives.
func (p *Proxy) stream(w *recorder, r *http.Request, t route.Target, ep registry.Endpoint, body []byte, log *slog.Logger) {
	rc := http.NewResponseController(w)
	// The server's ReadTimeout and WriteTimeout are whole-request deadlines;
	// a stream may run for hours. ReadHeaderTimeout (slowloris) and the body
	// read above already happened under them. An expired read deadline would
	// cancel the request context, so both are cleared.
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		log.Warn("clear write deadline", slog.Any(logkey.Err, err))
	}
	if err := rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		log.Warn("clear read deadline", slog.Any(logkey.Err, err))
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	untrack := p.streams.add(t.SessionID, ep, cancel)
	defer untrack()
	defer p.recheck(ctx, r, t, ep, cancel, log)()

	resp, endCall, err := p.call(ctx, r, t, ep, body) //nolint:bodyclose // closed below, or by followTap when it follows the tap
	if err != nil {
		p.upstreamFailed(w, r, err, ctx, log)
		return
	}
	if resp.StatusCode == http.StatusMethodNotAllowed && t.Endpoint.FollowsTap && r.Method == http.MethodGet &&
		p.followTap(ctx, cancel, w, rc, r, t, ep, resp, endCall, log) {
		return // the runner has no GET /: its tap was followed instead
	}
	defer endCall()
	defer closeBody(resp.Body)
	fw := &flusher{w: w, rc: rc, timeout: p.cfg.StreamWriteTimeout}
	aborted := false
	defer clearLastWriteDeadline(rc, &aborted, log)
	copyResponseHeader(w.Header(), resp.Header, true)
	w.WriteHeader(resp.StatusCode)
	enc := encodingOf(resp.Header.Get("Content-Type"))
	if !keepsAlive(enc, p.cfg.SSEKeepAlive) {
		// With keep-alives the relay sends the headers (see relay).
		if err := fw.Flush(); err != nil {
			return // client gone
		}
	}
	ended := p.metrics.streamStarted(ctx, t.Endpoint.Name)
	buf := p.bufs.get()
	defer p.bufs.put(buf) // relay reads into it on this goroutine only
	res := relay(fw, resp.Body, buf[:], enc, p.cfg.SSEKeepAlive, func() { cancel(context.Canceled) })
	ended(res.Bytes)
	cause := context.Cause(ctx)
	// A read the proxy ended itself (endpoint removed or replaced, client
	// gone, shutdown, failed keep-alive) fails with the stream context's
	// cause, which the transport returns; any other read error is the
	// runner's, even when the endpoint was removed just after it.
	runnerFailed := res.UpstreamErr != nil && !errors.Is(res.UpstreamErr, cause)
	stopping := serverStopping(r.Context())
	switch {
	case res.ClientErr != nil || (r.Context().Err() != nil && !stopping):
		log.Debug("stream ended: client left", slog.Int64("bytes", res.Bytes))
	case runnerFailed:
		// The client must not take a crashed run for a finished stream:
		// its response fails as the runner's did, instead of ending cleanly.
		log.Warn("stream ended: runner connection failed", slog.Int64("bytes", res.Bytes), slog.Any(logkey.Err, res.UpstreamErr))
		aborted = true
		if err := abortResponse(rc); err != nil {
			log.Debug("abort response", slog.Any(logkey.Err, err))
		}
	case res.UpstreamErr == nil && isRunResponse(r, resp, res) && !res.Terminal:
		// The runner ended a run's body itself, whatever happened
		// meanwhile, before the run's last event. An AG-UI client takes a
		// clean end for a finished run, so one the runner left unfinished
		// (stopped mid-run) gets the proxy's RUN_ERROR. A finished one is
		// relayed as it is (next case): every run ends that way, so it is
		// logged at debug, not as a stream the proxy ended.
		aborted = p.endRun(rc, fw, res, endIncomplete, log)
	case res.UpstreamErr == nil:
		// The runner ended its body itself, whatever happened meanwhile.
		log.Debug("stream ended", slog.Int64("bytes", res.Bytes), slog.Int("pings", res.Pings))
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

// isRunResponse reports whether resp is the event stream of one run: the
// answer to a POST (a RunAgentInput, on /agui/run or /agui/events), 2xx,
// in an AG-UI encoding. A GET of /agui/events is a subscription, not a run,
// and any other body is not made of events.
func isRunResponse(r *http.Request, resp *http.Response, res relayResult) bool {
	return r.Method == http.MethodPost && resp.StatusCode >= 200 && resp.StatusCode < 300 && res.Encoding != encodingOther
}

// endRun ends a stream the proxy cut itself, or a run's stream its runner
// ended unfinished, for why, so that the client does not take an
// unfinished run for a finished one: AG-UI clients resolve
// a stream that ends cleanly as a successful run, RUN_FINISHED or not.
//   - The last event was RUN_FINISHED or RUN_ERROR: the run is over; the
//     response ends cleanly with nothing added.
//   - Otherwise, at a frame boundary of SSE or the binary encoding: one
//     RUN_ERROR frame saying why (runErrors), then the clean end. The
//     official client's verifier takes RUN_ERROR at any point of a run,
//     even as the first event, and nothing after it.
//   - Inside a frame (the runner's last chunk ended mid-frame), or in an
//     encoding the proxy cannot add an event to: the response is aborted
//     as for a crashed runner (abortResponse), so the client sees a failed
//     transfer and never a half frame followed by a clean end.
//
// It returns whether the response was aborted.
func (p *Proxy) endRun(rc *http.ResponseController, fw flushWriter, res relayResult, why runEnd, log *slog.Logger) bool {
	log = log.With(slog.String(logkey.Reason, runErrors[why].Code), slog.Int64("bytes", res.Bytes),
		slog.String("encoding", res.Encoding.String()))
	switch {
	case res.Terminal:
		log.Info("stream ended by the proxy after its run ended")
		return false
	case res.Encoding == encodingOther || !res.AtBoundary:
		log.Info("stream ended by the proxy: response aborted", slog.Bool("mid_frame", res.Encoding != encodingOther))
		if err := abortResponse(rc); err != nil {
			log.Debug("abort response", slog.Any(logkey.Err, err))
		}
		return true
	default:
		log.Info("stream ended by the proxy: run error sent")
		if err := writeFlush(fw, runErrorFrames[why][res.Encoding]); err != nil {
			log.Debug("write run error", slog.Any(logkey.Err, err))
		}
		return false
	}
}

// upstreamFailed answers a failed runner call: nothing when the client left,
// otherwise 502 (or 504 for a runner that did not answer in time).
func (p *Proxy) upstreamFailed(w *recorder, r *http.Request, err error, streamCtx context.Context, log *slog.Logger) {
	if r.Context().Err() != nil {
		if serverStopping(r.Context()) {
			// The shutdown grace ended the call. A handler that writes
			// nothing sends an empty 200, which a client would take for a
			// complete answer (an AG-UI client: a run without events).
			WriteError(w, http.StatusServiceUnavailable, "agui-proxy is shutting down")
		}
		return // otherwise the client left; nobody to answer
	}
	if streamCtx != nil && errors.Is(context.Cause(streamCtx), ErrEndpointGone) {
		WriteError(w, http.StatusBadGateway, "runner endpoint removed")
		return
	}
	if errors.Is(err, ErrRunnerNotAllowed) {
		p.metrics.refused(r.Context(), refusedNetwork)
		log.Warn("runner address not allowed", slog.Any(logkey.Err, err))
		writeErrorReason(w, http.StatusBadGateway, "runner address not allowed",
			"the session's runner endpoint resolves outside RUNNER_ALLOWED_NETWORKS")
		return
	}
	// A runner never connected to is unreachable, even when the connect
	// timed out (an address that drops packets): 504 is for a runner that
	// took the request and did not answer in time.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		log.Warn("runner unreachable", slog.Any(logkey.Err, err))
		WriteError(w, http.StatusBadGateway, "runner unreachable")
		return
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		log.Warn("runner timed out", slog.Any(logkey.Err, err))
		WriteError(w, http.StatusGatewayTimeout, "runner timed out")
		return
	}
	log.Warn("runner unreachable", slog.Any(logkey.Err, err))
	WriteError(w, http.StatusBadGateway, "runner unreachable")
}

// flusher writes to the client and flushes through the ResponseController,
// which reaches the server's writer through any wrappers. Each chunk (a
// write and the flush after it, or a lone flush) gets at least timeout to
// finish: the stream has no whole-response deadline, but a client that
// stops reading makes a write block once the socket buffers are full, and
// that write then fails at the connection's write deadline instead of
// blocking forever. The deadline is moved only when less than timeout of it
// is left, to timeout and an eighth ahead, so a chunk gets between timeout
// and 9/8 of it. Moving it on every chunk (a runtime timer update behind
// the ResponseController) was about a fifth of what agui-proxy spent per
// relayed event beyond the bare standard-library relay (BenchmarkStreams100).
// Not safe for concurrent use (the relay serialises its writers).
type flusher struct {
	w        io.Writer
	rc       *http.ResponseController
	timeout  time.Duration
	deadline time.Time // the write deadline last set (zero: none yet)
	armed    bool      // a Write checked the deadline and its Flush has not run yet
}

func (f *flusher) Write(b []byte) (int, error) {
	f.arm()
	f.armed = true
	return f.w.Write(b)
}

func (f *flusher) Flush() error {
	if !f.armed {
		f.arm()
	}
	f.armed = false
	return f.rc.Flush()
}

// arm makes sure the write deadline leaves the chunk about to be written at
// least timeout; a writer without deadlines (not a server connection)
// keeps working without one.
func (f *flusher) arm() {
	now := time.Now()
	if f.deadline.Sub(now) >= f.timeout {
		return
	}
	f.deadline = now.Add(f.timeout + f.timeout/8)
	// The only errors are ErrNotSupported and a closed connection, which
	// the write that follows reports.
	_ = f.rc.SetWriteDeadline(f.deadline)
}

// dialControl refuses, before connecting, an address outside allowed (nil:
// every address). It sees the address a host name resolved to, so a name
// cannot lead the proxy elsewhere.
func dialControl(allowed []netip.Prefix) func(network, address string, c syscall.RawConn) error {
	if allowed == nil {
		return nil
	}
	return func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrRunnerNotAllowed, address, err)
		}
		if !allowedAddr(allowed, ap.Addr()) {
			return fmt.Errorf("%w: %s", ErrRunnerNotAllowed, address)
		}
		return nil
	}
}

// allowedAddr reports whether addr is in one of the networks (nil: all).
// IPv4-mapped IPv6 addresses count as IPv4.
func allowedAddr(allowed []netip.Prefix, addr netip.Addr) bool {
	if allowed == nil {
		return true
	}
	addr = addr.Unmap()
	for _, p := range allowed {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func closeBody(b io.Closer) {
	// The body is drained or abandoned; a close error changes nothing.
	_ = b.Close()
}

// clearLastWriteDeadline, deferred by a stream, clears the write deadline
// its last write armed (see flusher) unless *aborted: left set, it would
// cut a later request on this keep-alive connection when the server has
// no WriteTimeout. An aborted response has no connection left to reuse.
func clearLastWriteDeadline(rc *http.ResponseController, aborted *bool, log *slog.Logger) {
	if *aborted {
		return
	}
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		log.Debug("clear write deadline", slog.Any(logkey.Err, err))
	}
}
