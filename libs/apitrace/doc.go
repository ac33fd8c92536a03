// Package apitrace instruments the ambient API's gRPC calls on both ends
// with OpenTelemetry (otelgrpc stats handlers): every unary call is a
// CLIENT span in the caller, a child of the caller's ctx (a consumer's
// handler span, an ambientctl command), and a SERVER span in the API
// joined to it through the W3C traceparent in the call's metadata.
//
// Each such span is tagged with the object the call names (AttrObjectID,
// AttrProjectID and AttrResource of package telemetry): from the request's
// id (Get, Update, Delete, UpdateStatus) or project_id, and from the
// answer's metadata.id (Create). A tag search ambient.object_id=<id> in the
// trace store therefore finds every read and write of an object.
//
// Watch streams are not traced: a watch lives for hours, so its span would
// never end while the watch is healthy, and its events belong to no
// trace. The informer counts watch reconnects and relists as metrics
// instead.
package apitrace
