package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ambient-code/control-plane/libs/telemetry"
)

// ServiceName is ambientctl's service.name in its spans.
const ServiceName = "ambientctl"

// flushTimeout bounds the export of a command's spans when it ends: a
// collector that is down must not hold the shell for long.
const flushTimeout = 5 * time.Second

// commandTrace is the trace of one command: its root span, and the
// telemetry to flush when it ends.
type commandTrace struct {
	span trace.Span
	// tp is the command's tracer provider, given to every client so their
	// spans are its own, whatever the OTel global is.
	tp    trace.TracerProvider
	flush func(context.Context) error
}

// startTrace sets up telemetry (the standard OTEL_* variables decide what
// is exported) and starts the command's root span in cmd's ctx: every API
// call, REST call and proxy request of the command is a child span and
// carries its traceparent, so the command's trace shows what it caused in
// the API, the proxy and the runner. With --verbose, OTel's own errors (a
// collector that is down) go to stderr; without, nowhere.
func (o *options) startTrace(cmd *cobra.Command) error {
	log := slog.New(slog.DiscardHandler)
	if o.verbose {
		log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	p, flush, err := telemetry.Setup(cmd.Context(), telemetry.Options{ServiceName: ServiceName, Export: o.export, Logger: log})
	if err != nil {
		return usageError{fmt.Errorf("telemetry: %w", err)}
	}
	// The span lives as long as the command: finishTrace ends it when
	// Execute's command returns.
	ctx, span := p.Tracer.Start(cmd.Context(), cmd.CommandPath()) //nolint:spancheck // ended by finishTrace
	cmd.SetContext(ctx)
	o.trace = &commandTrace{span: span, tp: p.TracerProvider, flush: flush}
	return nil //nolint:spancheck // ended by finishTrace
}

// finishTrace ends the command's span with its outcome, prints the trace
// id with --verbose (on stderr, so -o json output stays parseable), and
// flushes the spans.
func (o *options) finishTrace(ctx context.Context, err error, stderr io.Writer) {
	t := o.trace
	if t == nil {
		return // the command never started (usage error, --help)
	}
	o.trace = nil
	if err != nil {
		t.span.RecordError(err)
		t.span.SetStatus(codes.Error, err.Error())
	}
	t.span.End()
	if o.verbose {
		fmt.Fprintf(stderr, "trace id: %s\n", t.span.SpanContext().TraceID())
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if ferr := t.flush(fctx); ferr != nil && o.verbose {
		fmt.Fprintf(stderr, "ambientctl: telemetry not exported: %v\n", ferr)
	}
}

// tagSession names the session the command works on, on the command's
// span and on every span started under the returned ctx, so the command
// shows up in a search for the session (ambient.object_id).
func tagSession(ctx context.Context, id, project string) context.Context {
	attrs := []attribute.KeyValue{telemetry.AttrResource.String("sessions"), telemetry.AttrObjectID.String(id)}
	if project != "" {
		attrs = append(attrs, telemetry.AttrProjectID.String(project))
	}
	trace.SpanFromContext(ctx).SetAttributes(attrs...)
	return telemetry.ContextWithAttributes(ctx, attrs...)
}

// httpClient is the client of the proxy and event-tally: each request is
// a span of the command's trace and sends it on as traceparent. No client
// timeout: a chat streams for as long as the agent works; ctx ends it.
// Redirects are answered, not followed (see redirected): net/http would
// resend a chat's POST as a GET after a 302, and the proxy token to any
// other port of the same host.
func (o *options) httpClient() *http.Client {
	return &http.Client{
		Transport: otelhttp.NewTransport(http.DefaultTransport,
			otelhttp.WithTracerProvider(o.tracerProvider()),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
				return r.Method + " " + r.URL.Path
			})),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// redirected is the error of a redirect answer that flag's URL got, naming
// the target so the user can pass it; nil when resp is no redirect.
func redirected(resp *http.Response, flag string) error {
	loc, err := resp.Location()
	if err != nil {
		return nil //nolint:nilerr // no Location: not a redirect to report
	}
	return fmt.Errorf("%s %s answered %s, redirecting to %s; not followed (that would resend the token there): pass that URL as %s",
		resp.Request.Method, resp.Request.URL.Redacted(), resp.Status, loc.Redacted(), flag)
}

// tracerProvider is the running command's tracer provider (a no-op one
// before the command started).
func (o *options) tracerProvider() trace.TracerProvider {
	if o.trace == nil {
		return noop.NewTracerProvider()
	}
	return o.trace.tp
}
