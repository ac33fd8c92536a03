// Package events defines how ResourceEvents travel over NATS: the subject
// layout, reversible token escaping, the protobuf codec with its headers
// (Nats-Msg-Id, Content-Type, W3C traceparent), versions used for ordering and
// deduplication, and typed accessors over the Object oneof.
//
// Subjects have the form <prefix>.<resource>.<project>.<id>; <project> is the
// escaped project id or "_" when the object has none. Every token is escaped
// with EscapeToken, so no '.', '*', '>' or white space from an id can change
// the subject's shape, and the same escaping makes KV keys safe.
//
// Length: a token whose escaped form is over MaxTokenLen (128) bytes is
// written as a digest token instead, "_L" and 32 lower-case hex digits of
// the SHA-256 of the id (SubjectToken): the API takes project ids of any
// length, and a subject longer than nats-server's max_control_line closes
// the publisher's connection. EscapeToken never writes "_L", so the two
// forms never meet; a digest token is deterministic (ordering, fencing and
// partitioning by subject still work) but not reversible: ParseSubject
// flags it, and the id is read from the event. Publishers refuse any
// subject over MaxSubjectLen rather than send it.
//
// Size: NATS refuses a message over the server's max_payload (1 MiB by
// default), so an event whose objects are larger could never be published
// and would block every later change of its object (issue 14). NewMsgLimit
// fits every event under the limit by leaving out, in order and only as
// much as needed, old_object, the largest fields of a deleted object, or the
// object itself (a reference event). HeaderOmitted says what is missing;
// Decode returns a reference event together with ErrObjectTooLarge, so a
// consumer that does not look for it never acts on an empty object.
package events

import eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"

// Names shared by every service. The informer publishes under SubjectPrefix
// into StreamName; a shadow (canary) informer uses another prefix and stream.
const (
	StreamName    = "AMBIENT_EVENTS"
	SubjectPrefix = "ambient.events"
	DLQPrefix     = "ambient.dlq"

	ShadowStreamName    = "AMBIENT_EVENTS_SHADOW"
	ShadowSubjectPrefix = "ambient.shadow.events"
)

// Header names and values set on every event message.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderContentType = "Content-Type"
	ContentTypeProto  = "application/x-protobuf; proto=ambient.events.v1.ResourceEvent"
)

// Resources lists every resource the informer publishes, in a stable order.
var Resources = []eventsv1.Resource{
	eventsv1.Resource_RESOURCE_SESSIONS,
	eventsv1.Resource_RESOURCE_PROJECTS,
	eventsv1.Resource_RESOURCE_PROJECT_SETTINGS,
}
