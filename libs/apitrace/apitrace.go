package apitrace

import (
	"context"
	"strings"
	"sync"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/ambient-code/control-plane/libs/telemetry"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Options configure the handlers. The zero value uses the OTel globals
// (telemetry.Setup installs the tracer provider and the propagator).
type Options struct {
	// TracerProvider makes the spans (nil: the OTel global).
	TracerProvider trace.TracerProvider
}

// ClientHandler returns the stats handler of an API client:
// grpc.WithStatsHandler(apitrace.ClientHandler(opts)). See the package doc.
func ClientHandler(o Options) stats.Handler {
	return tagged{Handler: otelgrpc.NewClientHandler(o.otelgrpc()...)}
}

// ServerHandler returns the stats handler of an API server:
// grpc.StatsHandler(apitrace.ServerHandler(opts)). See the package doc.
func ServerHandler(o Options) stats.Handler {
	return tagged{Handler: otelgrpc.NewServerHandler(o.otelgrpc()...)}
}

func (o Options) otelgrpc() []otelgrpc.Option {
	opts := []otelgrpc.Option{otelgrpc.WithFilter(notWatch)}
	if o.TracerProvider != nil {
		opts = append(opts, otelgrpc.WithTracerProvider(o.TracerProvider))
	}
	return opts
}

// streams holds the full method names of every streaming method of the
// ambient services (the watches), from the generated service descriptors.
var streams = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	for _, sd := range []grpc.ServiceDesc{ambientv1.SessionService_ServiceDesc, ambientv1.ProjectService_ServiceDesc, ambientv1.ProjectSettingsService_ServiceDesc} {
		for _, st := range sd.Streams {
			out["/"+sd.ServiceName+"/"+st.StreamName] = true
		}
	}
	return out
})

// notWatch is the otelgrpc filter: every call but the watch streams.
func notWatch(info *stats.RPCTagInfo) bool { return !streams()[info.FullMethodName] }

// resources maps the ambient services to the resource token of their
// objects (as in events.ResourceToken).
var resources = map[string]string{
	ambientv1.SessionService_ServiceDesc.ServiceName:         "sessions",
	ambientv1.ProjectService_ServiceDesc.ServiceName:         "projects",
	ambientv1.ProjectSettingsService_ServiceDesc.ServiceName: "project_settings",
}

// tagged wraps an otelgrpc handler: it tags the call's span with the
// object of its request and answer.
type tagged struct {
	stats.Handler
}

type rpcKey struct{}

// TagRPC starts the span (otelgrpc) and remembers the resource of the
// method. Watches are left out here too: otelgrpc starts no span for them,
// so the span in ctx is the caller's, which must not be tagged.
func (h tagged) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx = h.Handler.TagRPC(ctx, info)
	service, _, _ := strings.Cut(strings.TrimPrefix(info.FullMethodName, "/"), "/")
	if res, ok := resources[service]; ok && !streams()[info.FullMethodName] {
		ctx = context.WithValue(ctx, rpcKey{}, res)
	}
	return ctx
}

// HandleRPC tags the span with the object of each message of a unary
// ambient call, then lets otelgrpc record the event.
func (h tagged) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	if res, ok := ctx.Value(rpcKey{}).(string); ok {
		var msg any
		switch p := rs.(type) {
		case *stats.OutPayload:
			msg = p.Payload
		case *stats.InPayload:
			msg = p.Payload
		}
		if attrs := objectAttributes(res, msg); len(attrs) > 0 {
			trace.SpanFromContext(ctx).SetAttributes(attrs...)
		}
	}
	h.Handler.HandleRPC(ctx, rs)
}

// Messages that name an object.
type (
	withID       interface{ GetId() string }
	withMetadata interface {
		GetMetadata() *ambientv1.ObjectReference
	}
	withProject interface{ GetProjectId() string }
)

// objectAttributes returns the ambient.* attributes of a request or an
// answer: its id (a request's id, an object's metadata.id) and project.
// A list, a watch event or an empty answer names no object.
func objectAttributes(resource string, msg any) []attribute.KeyValue {
	var id, project string
	switch m := msg.(type) {
	case withMetadata:
		id = m.GetMetadata().GetId()
	case withID:
		id = m.GetId()
	}
	if m, ok := msg.(withProject); ok {
		project = m.GetProjectId()
	}
	if resource == "projects" {
		// A project's id is its name, and its own project.
		project = id
	}
	if id == "" && project == "" {
		return nil
	}
	attrs := []attribute.KeyValue{telemetry.AttrResource.String(resource)}
	if id != "" {
		attrs = append(attrs, telemetry.AttrObjectID.String(id))
	}
	if project != "" {
		attrs = append(attrs, telemetry.AttrProjectID.String(project))
	}
	return attrs
}
